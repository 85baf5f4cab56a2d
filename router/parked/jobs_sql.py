"""The SQL of replay and purge jobs and of the audit log, for both backends. Pure.

Every statement is built with a :class:`~router.parked.sql.Statement`, so it reads the same
in SQLite and PostgreSQL; the backends run them, in one transaction where a method's
docstring in :class:`~router.parked.store.ParkedStore` says so.

Leases: a runner takes a job with one ``UPDATE ... WHERE <runnable> ... RETURNING``, so two
runners never get the same job (SQLite holds the write lock for the statement; PostgreSQL
locks the row it picks, skipping rows another runner is taking). Times of leases are the
runner's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from router.parked.jobs import (
    AuditAction,
    AuditRecord,
    Job,
    JobKind,
    JobRequest,
    JobState,
)
from router.parked.model import State
from router.parked.query import from_micros, query_from_json, query_to_json
from router.parked.schema import audit_table, jobs_table
from router.parked.sql import COLUMNS, Read, Statement, where

#: What a job's row is read as, in this order (see :func:`job_of`).
JOB_COLUMNS = (
    "id, kind, query, entry_limit, rate, dry_run, requested_by, created_at, state, matched, "
    "done, failed, max_id, last_id, lease_owner, lease_until, last_error, updated_at, "
    "started_at, finished_at, cancelled_by"
)
AUDIT_COLUMNS = "id, at, who, action, job_id, filter_json, counts_json"
_QUEUED = JobState.QUEUED.value
_RUNNING = JobState.RUNNING.value


def max_id_read(table: str) -> Read:
    """The highest entry id (0 in an empty store)."""
    return Read(f"SELECT coalesce(max(id), 0) FROM {table}", [])


def matched_read(table: str, request: JobRequest, max_id: int, *, numbered: bool) -> Read:
    """How many entries a new job of ``request`` covers, up to entry ``max_id``."""
    statement = Statement(numbered)
    text = (
        f"SELECT count(*) FROM {table} {where(request.query, statement)} "
        f"{'AND' if statement.params else 'WHERE'} id <= {statement.bind(max_id)}"
    )
    return Read(text, statement.params)


def insert_job(
    table: str, request: JobRequest, counts: tuple[int, int], now: datetime, *, numbered: bool
) -> Read:
    """A new queued job of ``request`` covering ``counts`` = (matched, max id)."""
    matched, max_id = counts
    s = Statement(numbered)
    values = [
        s.bind(request.kind.value),
        s.bind(orjson.dumps(query_to_json(request.query)).decode()),
        s.bind(request.limit),
        s.bind(request.rate),
        s.bind(request.dry_run),
        s.bind(request.requested_by),
        s.bind_time(now),
        s.bind(_QUEUED),
        s.bind(matched),
        "0",
        "0",
        s.bind(max_id),
        "0",
        s.bind_time(now),
    ]
    text = (
        f"INSERT INTO {jobs_table(table)} (kind, query, entry_limit, rate, dry_run, "
        "requested_by, created_at, state, matched, done, failed, max_id, last_id, updated_at) "
        f"VALUES ({', '.join(values)}) RETURNING {JOB_COLUMNS}"
    )
    return Read(text, s.params)


def job_read(table: str, job_id: int, *, numbered: bool) -> Read:
    s = Statement(numbered)
    return Read(
        f"SELECT {JOB_COLUMNS} FROM {jobs_table(table)} WHERE id = {s.bind(job_id)}", s.params
    )


def jobs_read(
    table: str, state: JobState | None, limit: int, before: int | None, *, numbered: bool
) -> Read:
    """Up to ``limit`` jobs newest first (of ``state``; with ids below ``before``)."""
    where_state = None if state is None else ("state", state.value)
    return _newest(jobs_table(table), JOB_COLUMNS, where_state, (limit, before), numbered)


def cancel_write(table: str, job_id: int, by: str, now: datetime, *, numbered: bool) -> Read:
    """Cancel the job if it is queued or running: a running one stops at its next batch."""
    s = Statement(numbered)
    text = (
        f"UPDATE {jobs_table(table)} SET state = {s.bind(JobState.CANCELLED.value)}, "
        f"cancelled_by = {s.bind(by)}, updated_at = {s.bind_time(now)}, "
        f"finished_at = {s.bind_time(now)} "
        f"WHERE id = {s.bind(job_id)} AND {s.one_of('state', (_QUEUED, _RUNNING))} "
        f"RETURNING {JOB_COLUMNS}"
    )
    return Read(text, s.params)


def claim_write(
    table: str,
    owner: str,
    times: tuple[datetime, datetime],
    job_id: int | None,
    *,
    numbered: bool,
) -> Read:
    """Take the lease of the oldest runnable job (or of ``job_id`` when it is runnable):
    ``times`` = (now, the lease's end)."""
    now, until = times
    s = Statement(numbered)

    def runnable() -> str:  # written twice: SQLite's ``?`` are bound in order, once each
        return (
            f"(state = {s.bind(_QUEUED)} OR (state = {s.bind(_RUNNING)} "
            f"AND (lease_until IS NULL OR lease_until <= {s.bind_time(now)})))"
        )

    jobs = jobs_table(table)
    head = (
        f"UPDATE {jobs} SET state = {s.bind(_RUNNING)}, lease_owner = {s.bind(owner)}, "
        f"lease_until = {s.bind_time(until)}, "
        f"started_at = coalesce(started_at, {s.bind_time(now)}), updated_at = {s.bind_time(now)} "
    )
    lock = "FOR UPDATE SKIP LOCKED" if numbered else ""
    pick = f"SELECT id FROM {jobs} WHERE {runnable()}"
    if job_id is not None:  # bound after the condition before it, as written
        pick += f" AND id = {s.bind(job_id)}"
    pick += f" ORDER BY id LIMIT 1 {lock}"
    text = f"{head}WHERE id = ({pick}) AND {runnable()} RETURNING {JOB_COLUMNS}"
    return Read(text, s.params)


def progress_write(
    table: str,
    job_id: int,
    owner: str,
    change: tuple[int, int, int],
    times: tuple[datetime, datetime],
    *,
    numbered: bool,
) -> Read:
    """Count ``change`` = (more done, more failed, last id) and renew the lease to
    ``times`` = (now, the lease's end). The counts always go in (the entries were handled);
    the last id and the lease only while ``owner`` holds the lease."""
    more_done, more_failed, last_id = change
    now, until = times
    s = Statement(numbered)
    text = (
        f"UPDATE {jobs_table(table)} SET done = done + {s.bind(more_done)}, "
        f"failed = failed + {s.bind(more_failed)}, "
        f"last_id = CASE WHEN lease_owner = {s.bind(owner)} THEN {s.bind(last_id)} "
        "ELSE last_id END, "
        f"lease_until = CASE WHEN lease_owner = {s.bind(owner)} THEN {s.bind_time(until)} "
        "ELSE lease_until END, "
        f"updated_at = {s.bind_time(now)} WHERE id = {s.bind(job_id)} RETURNING {JOB_COLUMNS}"
    )
    return Read(text, s.params)


def renew_write(
    table: str, job_id: int, owner: str, times: tuple[datetime, datetime], *, numbered: bool
) -> Read:
    """Extend ``owner``'s lease to ``times`` = (now, the lease's end); the job as it is."""
    now, until = times
    s = Statement(numbered)
    text = (
        f"UPDATE {jobs_table(table)} SET lease_until = CASE WHEN lease_owner = {s.bind(owner)} "
        f"AND state = {s.bind(_RUNNING)} THEN {s.bind_time(until)} ELSE lease_until END, "
        f"updated_at = {s.bind_time(now)} WHERE id = {s.bind(job_id)} RETURNING {JOB_COLUMNS}"
    )
    return Read(text, s.params)


def release_write(
    table: str, job_id: int, owner: str, error: str | None, now: datetime, *, numbered: bool
) -> Read:
    """Give the lease back (the job stays running, for any runner to resume), saying why."""
    s = Statement(numbered)
    text = (
        f"UPDATE {jobs_table(table)} SET lease_owner = NULL, lease_until = NULL, "
        f"last_error = coalesce({s.bind(error)}, last_error), updated_at = {s.bind_time(now)} "
        f"WHERE id = {s.bind(job_id)} AND lease_owner = {s.bind(owner)} "
        f"AND state = {s.bind(_RUNNING)} RETURNING {JOB_COLUMNS}"
    )
    return Read(text, s.params)


def finish_write(
    table: str,
    job_id: int,
    owner: str,
    end: tuple[JobState, str | None],
    now: datetime,
    *,
    numbered: bool,
) -> Read:
    """End a job ``owner`` runs (or ran until it was cancelled): ``end`` = (state, error)."""
    state, error = end
    s = Statement(numbered)
    text = (
        f"UPDATE {jobs_table(table)} SET state = {s.bind(state.value)}, "
        f"lease_owner = NULL, lease_until = NULL, finished_at = {s.bind_time(now)}, "
        f"updated_at = {s.bind_time(now)}, last_error = coalesce({s.bind(error)}, last_error) "
        f"WHERE id = {s.bind(job_id)} AND lease_owner = {s.bind(owner)} "
        f"AND {s.one_of('state', (_RUNNING, JobState.CANCELLED.value))} "
        f"RETURNING {JOB_COLUMNS}"
    )
    return Read(text, s.params)


def batch_read(table: str, job: Job, after: int, size: int, *, numbered: bool) -> Read:
    """The next ``size`` parked entries of ``job`` after entry ``after``, in id order."""
    s = Statement(numbered)
    text = (
        f"SELECT {COLUMNS} FROM {table} {where(job.query, s)} "
        f"{'AND' if s.params else 'WHERE'} id > {s.bind(after)} AND id <= {s.bind(job.max_id)} "
        f"AND state = {s.bind(State.PARKED.value)} ORDER BY id LIMIT {s.bind(size)}"
    )
    return Read(text, s.params)


def audit_write(table: str, record: AuditRecord, *, numbered: bool) -> Read:
    s = Statement(numbered)
    values = ", ".join(
        (
            s.bind_time(record.at),
            s.bind(record.who),
            s.bind(record.action.value),
            s.bind(record.job_id),
            s.bind(orjson.dumps(dict(record.filter), default=str).decode()),
            s.bind(orjson.dumps(dict(record.counts), default=str).decode()),
        )
    )
    text = (
        f"INSERT INTO {audit_table(table)} (at, who, action, job_id, filter_json, counts_json) "
        f"VALUES ({values}) RETURNING {AUDIT_COLUMNS}"
    )
    return Read(text, s.params)


def audit_read(
    table: str, job_id: int | None, limit: int, before: int | None, *, numbered: bool
) -> Read:
    """Up to ``limit`` audit records newest first (of ``job_id``; with ids below ``before``)."""
    of_job = None if job_id is None else ("job_id", job_id)
    return _newest(audit_table(table), AUDIT_COLUMNS, of_job, (limit, before), numbered)


def _newest(
    table: str,
    columns: str,
    equal: tuple[str, Any] | None,
    page: tuple[int, int | None],
    numbered: bool,
) -> Read:
    """Up to ``limit`` rows of ``table`` newest first (id below ``before``; the column of
    ``equal`` at its value): ``page`` = (limit, before)."""
    limit, before = page
    s = Statement(numbered)
    conditions = []
    if equal is not None:
        conditions.append(f"{equal[0]} = {s.bind(equal[1])}")
    if before is not None:
        conditions.append(f"id < {s.bind(before)}")
    filtered = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    text = f"SELECT {columns} FROM {table} {filtered} ORDER BY id DESC LIMIT {s.bind(limit)}"
    return Read(text, s.params)


def job_of(row: Sequence[Any], *, native_times: bool) -> Job:
    """The job a row of :data:`JOB_COLUMNS` holds."""
    (job_id, kind, query, limit, rate, dry_run, requested_by, created_at, state, matched,
     done, failed, max_id, last_id, lease_owner, lease_until, last_error, updated_at,
     started_at, finished_at, cancelled_by) = row  # fmt: skip
    time = _reader(native_times)
    return Job(
        id=int(job_id),
        kind=JobKind(kind),
        query=query_from_json(orjson.loads(query)),
        limit=None if limit is None else int(limit),
        rate=None if rate is None else float(rate),
        dry_run=bool(dry_run),
        requested_by=requested_by,
        created_at=_required(time(created_at)),
        state=JobState(state),
        matched=int(matched),
        done=int(done),
        failed=int(failed),
        max_id=int(max_id),
        last_id=int(last_id),
        lease_owner=lease_owner,
        lease_until=time(lease_until),
        last_error=last_error,
        updated_at=_required(time(updated_at)),
        started_at=time(started_at),
        finished_at=time(finished_at),
        cancelled_by=cancelled_by,
    )


def audit_of_row(row: Sequence[Any], *, native_times: bool) -> AuditRecord:
    record_id, at, who, action, job_id, filter_json, counts_json = row
    return AuditRecord(
        id=int(record_id),
        at=_required(_reader(native_times)(at)),
        who=who,
        action=AuditAction(action),
        job_id=None if job_id is None else int(job_id),
        filter=orjson.loads(filter_json),
        counts=orjson.loads(counts_json),
    )


def _reader(native: bool) -> Any:
    if native:
        return lambda value: None if value is None else value.astimezone(UTC)
    return lambda value: None if value is None else from_micros(int(value))


def _required(stamp: datetime | None) -> datetime:
    assert stamp is not None  # NOT NULL columns
    return stamp


__all__ = [
    "AUDIT_COLUMNS",
    "JOB_COLUMNS",
    "audit_of_row",
    "audit_read",
    "audit_write",
    "batch_read",
    "cancel_write",
    "claim_write",
    "finish_write",
    "insert_job",
    "job_of",
    "job_read",
    "jobs_read",
    "matched_read",
    "max_id_read",
    "progress_write",
    "release_write",
    "renew_write",
]
