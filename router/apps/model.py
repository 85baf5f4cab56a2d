"""What the router knows of an application, and what a pause or a resume changes. Pure.

An application is paused by hand until it is resumed: that state is the router's to keep
(:mod:`router.apps.store`), so that it outlives restarts of the router and of the workers. Its
circuit breaker is the workers' own: the router only reads it from the broker (the probe-lock
queue exists while the breaker is open), as it reads the depth of the application's queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from router.claims.model import validate_app
from router.errors import InvalidInput
from router.parked.views import iso

#: The longest reason a pause takes (it is shown in tables and pages, and logged).
MAX_REASON_LENGTH = 500


class Breaker(StrEnum):
    """An application's circuit breaker as the broker shows it."""

    OPEN = "open"
    CLOSED = "closed"
    #: The broker could not be asked.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class AppState:
    """Whether ``app`` is paused; ``since``, ``by`` and ``reason`` are those of its last pause
    or resume (an application never paused has none)."""

    app: str
    paused: bool = False
    since: datetime | None = None
    by: str = ""
    reason: str = ""

    def paused_seconds(self, now: datetime) -> float:
        """How long it has been paused at ``now`` (0 while it runs)."""
        if not self.paused or self.since is None:
            return 0.0
        return max(0.0, (now - self.since).total_seconds())

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "paused": self.paused,
            "since": iso(self.since),
            "by": self.by,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class QueueLook:
    """An application queue as a passive declare shows it: messages ready, and consumers."""

    messages: int
    consumers: int


@dataclass(frozen=True, slots=True)
class AppStatus:
    """An application's state, with its breaker and queue as the broker showed them (``queue``
    None: no such queue, or the broker could not be asked)."""

    state: AppState
    breaker: Breaker = Breaker.UNKNOWN
    queue: QueueLook | None = None

    @property
    def app(self) -> str:
        return self.state.app

    def to_json(self) -> dict[str, Any]:
        queue = self.queue
        return {
            **self.state.to_json(),
            "breaker": self.breaker.value,
            "queue": None
            if queue is None
            else {"messages": queue.messages, "consumers": queue.consumers},
        }


def decide(before: AppState, *, paused: bool, by: str, reason: str, at: datetime) -> AppState:
    """The state after pausing (``paused``) or resuming ``before``'s application: ``before``
    itself when it already is so (a pause keeps its first time, who and why)."""
    if before.paused == paused:
        return before
    return AppState(before.app, paused, at, by, reason if paused else "")


def check_app(name: str) -> str:
    """An application name as claims take it (:class:`InvalidInput` otherwise)."""
    return validate_app(name)


def check_reason(reason: object) -> str:
    """Why an application is paused: text of at most :data:`MAX_REASON_LENGTH` characters,
    its ends stripped (:class:`InvalidInput` otherwise)."""
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise InvalidInput("must be text", field="reason")
    text = " ".join(reason.split())
    if len(text) > MAX_REASON_LENGTH:
        raise InvalidInput(f"is longer than {MAX_REASON_LENGTH} characters", field="reason")
    return text


__all__ = [
    "MAX_REASON_LENGTH",
    "AppState",
    "AppStatus",
    "Breaker",
    "QueueLook",
    "check_app",
    "check_reason",
    "decide",
]
