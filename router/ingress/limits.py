"""What one connection of the webhook port may hold, and for how long it waits for its client.

:mod:`router.ingress.http1` says how each limit is enforced; the numbers live here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: Requests read ahead of their answers on one connection before parsing pauses.
MAX_PIPELINED = 16
#: Header fields one request may have (431 beyond; Apache's LimitRequestFields is 100 too).
#: A field costs a few hundred bytes as Python objects, so 16 KiB of tiny ones would
#: otherwise hold many times their size, and as much again per request queued.
MAX_HEADER_FIELDS = 100
#: Seconds a refused client gets to stop sending before its connection is closed, and a
#: closing connection to take the answers still buffered for it.
LINGER = 5.0


class Owed(enum.Enum):
    """What a connection waits for from its client, by a deadline."""

    NOTHING = enum.auto()  # a request is being answered
    HEAD = enum.auto()  # the rest of a request's line and headers
    BODY = enum.auto()  # the rest of a body
    NEXT_REQUEST = enum.auto()  # idle, kept alive
    SILENCE = enum.auto()  # refused: its end of the connection, once it stops sending


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits and timers of every connection (seconds and bytes)."""

    max_body_bytes: int
    head_timeout: float
    body_timeout: float
    keepalive_timeout: float
    max_head_bytes: int = 16 * 1024

    def seconds_for(self, owed: Owed) -> float:
        """The seconds a client gets to send what it owes."""
        match owed:
            case Owed.HEAD:
                return self.head_timeout
            case Owed.BODY:
                return self.body_timeout
            case Owed.NEXT_REQUEST:
                return self.keepalive_timeout
            case _:  # SILENCE (NOTHING has no deadline)
                return LINGER

    @property
    def shortest_timeout(self) -> float:
        return min(self.head_timeout, self.body_timeout, self.keepalive_timeout)


__all__ = ["LINGER", "MAX_HEADER_FIELDS", "MAX_PIPELINED", "Limits", "Owed"]
