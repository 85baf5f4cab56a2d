"""Where parked events persist: the protocol both backends keep, and the store's error.

``router.parked.open.parked_store_from_url(url)`` picks the backend from a database URL:
SQLite (one machine, the default) or PostgreSQL (several routers). Every method is safe to
call from many tasks and many processes at once.

Idempotence: an entry is known by its :attr:`~router.parked.model.ParkedEvent.fingerprint`
(place, application, every property but the per-delivery counts, and the body), unique in the
store. The same message handed over twice (a keeper that died before it acked) is stored
once; the same message parked again after a replay differs in its replay count and time, so
it is a new entry, and the store links it (``previous_id``) to the latest earlier entry of
the same place, application and message id.

States: an entry is ``parked`` until a replay or a purge marks it ``replayed`` or ``purged``
(once: a later mark of a marked entry changes nothing). Retention deletes marked entries some
time after their mark and never deletes a parked one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from router.errors import InvalidInput, Unavailable
from router.parked.model import ParkedEvent, State
from router.parked.query import (
    DEFAULT_FACET_SIZE,
    DEFAULT_PAGE_SIZE,
    DEFAULT_RETENTION,
    Facets,
    Page,
    Query,
    StoreStats,
)


class ParkedStoreError(Unavailable):
    """Raised when the parked-event database cannot be reached or used, or its schema is not
    the one this router reads (older: upgrade it; newer: upgrade the router)."""


class ParkedStore(Protocol):
    """Persistence of parked events (see the module's docstring for what each call keeps)."""

    async def open(self) -> None:
        """Connect (nothing is created: :meth:`upgrade` makes and migrates the schema)."""

    async def close(self) -> None:
        """Release connections; later calls are refused."""

    async def upgrade(self) -> int:
        """Apply the schema migrations this database lacks, under a lock; the version after.

        Running it again, or from several processes at once, applies each migration once.
        """

    async def schema_version(self) -> int:
        """The version of the schema in the database (0: none yet)."""

    async def add_many(self, entries: Sequence[ParkedEvent]) -> int:
        """Store ``entries`` in one transaction; how many were new (the others were known)."""

    async def page(
        self, query: Query, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page:
        """Up to ``limit`` entries of ``query``, newest first, after ``cursor`` when given."""

    async def facets(self, query: Query, size: int = DEFAULT_FACET_SIZE) -> Facets:
        """How ``query``'s entries count by type, company, error kind, reason and day."""

    async def count(self, query: Query) -> int:
        """How many entries ``query`` has."""

    async def get(self, entry_id: int) -> ParkedEvent:
        """One entry; :class:`~router.errors.NotFound` when there is none with that id."""

    async def mark(self, entry_ids: Iterable[int], state: State, by: str) -> int:
        """Mark parked entries ``replayed`` or ``purged`` by ``by`` (who asked), now; how many
        changed (entries already marked, and unknown ids, are left as they are)."""

    async def stats(self) -> StoreStats:
        """The store's size and its oldest parked entry."""

    async def delete_expired(
        self, retention: timedelta = DEFAULT_RETENTION, *, now: datetime | None = None
    ) -> int:
        """Delete entries marked more than ``retention`` before ``now``; how many."""


#: The states :meth:`ParkedStore.mark` sets.
MARKS = (State.REPLAYED, State.PURGED)


def mark_state(state: State | str, by: str) -> State:
    """``state`` when an entry can be marked so, by a non-blank ``by``; else InvalidInput."""
    if state not in MARKS:
        accepted = " or ".join(mark.value for mark in MARKS)
        raise InvalidInput(f"must be {accepted}, not {state!r}", field="state")
    if not isinstance(by, str) or not by.strip():
        raise InvalidInput("must name who marks the entries", field="by")
    return State(state)


def expiry(retention: timedelta, now: datetime | None) -> datetime:
    """The mark time before which a marked entry is deleted."""
    if not isinstance(retention, timedelta) or retention <= timedelta(0):
        raise InvalidInput(f"must be a positive duration, not {retention!r}", field="retention")
    return (now or datetime.now(UTC)) - retention


def facet_size(size: int) -> int:
    """``size`` when it is a facet size (1 or more); else InvalidInput."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidInput(f"must be a whole number of 1 or more, not {size!r}", field="size")
    return size


__all__ = ["MARKS", "ParkedStore", "ParkedStoreError", "expiry", "facet_size", "mark_state"]
