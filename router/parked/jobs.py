"""Replay and purge as jobs recorded in the parked-event store, and the audit log. Pure.

A :class:`JobRequest` is what ops ask for (a kind, the :class:`~router.parked.query.Query` of
the entries, a limit, a rate, a dry run, who asked), checked when it is made; the store turns
it into a :class:`Job`: it counts the entries the query matches (``matched``) and records the
highest entry id there was (``max_id``): entries parked after the job was created are not its
business. A runner takes the job's lease, handles its entries in ascending id order and
records its progress (``done``, ``failed``, ``last_id``: every entry up to it is handled), so
that another runner resumes where it stopped when the lease expires.

States: ``queued`` until a runner takes it, ``running`` while one holds the lease (or held
it and died: the lease expiry says which), then ``done``, ``cancelled`` or ``failed``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from router.errors import InvalidInput
from router.parked.model import Place, State
from router.parked.query import Query, query_to_json

#: The places whose entries a replay can send somewhere: invalid ones have no destination.
REPLAYABLE = (Place.DLQ, Place.UNROUTED)
#: The longest a ``requested_by`` or ``cancelled_by`` name may be.
MAX_NAME_LENGTH = 200


class JobKind(StrEnum):
    """What a job does: publish parked entries again, mark them purged, or publish a window
    of the archive to one application (:mod:`router.history.backfill`)."""

    REPLAY = "replay"
    PURGE = "purge"
    BACKFILL = "backfill"

    @property
    def done_word(self) -> str:
        """What a done one of its entries is, in a word: replayed, purged, sent."""
        return _DONE_WORDS[self]

    @property
    def marks_entries(self) -> bool:
        """Whether its progress marks parked entries (a backfill's are archive offsets)."""
        return self is not JobKind.BACKFILL


_DONE_WORDS = {JobKind.REPLAY: "replayed", JobKind.PURGE: "purged", JobKind.BACKFILL: "sent"}


class JobState(StrEnum):
    """Where a job stands (see the module's docstring)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({JobState.DONE, JobState.CANCELLED, JobState.FAILED})


class AuditAction(StrEnum):
    """What an audit record is about."""

    REPLAY = "replay"
    PURGE = "purge"
    BACKFILL = "backfill"
    CANCEL = "cancel"
    REVEAL = "reveal"
    #: An application paused, or resumed, by hand (:mod:`router.apps.service`).
    PAUSE = "pause"
    RESUME = "resume"


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A replay or purge ops asked for; :meth:`build` checks it."""

    kind: JobKind
    query: Query
    requested_by: str
    #: At most this many entries (None: every match).
    limit: int | None = None
    #: At most this many publishes a second (None: as fast as confirms come).
    rate: float | None = None
    #: Only count the entries; change nothing.
    dry_run: bool = False
    #: A backfill's (matched, end offset), counted in the archive before it is made.
    counted: tuple[int, int] | None = None

    @classmethod
    def build(
        cls,
        kind: JobKind | str,
        query: Query,
        requested_by: str,
        *,
        limit: int | None = None,
        rate: float | None = None,
        dry_run: bool = False,
        counted: tuple[int, int] | None = None,
    ) -> JobRequest:
        """A checked request; :class:`InvalidInput` naming the field that is wrong."""
        try:
            kind = JobKind(kind)
        except ValueError:
            raise InvalidInput(f"must be replay or purge, not {kind!r}", field="kind") from None
        if not isinstance(query, Query):
            raise InvalidInput("must be a parked-entry query", field="query")
        if kind is JobKind.BACKFILL:
            _check_backfill(query, counted)
        elif query.state not in (State.PARKED, None):
            raise InvalidInput("a job handles parked entries only", field="state")
        if kind is JobKind.REPLAY and query.place not in REPLAYABLE:
            raise InvalidInput(
                "must be dlq or unrouted for a replay: invalid events cannot be replayed, "
                "only purged",
                field="place",
            )
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise InvalidInput(f"must be a whole number of 1 or more, not {limit!r}", field="limit")
        if rate is not None and (
            isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or not math.isfinite(rate)
            or rate <= 0
        ):
            raise InvalidInput(f"must be a positive number per second, not {rate!r}", field="rate")
        if not isinstance(dry_run, bool):
            raise InvalidInput(f"must be true or false, not {dry_run!r}", field="dry_run")
        return cls(
            kind,
            query if kind is JobKind.BACKFILL else _parked_only(query),
            checked_name(requested_by, "requested_by"),
            limit,
            None if rate is None else float(rate),
            dry_run,
            counted,
        )


@dataclass(frozen=True, slots=True)
class Progress:
    """What a runner handled so far: ``done`` (replayed or purged), ``failed`` (left parked),
    and the id up to which every entry of the job is one or the other."""

    done: int
    failed: int
    last_id: int

    @property
    def handled(self) -> int:
        return self.done + self.failed


@dataclass(frozen=True, slots=True)
class Job:
    """A job as the store keeps it."""

    id: int
    kind: JobKind
    query: Query
    limit: int | None
    rate: float | None
    dry_run: bool
    requested_by: str
    created_at: datetime
    state: JobState
    #: The entries it covers: those its query matched when it was created (at most ``limit``).
    matched: int
    done: int
    failed: int
    #: The highest entry id it covers; every entry of it up to ``last_id`` is handled.
    max_id: int
    last_id: int
    lease_owner: str | None
    lease_until: datetime | None
    last_error: str | None
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancelled_by: str | None

    @property
    def progress(self) -> Progress:
        return Progress(self.done, self.failed, self.last_id)

    @property
    def handled(self) -> int:
        return self.done + self.failed

    @property
    def remaining(self) -> int:
        """How many of its entries are still to be handled (0 once it finished)."""
        return 0 if self.state.finished else max(self.matched - self.handled, 0)

    @property
    def fraction(self) -> float:
        """How far it got, from 0 to 1 (1 when it covers nothing)."""
        if self.matched == 0:
            return 1.0
        return min(self.handled / self.matched, 1.0)

    def runnable(self, now: datetime) -> bool:
        """Whether a runner may take it now: queued, or running under an expired lease."""
        if self.state is JobState.QUEUED:
            return True
        return self.state is JobState.RUNNING and (
            self.lease_until is None or self.lease_until <= now
        )

    def per_second(self, now: datetime) -> float | None:
        """Entries handled a second since it started (None before it started or while no
        time has passed)."""
        if self.started_at is None:
            return None
        seconds = ((self.finished_at or now) - self.started_at).total_seconds()
        return self.handled / seconds if seconds > 0 else None

    def eta(self, now: datetime) -> timedelta | None:
        """How long the rest should take at its rate so far (None when unknown; zero once
        it finished)."""
        if self.state.finished:
            return timedelta(0)
        rate = self.per_second(now)
        if not rate:
            return None
        return timedelta(seconds=self.remaining / rate)

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        """The job as a JSON object (times in ISO 8601; ``rate_per_second`` and
        ``eta_seconds`` as of ``now`` when given)."""
        data: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind.value,
            "state": self.state.value,
            "query": query_to_json(self.query),
            "limit": self.limit,
            "rate": self.rate,
            "dry_run": self.dry_run,
            "requested_by": self.requested_by,
            "matched": self.matched,
            "done": self.done,
            "failed": self.failed,
            "remaining": self.remaining,
            "max_id": self.max_id,
            "last_id": self.last_id,
            "lease_owner": self.lease_owner,
            "lease_until": _iso(self.lease_until),
            "last_error": self.last_error,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "cancelled_by": self.cancelled_by,
        }
        if now is not None:
            eta = self.eta(now)
            data["rate_per_second"] = self.per_second(now)
            data["eta_seconds"] = None if eta is None else eta.total_seconds()
        return data


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One line of the audit log: who did what, when, to which entries, with what counts."""

    at: datetime
    who: str
    action: AuditAction
    job_id: int | None = None
    #: The query (as :func:`query_to_json` writes it) or what else names the entries.
    filter: Mapping[str, Any] = field(default_factory=dict)
    counts: Mapping[str, Any] = field(default_factory=dict)
    #: The store's id (None until stored).
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": _iso(self.at),
            "who": self.who,
            "action": self.action.value,
            "job_id": self.job_id,
            "filter": dict(self.filter),
            "counts": dict(self.counts),
        }


def audit_of(job: Job, at: datetime, *, cancel_by: str | None = None) -> AuditRecord:
    """The audit record of a job that finished (or of its cancel, by ``cancel_by``)."""
    counts: dict[str, Any] = {"matched": job.matched, "done": job.done, "failed": job.failed}
    if cancel_by is None:
        counts["dry_run"] = job.dry_run
        counts["state"] = job.state.value
    return AuditRecord(
        at=at,
        who=cancel_by or job.requested_by,
        action=AuditAction.CANCEL if cancel_by else AuditAction(job.kind.value),
        job_id=job.id,
        filter=query_to_json(job.query),
        counts=counts,
    )


def checked_name(name: str, field_name: str) -> str:
    """``name`` (who asked) when it is one line of at most :data:`MAX_NAME_LENGTH`."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("must name who asks", field=field_name)
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise InvalidInput(
            f"must be one printable line of at most {MAX_NAME_LENGTH} characters",
            field=field_name,
        )
    return name


def _check_backfill(query: Query, counted: tuple[int, int] | None) -> None:
    """A backfill's query: the archive window (``since``, ``until``), its filters (type,
    company, one message id) and the application it goes to (``app``); nothing else."""
    if query.app is None:
        raise InvalidInput("must name the application a backfill goes to", field="app")
    if query.since is None:
        raise InvalidInput("is needed: where in the archive the backfill starts", field="since")
    others = (query.place, query.error, query.reason, query.state)
    if any(other is not None for other in others) or len(query.message_ids) > 1:
        raise InvalidInput(
            "a backfill filters by time, type, company and one message id only", field="query"
        )
    if counted is None:
        raise InvalidInput("a backfill is counted in the archive first", field="counted")


def _parked_only(query: Query) -> Query:
    if query.state is State.PARKED:
        return query
    return Query(
        place=query.place,
        app=query.app,
        pattern=query.pattern,
        company=query.company,
        error=query.error,
        reason=query.reason,
        since=query.since,
        until=query.until,
        state=State.PARKED,
        message_ids=query.message_ids,
    )


def _iso(stamp: datetime | None) -> str | None:
    return None if stamp is None else stamp.isoformat()


__all__ = [
    "MAX_NAME_LENGTH",
    "REPLAYABLE",
    "AuditAction",
    "AuditRecord",
    "Job",
    "JobKind",
    "JobRequest",
    "JobState",
    "Progress",
    "audit_of",
    "checked_name",
]
