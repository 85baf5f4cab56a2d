"""Remembering which message ids a worker has handled, so a duplicate is skipped.

Attentive retries a delivery it saw fail, with the same body, so the same message id can
arrive twice; so can a redelivery after a worker died between handling and acking. The
store remembers handled ids for a window. Memory is per process; Redis or PostgreSQL share
it between replicas (``consumers.runtime.shared_stores``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol


class IdempotencyStore(Protocol):
    """Which (application, message id) pairs were handled within the window."""

    async def open(self) -> None:
        """Connect (and create what is missing)."""

    async def close(self) -> None:
        """Release connections."""

    async def seen(self, app: str, message_id: str) -> bool:
        """Whether this message id was handled by ``app`` within the window."""

    async def remember(self, app: str, message_id: str) -> None:
        """Record that ``app`` handled this message id."""


class MemoryStore:
    """An in-process store: ids expire after ``window`` seconds; at most ``max_entries``."""

    def __init__(self, window: float = 24 * 3600, max_entries: int = 1_000_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._handled: OrderedDict[tuple[str, str], float] = OrderedDict()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def seen(self, app: str, message_id: str) -> bool:
        self._expire()
        return (app, message_id) in self._handled

    async def remember(self, app: str, message_id: str) -> None:
        key = (app, message_id)
        self._handled.pop(key, None)
        self._handled[key] = time.monotonic() + self.window
        while len(self._handled) > self.max_entries:
            self._handled.popitem(last=False)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._handled:
            key, expires = next(iter(self._handled.items()))
            if expires > now:
                break
            del self._handled[key]


__all__ = ["IdempotencyStore", "MemoryStore"]
