"""Control messages: what ops and a worker's circuit breaker tell every replica of an
application, on :attr:`~router.contract.names.Names.control_exchange` keyed by the
application's name.

    pause           ops paused the application: stop taking deliveries (until resume)
    resume          ops resumed it: take deliveries again (at its rate limit)
    breaker-open    a replica's breaker opened: every replica stops taking deliveries; the
                    replica holding the probe lock probes
    breaker-closed  a probe succeeded: every replica takes deliveries again

A message is JSON (``{"kind", "app", "by", "reason", "at"}``); a control message that cannot
be read is ignored by a worker (it never stops one). Pause outlives restarts because the
router keeps it (``GET /admin/apps/{app}``); a message only tells running replicas at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import orjson

#: The AMQP content type of a control message.
CONTENT_TYPE = "application/json"


class ControlKind(StrEnum):
    """What a control message says."""

    PAUSE = "pause"
    RESUME = "resume"
    BREAKER_OPEN = "breaker-open"
    BREAKER_CLOSED = "breaker-closed"


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """One control message: what, for which application, who said it, why and when."""

    kind: ControlKind
    app: str
    by: str = ""
    reason: str = ""
    at: datetime | None = None

    def to_bytes(self) -> bytes:
        at = self.at or datetime.now(UTC)
        return orjson.dumps(
            {
                "kind": self.kind.value,
                "app": self.app,
                "by": self.by,
                "reason": self.reason,
                "at": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            }
        )

    @classmethod
    def from_bytes(cls, body: bytes) -> ControlMessage | None:
        """The message in ``body``; None when it is not one (ignored, never fatal)."""
        try:
            data = orjson.loads(body)
            at = datetime.fromisoformat(str(data["at"]).replace("Z", "+00:00"))
            return cls(
                ControlKind(data["kind"]),
                str(data["app"]),
                str(data.get("by") or ""),
                str(data.get("reason") or ""),
                at,
            )
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
            return None


__all__ = ["CONTENT_TYPE", "ControlKind", "ControlMessage"]
