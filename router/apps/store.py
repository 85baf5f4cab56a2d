"""Where paused applications are kept: a table in the claims database (``ROUTER_DATABASE_URL``),
so that a pause outlives restarts of every router and worker.

A backend reads and writes one row per application that was ever paused, atomically:
:meth:`AppStateStore.change` reads the row, lets :func:`router.apps.model.decide` say what it
becomes, and writes that, under the database's write lock. ``router.apps.open`` picks the
backend from the URL, as the claims do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from router.apps.model import AppState
from router.errors import Unavailable


class AppStoreError(Unavailable):
    """Raised when the database of the applications' state cannot be reached or used."""


@dataclass(frozen=True, slots=True)
class Change:
    """What a pause or a resume found, and what it left."""

    before: AppState
    after: AppState

    @property
    def changed(self) -> bool:
        return self.before != self.after


class AppStateStore(Protocol):
    """Persistence of the applications' paused state."""

    async def open(self) -> None:
        """Connect and create the table if it is missing."""

    async def close(self) -> None:
        """Release connections."""

    async def get(self, app: str) -> AppState:
        """The state of ``app`` (running, with no time, when it was never paused)."""

    async def list(self) -> list[AppState]:
        """The state of every application ever paused, by name."""

    async def change(self, app: str, *, paused: bool, by: str, reason: str, at: datetime) -> Change:
        """Pause (``paused``) or resume ``app`` atomically; a no-op when it already is so."""


__all__ = ["AppStateStore", "AppStoreError", "Change"]
