"""Parked events in a SQLite file: the single-machine backend (the default).

Every call runs on a connection of its own in a worker thread (``asyncio.to_thread``; kept
for later calls: :mod:`router.parked.sqlite_connections`), so one store serves many tasks at
once and many processes can share the file (in WAL mode, readers never wait for the writer).
Writes start with ``BEGIN IMMEDIATE``: the write lock comes before any read, so two keepers
never link or count on the same picture; a busy timeout makes a writer wait for the lock
instead of failing. Every read is one statement (facets too), so it sees one committed state.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from router.errors import NotFound
from router.parked import jobs_sql, query, schema, sql, store
from router.parked.jobs import AuditRecord, Job, JobRequest, JobState, audit_of, checked_name
from router.parked.model import ParkedEvent, State
from router.parked.places import PlaceCount, places_of, places_read
from router.parked.sqlite_connections import Connections
from router.parked.store import ParkedStoreError, Settled
from router.sqlite_files import immediate, wal

_T = TypeVar("_T")

DEFAULT_TABLE = "parked_events"
#: How long a writer waits for another process's write lock before giving up (seconds).
DEFAULT_BUSY_TIMEOUT = 30.0
#: Ids per ``IN (...)`` of a mark (SQLite bounds the parameters of one statement).
_IDS_PER_STATEMENT = 500
_DAY = "date(parked_at / 1000000, 'unixepoch')"


class SqliteParkedStore:
    """A :class:`~router.parked.store.ParkedStore` in one SQLite file (created if missing)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = DEFAULT_TABLE,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        self.path = Path(path)
        self.table = schema.checked_table(table)
        self.busy_timeout = busy_timeout
        self._current = False
        self._connections: Connections | None = None

    def __repr__(self) -> str:
        return f"SqliteParkedStore({str(self.path)!r}, table={self.table!r})"

    async def open(self) -> None:
        """Create the file's directory if missing; the file is made by the first call."""
        try:
            await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise ParkedStoreError(
                f"cannot create the directory of parked-event database {self.path}: {_line(exc)}"
            ) from exc
        if self._connections is None:  # (opened again: the same connections)
            self._connections = Connections(self.path, self.busy_timeout)

    async def close(self) -> None:
        """Close the connections kept between calls; later calls are refused (a call under
        way closes its own when it ends)."""
        connections, self._connections = self._connections, None
        if connections is not None:
            await asyncio.to_thread(connections.close)

    async def upgrade(self) -> int:
        return await self._run(self._upgrade, current=False)

    async def schema_version(self) -> int:
        return await self._run(self._version, current=False)

    async def add_many(self, entries: Sequence[ParkedEvent]) -> int:
        rows = [(sql.insert_values(e, native_times=False), e) for e in entries]
        return await self._run(lambda conn: _add(conn, self.table, rows)) if rows else 0

    async def page(
        self, query: query.Query, limit: int = query.DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> query.Page:
        read = sql.page_read(self.table, query, limit, cursor, numbered=False)
        rows = await self._run(lambda conn: _rows(conn, read))
        return sql.page_of(rows, limit, native_times=False)

    async def facets(
        self, query: query.Query, size: int = query.DEFAULT_FACET_SIZE
    ) -> query.Facets:
        top = store.facet_size(size)
        read = sql.facets_read(self.table, query, numbered=False, day=_DAY)
        return sql.facets_of(await self._run(lambda conn: _rows(conn, read)), top)

    async def count(self, query: query.Query) -> int:
        read = sql.count_read(self.table, query, numbered=False)
        return int((await self._run(lambda conn: _rows(conn, read)))[0][0])

    async def get(self, entry_id: int) -> ParkedEvent:
        read = sql.Read(f"SELECT {sql.COLUMNS} FROM {self.table} WHERE id = ?", [entry_id])
        rows = await self._run(lambda conn: _rows(conn, read))
        if not rows:
            raise NotFound(f"no parked entry {entry_id}")
        return sql.entry(rows[0], native_times=False)

    async def mark(self, entry_ids: Iterable[int], state: State, by: str) -> int:
        change = (store.mark_state(state, by), datetime.now(UTC), by)
        writes = sql.mark_writes(
            self.table, entry_ids, change, numbered=False, per_statement=_IDS_PER_STATEMENT
        )
        return await self._run(lambda conn: _write(conn, writes))

    async def stats(self) -> query.StoreStats:
        read = sql.Read(
            f"SELECT (SELECT count(*) FROM {self.table}), count(*), min(parked_at) "
            f"FROM {self.table} WHERE state = ?",
            [State.PARKED.value],
        )
        ((entries, parked, oldest),) = await self._run(lambda conn: _rows(conn, read))
        return query.StoreStats(
            entries, parked, None if oldest is None else query.from_micros(oldest)
        )

    async def places(self) -> list[PlaceCount]:
        read = places_read(self.table, numbered=False)
        return places_of(await self._run(lambda conn: _rows(conn, read)), native_times=False)

    async def delete_expired(
        self, retention: timedelta = query.DEFAULT_RETENTION, *, now: datetime | None = None
    ) -> int:
        write = sql.expired_write(self.table, store.expiry(retention, now), numbered=False)
        return await self._run(lambda conn: _write(conn, [write]))

    async def create_job(self, request: JobRequest) -> Job:
        def create(conn: sqlite3.Connection) -> Job:
            with immediate(conn):
                if request.counted is not None:
                    matched, max_id = request.counted
                else:
                    max_id = int(_one(conn, jobs_sql.max_id_read(self.table))[0])
                    read = jobs_sql.matched_read(self.table, request, max_id, numbered=False)
                    matched = int(_one(conn, read)[0])
                if request.limit is not None:
                    matched = min(matched, request.limit)
                insert = jobs_sql.insert_job(
                    self.table, request, (matched, max_id), datetime.now(UTC), numbered=False
                )
                return _job(_one(conn, insert))

        return await self._run(create)

    async def job(self, job_id: int) -> Job:
        read = jobs_sql.job_read(self.table, job_id, numbered=False)
        rows = await self._run(lambda conn: _rows(conn, read))
        if not rows:
            raise store.job_gone(job_id)
        return _job(rows[0])

    async def jobs(
        self,
        state: JobState | None = None,
        limit: int = query.DEFAULT_PAGE_SIZE,
        before: int | None = None,
    ) -> list[Job]:
        read = jobs_sql.jobs_read(self.table, state, store.list_size(limit), before, numbered=False)
        return [_job(row) for row in await self._run(lambda conn: _rows(conn, read))]

    async def cancel_job(self, job_id: int, by: str) -> Job:
        by = checked_name(by, "by")

        def cancel(conn: sqlite3.Connection) -> Job:
            now = datetime.now(UTC)
            with immediate(conn):
                rows = _rows(
                    conn, jobs_sql.cancel_write(self.table, job_id, by, now, numbered=False)
                )
                if not rows:
                    found = _rows(conn, jobs_sql.job_read(self.table, job_id, numbered=False))
                    return store.cancelled_already(job_id, _job(found[0]) if found else None)
                job = _job(rows[0])
                record = audit_of(job, now, cancel_by=by)
                _rows(conn, jobs_sql.audit_write(self.table, record, numbered=False))
                return job

        return await self._run(cancel)

    async def claim_job(
        self, owner: str, lease: timedelta, job_id: int | None = None
    ) -> Job | None:
        now = datetime.now(UTC)
        write = jobs_sql.claim_write(self.table, owner, (now, now + lease), job_id, numbered=False)
        rows = await self._run(lambda conn: _write_rows(conn, write))
        return _job(rows[0]) if rows else None

    async def renew_lease(self, job_id: int, owner: str, lease: timedelta) -> Job:
        now = datetime.now(UTC)
        write = jobs_sql.renew_write(self.table, job_id, owner, (now, now + lease), numbered=False)
        rows = await self._run(lambda conn: _write_rows(conn, write))
        if not rows:
            raise store.job_gone(job_id)
        return _job(rows[0])

    async def settle(self, job: Job, owner: str, handled: Settled, lease: timedelta) -> Job:
        now = datetime.now(UTC)
        change = (store.job_mark(job), now, job.requested_by)
        ids = handled.done_ids if job.kind.marks_entries else ()
        marks = sql.mark_writes(
            self.table, ids, change, numbered=False, per_statement=_IDS_PER_STATEMENT
        )

        def settle(conn: sqlite3.Connection) -> Job:
            with immediate(conn):
                done = sum(conn.execute(m.text, m.params).rowcount for m in marks)
                if not job.kind.marks_entries:
                    done = len(set(handled.done_ids))
                counts = (done, handled.failed, handled.last_id)
                write = jobs_sql.progress_write(
                    self.table, job.id, owner, counts, (now, now + lease), numbered=False
                )
                rows = _rows(conn, write)
            if not rows:
                raise store.job_gone(job.id)
            return _job(rows[0])

        return await self._run(settle)

    async def release_job(self, job_id: int, owner: str, error: str | None = None) -> Job | None:
        now = datetime.now(UTC)
        write = jobs_sql.release_write(self.table, job_id, owner, error, now, numbered=False)
        rows = await self._run(lambda conn: _write_rows(conn, write))
        return _job(rows[0]) if rows else None

    async def finish_job(
        self, job_id: int, owner: str, state: JobState, error: str | None = None
    ) -> Job | None:
        now = datetime.now(UTC)
        write = jobs_sql.finish_write(
            self.table, job_id, owner, (state, error), now, numbered=False
        )

        def finish(conn: sqlite3.Connection) -> Job | None:
            with immediate(conn):
                rows = _rows(conn, write)
                if not rows:
                    return None
                job = _job(rows[0])
                _rows(conn, jobs_sql.audit_write(self.table, audit_of(job, now), numbered=False))
                return job

        return await self._run(finish)

    async def job_batch(self, job: Job, after: int, size: int) -> list[ParkedEvent]:
        read = jobs_sql.batch_read(self.table, job, after, size, numbered=False)
        rows = await self._run(lambda conn: _rows(conn, read))
        return [sql.entry(row, native_times=False) for row in rows]

    async def add_audit(self, record: AuditRecord) -> AuditRecord:
        write = jobs_sql.audit_write(self.table, record, numbered=False)
        rows = await self._run(lambda conn: _write_rows(conn, write))
        return jobs_sql.audit_of_row(rows[0], native_times=False)

    async def audit(
        self,
        job_id: int | None = None,
        limit: int = query.DEFAULT_PAGE_SIZE,
        before: int | None = None,
    ) -> list[AuditRecord]:
        read = jobs_sql.audit_read(
            self.table, job_id, store.list_size(limit), before, numbered=False
        )
        rows = await self._run(lambda conn: _rows(conn, read))
        return [jobs_sql.audit_of_row(row, native_times=False) for row in rows]

    def _upgrade(self, conn: sqlite3.Connection) -> int:
        wal(conn, time.monotonic() + self.busy_timeout)
        with immediate(conn):
            conn.execute(schema.version_table_ddl(self.table, schema.SQLITE))
            found = _read_version(conn, self.table)
            for statement in schema.upgrade_statements(self.table, schema.SQLITE, found):
                conn.execute(statement)
        self._current = True
        return schema.LATEST_VERSION

    def _version(self, conn: sqlite3.Connection) -> int:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            (schema.version_table(self.table),),
        ).fetchone()
        return 0 if exists is None else _read_version(conn, self.table)

    async def _run(self, work: Callable[[sqlite3.Connection], _T], *, current: bool = True) -> _T:
        connections = self._connections
        if connections is None:
            raise ParkedStoreError(f"parked store {self.path} is not open: call open() first")
        return await asyncio.to_thread(self._in_thread, connections, work, current)

    def _in_thread(
        self, connections: Connections, work: Callable[[sqlite3.Connection], _T], current: bool
    ) -> _T:
        try:
            conn = connections.take()
        except sqlite3.Error as exc:
            raise ParkedStoreError(
                f"cannot open parked-event database {self.path}: {_line(exc)}"
            ) from exc
        done = False
        try:
            if current and not self._current:
                schema.require_latest(self.table, self._version(conn))
                self._current = True
            result = work(conn)
            done = True
            return result
        except sqlite3.Error as exc:
            raise ParkedStoreError(f"parked-event database {self.path}: {_line(exc)}") from exc
        finally:
            connections.give_back(conn, sound=done)


def _read_version(conn: sqlite3.Connection, table: str) -> int:
    row = conn.execute(f"SELECT max(version) FROM {schema.version_table(table)}").fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def _add(
    conn: sqlite3.Connection, table: str, rows: list[tuple[tuple[Any, ...], ParkedEvent]]
) -> int:
    """Insert each entry not stored yet, linked to the latest earlier entry of its message
    (found by the statement itself: one ``executemany`` for the batch)."""
    columns = ", ".join(sql.INSERT_COLUMNS)
    marks = ", ".join("?" for _ in sql.INSERT_COLUMNS)
    latest = f"SELECT max(id) FROM {table} WHERE place = ? AND app = ? AND message_id = ?"
    insert = (
        f"INSERT INTO {table} ({columns}, previous_id) VALUES ({marks}, ({latest})) "
        "ON CONFLICT (fingerprint) DO NOTHING"
    )
    with immediate(conn):
        cursor = conn.executemany(
            insert,
            (
                (*values, event.place.value, event.app or "", event.message_id)
                for values, event in rows
            ),
        )
        return cursor.rowcount


def _rows(conn: sqlite3.Connection, read: sql.Read) -> list[Any]:
    return conn.execute(read.text, read.params).fetchall()


def _one(conn: sqlite3.Connection, read: sql.Read) -> Any:
    return _rows(conn, read)[0]


def _write_rows(conn: sqlite3.Connection, write: sql.Read) -> list[Any]:
    """Run one write that returns rows, in a transaction of its own; the rows."""
    with immediate(conn):
        return _rows(conn, write)


def _job(row: Sequence[Any]) -> Job:
    return jobs_sql.job_of(row, native_times=False)


def _write(conn: sqlite3.Connection, writes: Sequence[sql.Read]) -> int:
    """Run ``writes`` in one transaction; how many rows they changed."""
    with immediate(conn):
        return sum(conn.execute(write.text, write.params).rowcount for write in writes)


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


__all__ = ["DEFAULT_BUSY_TIMEOUT", "DEFAULT_TABLE", "SqliteParkedStore"]
