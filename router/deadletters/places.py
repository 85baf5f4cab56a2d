"""The three places events are parked: an application's DLQ, unrouted, invalid."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from router.claims.model import validate_app
from router.contract.names import Names
from router.errors import InvalidInput, NotFound


class Kind(StrEnum):
    """Which parking place."""

    DLQ = "dlq"
    UNROUTED = "unrouted"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Parked:
    """One parking place: its queue and where a replay sends events."""

    kind: Kind
    queue: str
    #: The exchange a replay publishes to (None: cannot be replayed).
    replay_exchange: str | None
    app: str | None = None

    @classmethod
    def of(cls, names: Names, kind: Kind | str, app: str | None = None) -> Parked:
        kind = Kind(kind)
        match kind:
            case Kind.DLQ:
                if app is None:
                    raise InvalidInput("is needed for a dead-letter queue", field="app")
                validate_app(app)
                return cls(
                    kind,
                    names.app_dead_letter_queue(app),
                    names.app_requeue_exchange(app),
                    app,
                )
            case Kind.UNROUTED:
                return cls(kind, names.unrouted_queue, names.events_exchange)
            case Kind.INVALID:
                return cls(kind, names.invalid_queue, None)


__all__ = ["Kind", "NotFound", "Parked"]
