"""Newest wins: whether an event of a key is applied, skipped as stale, or handled unordered.

Attentive does not deliver events in the order they happened, and retries, dead-letter
replays and parallel handlers reorder them further. A handler that keeps state per key (a
subscriber's subscription, one of their attributes) opts in with a key family; then, for each
key, the runtime remembers the newest event time it applied (:class:`Recorded`) and
:func:`decide` says what to do with the next event of that key:

* :class:`Apply`: newer than the newest applied: handle it, then record its time;
* :class:`Stale`: not newer: ack it without handling it (counted and logged, never
  dead-lettered);
* :class:`Unordered`: it cannot be ordered (no time, or a time further in the future than
  ``skew``): handle it, count it, and never record its time, or one bad clock would freeze its
  key's state for good.

On equal times an unsubscribe wins over a subscribe (an opt-out must stick): events are
ordered by ``(time, unsubscribe)``, ``False < True``. This module is pure; the stores that
keep :class:`Recorded` are in :mod:`consumers.runtime.newest_stores`.
"""

from __future__ import annotations

from dataclasses import dataclass

#: How far in the future (seconds) an event time is trusted unless told otherwise: 5 minutes.
DEFAULT_SKEW = 300.0
#: Why an event is :class:`Unordered`.
NO_TIME = "no-time"
FUTURE = "future"
NO_KEY = "no-key"
#: The event types that opt a subscriber out: they win a tie with a subscribe.
UNSUBSCRIBE_SUFFIX = ".unsubscribed"


@dataclass(frozen=True, slots=True, order=True)
class Recorded:
    """The newest event applied for a key: its time (Unix ms) and whether it unsubscribed.

    Instances order as events do: by time, then an unsubscribe after a subscribe."""

    time_ms: int
    unsubscribe: bool = False


@dataclass(frozen=True, slots=True)
class Apply:
    """Newer than anything applied for the key: handle it, then record ``event``."""

    event: Recorded


@dataclass(frozen=True, slots=True)
class Stale:
    """Not newer than ``newest``, already applied for the key: ack it unhandled."""

    event: Recorded
    newest: Recorded


@dataclass(frozen=True, slots=True)
class Unordered:
    """Cannot be ordered (``reason``: :data:`NO_TIME`, :data:`FUTURE` or :data:`NO_KEY`):
    handle it and count it, never record its time."""

    reason: str


Decision = Apply | Stale | Unordered


def decide(
    time_ms: int | None,
    unsubscribe: bool,
    newest: Recorded | None,
    *,
    now_ms: int,
    skew: float = DEFAULT_SKEW,
) -> Decision:
    """What to do with an event of a key at ``time_ms`` (``None``: it has no time), given the
    ``newest`` recorded for the key (``None``: nothing, or forgotten past the retention) and
    the clock ``now_ms``; times further than ``skew`` seconds ahead of it are not trusted."""
    if time_ms is None:
        return Unordered(NO_TIME)
    if time_ms > now_ms + skew * 1000:
        return Unordered(FUTURE)
    event = Recorded(time_ms, unsubscribe)
    if newest is None or event > newest:
        return Apply(event)
    return Stale(event, newest)


def is_unsubscribe(event_type: str) -> bool:
    """Whether ``event_type`` opts a subscriber out (``sms.unsubscribed``, ...)."""
    return event_type.endswith(UNSUBSCRIBE_SUFFIX)


__all__ = [
    "DEFAULT_SKEW",
    "FUTURE",
    "NO_KEY",
    "NO_TIME",
    "UNSUBSCRIBE_SUFFIX",
    "Apply",
    "Decision",
    "Recorded",
    "Stale",
    "Unordered",
    "decide",
    "is_unsubscribe",
]
