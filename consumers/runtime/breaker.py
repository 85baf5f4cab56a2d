"""The circuit breaker's arithmetic: a sliding window of outcomes, when it opens, how probes
back off. Pure: the clock is injected, nothing here touches a broker.

What counts (:func:`counts_as_failure`): an exception or a ``Retry`` (a :class:`RetryLater`,
or a :class:`DeadLetter` of an exhausted event) is a failure that may be the downstream's;
a handled event is a success; a rejected event, one with no handler, a duplicate skipped or a
delivery deferred says nothing about the downstream and is not counted at all.

The breaker opens when, within the last ``window`` seconds, the failures reach ``failures``
AND make up at least ``ratio`` of the counted outcomes: a handful of poison events among many
good ones never opens it, and neither does a burst of failures on a trickle of traffic below
the threshold. The window is kept in :data:`BUCKETS` slots of ``window / BUCKETS`` seconds,
so recording costs a clock read and two additions, whatever the throughput.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from consumers.runtime.outcomes import DeadLetter, Handled, Outcome, RetryLater

#: Slots the window is kept in: outcomes older than ``window`` leave it in steps of
#: ``window / BUCKETS`` seconds.
BUCKETS = 30
#: Reasons of a dead letter that are the event's own fault, not the downstream's.
_OWN_FAULT = frozenset({"rejected", "no-handler"})


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a worker's breaker opens and how it probes (``Worker(..., breaker=...)``, or the
    ``WORKER_BREAKER*`` settings, which win where set)."""

    #: On by default: without it an outage runs every event through the retry tiers into the
    #: dead-letter queue (about 36 minutes with the default tiers).
    enabled: bool = True
    #: Failures in the window before it may open. 20 is more than a prefetch of 16 failing
    #: at once on one replica, and a poison event fails at most 5 times in 36 minutes, so a
    #: few of them cannot reach it; an outage at any real rate reaches it in seconds.
    failures: int = 20
    #: Least share of failures among the counted outcomes in the window. At 0.5 an event in
    #: two must be failing: a downstream that is down fails (nearly) all; bad data fails some.
    ratio: float = 0.5
    #: Seconds of the sliding window. 30 s is long enough to see 20 failures of a slow
    #: trickle of traffic, short enough that failures of a past blip are forgotten.
    window: float = 30.0
    #: First wait after a failed probe (seconds), doubled after each failed one.
    probe_first: float = 1.0
    #: Longest wait between probes (seconds). 30 s: a recovered downstream is noticed within
    #: half a minute, and a dead one sees two requests a minute from the whole application.
    probe_max: float = 30.0

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError("the breaker's failures must be at least 1")
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError("the breaker's ratio must be between 0 and 1")
        for name in ("window", "probe_first", "probe_max"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"the breaker's {name} must be a positive number of seconds")
        if self.probe_max < self.probe_first:
            raise ValueError("the breaker's probe_max must be at least its probe_first")

    def probe_delay(self, failed_probes: int) -> float:
        """Seconds to wait after ``failed_probes`` probes failed in a row (1 s, 2 s, 4 s, …
        up to ``probe_max``); 0 before any failed."""
        if failed_probes < 1:
            return 0.0
        exponent = min(failed_probes - 1, 62)  # (2**62 s outlives any cap)
        return float(min(self.probe_first * 2**exponent, self.probe_max))


def counts_as_failure(outcome: Outcome) -> bool | None:
    """True for a failure that may be the downstream's, False for a success, None for an
    outcome the breaker does not count."""
    if isinstance(outcome, Handled):
        return False
    if isinstance(outcome, RetryLater):
        return True
    if isinstance(outcome, DeadLetter) and outcome.reason not in _OWN_FAULT:
        return True
    return None


class Breaker:
    """One replica's view of the breaker: closed, counting outcomes, until :meth:`record`
    says it opens; open until :meth:`close`. Outcomes recorded while open are not counted
    (the probes decide then), and closing forgets the window."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._width = policy.window / BUCKETS
        self._failed = [0] * BUCKETS
        self._counted = [0] * BUCKETS
        self._failures = 0
        self._total = 0
        self._slot = math.floor(clock() / self._width)
        self.is_open = False

    @property
    def failures(self) -> int:
        """Failures in the window (as of the last outcome recorded)."""
        return self._failures

    @property
    def counted(self) -> int:
        """Outcomes counted in the window (as of the last outcome recorded)."""
        return self._total

    def record(self, failed: bool) -> bool:
        """Count one outcome (``failed`` or a success); True when this one opens the breaker."""
        if self.is_open:
            return False
        slot = math.floor(self._clock() / self._width)
        if slot != self._slot:
            self._advance(slot)
        index = slot % BUCKETS
        self._counted[index] += 1
        self._total += 1
        if not failed:
            return False
        self._failed[index] += 1
        self._failures += 1
        policy = self.policy
        if self._failures >= policy.failures and self._failures >= policy.ratio * self._total:
            self.is_open = True
            return True
        return False

    def open(self) -> None:
        """Open it (another replica's breaker opened, or the probe lock exists)."""
        self.is_open = True

    def close(self) -> None:
        """Close it and forget the window: what failed before the outage ended is history."""
        self.is_open = False
        self._failed = [0] * BUCKETS
        self._counted = [0] * BUCKETS
        self._failures = self._total = 0
        self._slot = math.floor(self._clock() / self._width)

    def _advance(self, slot: int) -> None:
        """Empty the slots the window left since the last outcome, up to ``slot``."""
        if slot - self._slot >= BUCKETS or slot < self._slot:
            self._failed = [0] * BUCKETS
            self._counted = [0] * BUCKETS
            self._failures = self._total = 0
        else:
            for passed in range(self._slot + 1, slot + 1):
                index = passed % BUCKETS
                self._failures -= self._failed[index]
                self._total -= self._counted[index]
                self._failed[index] = self._counted[index] = 0
        self._slot = slot


__all__ = ["BUCKETS", "Breaker", "BreakerPolicy", "counts_as_failure"]
