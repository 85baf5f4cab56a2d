"""The newest-wins guard around a handler that opted in with a key family.

For an event whose handler has a family and whose event carries a subject key, in order:

1. take the key's turn in this process's lane (:class:`~consumers.runtime.lanes.Lanes`),
   before anything is awaited, so the key's events start in the order they arrived;
2. acquire the key's lease across replicas and read the newest event recorded for the key, in
   one round trip to the store; lease held elsewhere: :class:`Deferred` (it comes back
   through the shortest delay tier, no attempt counted);
3. :func:`~consumers.runtime.newest.decide`: stale: :class:`Skipped` ``stale``, counted and
   logged with both times, never dead-lettered;
4. run the rest of the pipeline (idempotency, the handler);
5. release the lease and leave the lane; if the event was to be applied and the handler
   returned (or it was handled before: a duplicate), the release records its time as the
   key's newest (compare-and-set) in the same round trip; a handler that raised leaves the
   newest unchanged, so its own retry is not mistaken for stale.

An event without a subject key, without a time, or with a time further ahead than the skew is
handled unordered (counted; its time never recorded). A store error raises, so the delivery
is retried like any failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from consumers.runtime.event import Event
from consumers.runtime.lanes import Lanes, Leases
from consumers.runtime.middleware import Next
from consumers.runtime.newest import (
    DEFAULT_SKEW,
    NO_KEY,
    Apply,
    Recorded,
    Stale,
    Unordered,
    decide,
    is_unsubscribe,
)
from consumers.runtime.outcomes import Deferred, Handled, Outcome, Skipped
from router.contract.names import EVENT_TIME_HEADER, SUBJECT_KEY_HEADER

log = structlog.get_logger("consumers")

#: Which family an event's handler opted in with, if it did.
FamilyOf = Callable[[Event], str | None]


def subject_key(headers: Mapping[str, Any]) -> str | None:
    """The subject key the ingress put on the event, if any."""
    key = headers.get(SUBJECT_KEY_HEADER)
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    return key if isinstance(key, str) and key else None


def event_time_ms(event: Event) -> int | None:
    """When the event happened, Unix ms: the ingress's header, else the payload's own
    ``timestamp`` (an event published before the header existed)."""
    stamp = event.headers.get(EVENT_TIME_HEADER)
    if type(stamp) is int and stamp >= 0:
        return stamp
    return _ms(event.timestamp) if event.timestamp is not None else None


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


class NewestWins:
    """The guard, as a middleware placed outside idempotency (so the lane is taken before
    the first ``await``).

    ``family_of`` names the family an event's handler opted in with; ``leases`` holds the
    keys' leases in the store that also keeps their newest events; ``lanes`` defaults to
    lanes of this guard's own; ``clock`` gives Unix seconds, to judge times ahead by ``skew``.
    """

    def __init__(
        self,
        family_of: FamilyOf,
        leases: Leases,
        registry: CollectorRegistry,
        *,
        skew: float = DEFAULT_SKEW,
        lanes: Lanes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.family_of = family_of
        self.leases = leases
        self.store = leases.store
        self.app = leases.app
        self.skew = skew
        self.lanes = lanes or Lanes()
        self.clock = clock
        self.verdicts = Counter(
            "attentive_worker_newest_verdicts",
            "Events of handlers with a newest-wins family, by verdict: applied, stale "
            "(acked unhandled), deferred (key busy on another replica), unordered-no-time, "
            "unordered-future, unordered-no-key (handled, never recorded).",
            ["app", "family", "verdict"],
            registry=registry,
        )

    async def __call__(self, event: Event, call_next: Next) -> Outcome:
        family = self.family_of(event)
        if family is None:
            return await call_next(event)
        key = subject_key(event.headers)
        if key is None:
            self._count(family, f"unordered-{NO_KEY}")
            return await call_next(event)
        async with self.lanes.turn((family, key)):
            return await self._guarded(event, family, key, call_next)

    async def _guarded(self, event: Event, family: str, key: str, call_next: Next) -> Outcome:
        lease = self.leases.of(family, key)
        taken = await lease.take()
        if taken is None:
            self._count(family, "deferred")
            return Deferred()
        applied: Recorded | None = None
        try:
            decision = decide(
                event_time_ms(event),
                is_unsubscribe(event.type),
                taken.newest,
                now_ms=round(self.clock() * 1000),
                skew=self.skew,
            )
            match decision:
                case Stale(event=stale, newest=newest):
                    self._count(family, "stale")
                    log.info(
                        "event_stale",
                        family=family,
                        subject_key=key,
                        event_time_ms=stale.time_ms,
                        newest_time_ms=newest.time_ms,
                        newest_unsubscribe=newest.unsubscribe,
                    )
                    return Skipped("stale")
                case Unordered(reason=reason):
                    self._count(family, f"unordered-{reason}")
                    log.info("event_unordered", family=family, subject_key=key, reason=reason)
                    return await call_next(event)
            outcome = await call_next(event)
            if isinstance(decision, Apply) and _applied(outcome):
                self._count(family, "applied")
                applied = decision.event
            return outcome
        finally:
            await lease.release(applied)

    def _count(self, family: str, verdict: str) -> None:
        self.verdicts.labels(self.app, family, verdict).inc()


def _applied(outcome: Outcome) -> bool:
    """Whether the event's effect is in place: handled now, or handled before (a duplicate
    the idempotency store skipped), so its time may become the key's newest."""
    return isinstance(outcome, Handled) or outcome == Skipped("duplicate")


__all__ = ["FamilyOf", "NewestWins", "event_time_ms", "subject_key"]
