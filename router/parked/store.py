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

Jobs (:mod:`router.parked.jobs`): replays and purges are rows of their own, created by ops
(:meth:`ParkedStore.create_job`), taken by a runner under a lease (:meth:`~ParkedStore.claim_job`),
moved on a batch at a time (:meth:`~ParkedStore.settle`: marks and progress in one
transaction) and ended with their audit record (:meth:`~ParkedStore.finish_job`); the audit log
also takes records of its own (a reveal).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from router.errors import Conflict, InvalidInput, NotFound, Unavailable
from router.parked.jobs import AuditRecord, Job, JobKind, JobRequest, JobState
from router.parked.model import ParkedEvent, State
from router.parked.places import PlaceCount
from router.parked.query import (
    DEFAULT_FACET_SIZE,
    DEFAULT_PAGE_SIZE,
    DEFAULT_RETENTION,
    Facets,
    Page,
    Query,
    StoreStats,
    page_size,
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

    async def places(self) -> list[PlaceCount]:
        """How many entries are parked in each (place, application, reason) that has any,
        and the oldest of them: the DLQs first by application, then unrouted, then invalid
        (see :mod:`router.parked.places`)."""

    async def delete_expired(
        self, retention: timedelta = DEFAULT_RETENTION, *, now: datetime | None = None
    ) -> int:
        """Delete entries marked more than ``retention`` before ``now``; how many."""

    # -- replay and purge jobs (see router.parked.jobs), the audit log -------------------

    async def create_job(self, request: JobRequest) -> Job:
        """A new queued job: in one transaction, the highest entry id now (the job covers
        no entry after it) and how many entries it covers (``matched``, at most its limit)."""

    async def job(self, job_id: int) -> Job:
        """One job; :class:`~router.errors.NotFound` when there is none with that id."""

    async def jobs(
        self,
        state: JobState | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        before: int | None = None,
    ) -> list[Job]:
        """Up to ``limit`` jobs, newest first (of ``state``; older than job ``before``)."""

    async def cancel_job(self, job_id: int, by: str) -> Job:
        """Cancel a queued or running job (a running one stops at its next batch) and write
        the audit record of the cancel, in one transaction. A cancelled job is given back as
        it is; :class:`~router.errors.Conflict` when it already finished, NotFound when none."""

    async def claim_job(
        self, owner: str, lease: timedelta, job_id: int | None = None
    ) -> Job | None:
        """Take a runnable job (queued, or running under an expired lease) for ``lease``:
        the oldest, or ``job_id``; None when there is none. Atomic: two runners asking at
        once never get the same job."""

    async def renew_lease(self, job_id: int, owner: str, lease: timedelta) -> Job:
        """Extend ``owner``'s lease by ``lease`` from now if it still holds it; the job as
        it is (another owner, or a state other than running, tells the runner to stop)."""

    async def settle(self, job: Job, owner: str, handled: Settled, lease: timedelta) -> Job:
        """Record a batch of ``job``: mark the entries it replayed or purged (by the job's
        requester), add the counts, move its last id and renew the lease, in one
        transaction. The counts always go in; the last id and the lease only while
        ``owner`` holds the lease. The job as it is now."""

    async def release_job(self, job_id: int, owner: str, error: str | None = None) -> Job | None:
        """Give the lease back, saying why: the job stays running, for any runner to resume
        now. None when ``owner`` did not hold it."""

    async def finish_job(
        self, job_id: int, owner: str, state: JobState, error: str | None = None
    ) -> Job | None:
        """End the job ``owner`` runs (done, failed, or cancelled when it saw the cancel) and
        write its audit record, in one transaction; None when ``owner`` did not hold it."""

    async def job_batch(self, job: Job, after: int, size: int) -> list[ParkedEvent]:
        """The next ``size`` parked entries of ``job`` with ids above ``after`` (and not
        above its highest id), in ascending id order."""

    async def add_audit(self, record: AuditRecord) -> AuditRecord:
        """Append a record to the audit log (a reveal, say); the record as stored."""

    async def audit(
        self, job_id: int | None = None, limit: int = DEFAULT_PAGE_SIZE, before: int | None = None
    ) -> list[AuditRecord]:
        """Up to ``limit`` audit records newest first (of ``job_id``; older than ``before``)."""


@dataclass(frozen=True, slots=True)
class Settled:
    """What a batch of a job came to: the entries done (to be marked; a backfill's are
    archive positions, counted only), how many failed (they stay parked), and the id up to
    which every entry of the job is handled."""

    done_ids: Sequence[int]
    failed: int
    last_id: int


def job_mark(job: Job) -> State:
    """The state a job's done entries are marked with."""
    return State.REPLAYED if job.kind is JobKind.REPLAY else State.PURGED


def list_size(limit: int) -> int:
    """``limit`` when it is a list size the store serves (1 to 1000); else InvalidInput."""
    return page_size(limit)


def job_gone(job_id: int) -> NotFound:
    return NotFound(f"no job {job_id}")


def cancelled_already(job_id: int, found: Job | None) -> Job:
    """What a cancel that changed nothing answers: the job when it was cancelled before;
    NotFound when there is none; Conflict when it finished otherwise."""
    if found is None:
        raise job_gone(job_id)
    if found.state is not JobState.CANCELLED:
        raise Conflict(f"job {job_id} is {found.state.value} already: there is nothing to cancel")
    return found


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


__all__ = [
    "MARKS",
    "ParkedStore",
    "ParkedStoreError",
    "Settled",
    "cancelled_already",
    "expiry",
    "facet_size",
    "job_gone",
    "job_mark",
    "list_size",
    "mark_state",
]
