"""Parked events in PostgreSQL: the backend for routers on several machines.

Writes that decide from what is stored (adding entries links each to the latest earlier one
of its message; migrating reads the schema version) run in a transaction that first takes a
transaction-scoped advisory lock derived from the table name, so keepers on several machines
queue there instead of deciding on the same picture. Entries go in one statement a batch
(``INSERT ... SELECT FROM unnest(...)``); facets are one statement (one snapshot).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from router.errors import NotFound
from router.parked import jobs_sql, query, schema, sql, store
from router.parked.jobs import AuditRecord, Job, JobRequest, JobState, audit_of, checked_name
from router.parked.model import ParkedEvent, State
from router.parked.places import PlaceCount, places_of, places_read
from router.parked.store import ParkedStoreError, Settled
from router.pg import advisory_lock_key, create_pool, translated

DEFAULT_TABLE = "attentive_parked_events"
#: The array type each inserted column travels in (see :data:`router.parked.sql.INSERT_COLUMNS`).
_ARRAY_TYPES = {"fingerprint": "bytea", "body": "bytea", "attempts": "int4", "replays": "int4"}
_ARRAY_TYPES.update(dict.fromkeys(("first_failed_at", "parked_at", "stored_at"), "timestamptz"))
_DAY = "to_char(parked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


class PostgresParkedStore:
    """A :class:`~router.parked.store.ParkedStore` in one PostgreSQL table, via a small pool."""

    def __init__(self, url: str, *, table: str = DEFAULT_TABLE, timeout: float = 30.0) -> None:
        self.url = url
        self.table = schema.checked_table(table)
        self.timeout = timeout
        self._lock_key = advisory_lock_key("parked", table)
        self._pool: Any = None
        self._current = False
        self._insert = _insert_statement(table)

    def __repr__(self) -> str:
        return f"PostgresParkedStore(table={self.table!r})"

    async def open(self) -> None:
        """Connect (a small pool: :data:`router.pg.POOL_MAX_SIZE` connections at most)."""
        if self._pool is None:
            async with self._translated("cannot connect to the parked-event database"):
                self._pool = await create_pool(self.url, timeout=self.timeout)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            async with self._translated("closing the parked-event database"):
                await pool.close()

    async def upgrade(self) -> int:
        async with self._locked("migrating", current=False) as conn:
            await conn.execute(schema.version_table_ddl(self.table, schema.POSTGRES))
            found = await self._read_version(conn)
            for statement in schema.upgrade_statements(self.table, schema.POSTGRES, found):
                await conn.execute(statement)
        self._current = True
        return schema.LATEST_VERSION

    async def schema_version(self) -> int:
        async with self._connection("reading the schema version", current=False) as conn:
            return await self._read_version(conn)

    async def add_many(self, entries: Sequence[ParkedEvent]) -> int:
        if not entries:
            return 0
        added = 0
        async with self._locked("adding parked entries") as conn:
            for batch in sql.rounds(entries):
                rows = [sql.insert_values(event, native_times=True) for event in batch]
                columns = [list(column) for column in zip(*rows, strict=True)]
                added += len(await conn.fetch(self._insert, *columns))
        return added

    async def page(
        self, query: query.Query, limit: int = query.DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> query.Page:
        read = sql.page_read(self.table, query, limit, cursor, numbered=True)
        async with self._connection("listing parked entries") as conn:
            rows = await conn.fetch(read.text, *read.params)
        return sql.page_of(rows, limit, native_times=True)

    async def facets(
        self, query: query.Query, size: int = query.DEFAULT_FACET_SIZE
    ) -> query.Facets:
        top = store.facet_size(size)
        read = sql.facets_read(self.table, query, numbered=True, day=_DAY)
        async with self._connection("counting parked entries") as conn:
            rows = await conn.fetch(read.text, *read.params)
        return sql.facets_of(rows, top)

    async def count(self, query: query.Query) -> int:
        read = sql.count_read(self.table, query, numbered=True)
        async with self._connection("counting parked entries") as conn:
            return int(await conn.fetchval(read.text, *read.params))

    async def get(self, entry_id: int) -> ParkedEvent:
        async with self._connection("reading a parked entry") as conn:
            row = await conn.fetchrow(
                f"SELECT {sql.COLUMNS} FROM {self.table} WHERE id = $1", entry_id
            )
        if row is None:
            raise NotFound(f"no parked entry {entry_id}")
        return sql.entry(row, native_times=True)

    async def mark(self, entry_ids: Iterable[int], state: State, by: str) -> int:
        change = (store.mark_state(state, by), datetime.now(UTC), by)
        write = sql.mark_write(self.table, sorted(set(entry_ids)), change, numbered=True)
        return await self._changed("marking parked entries", write)

    async def stats(self) -> query.StoreStats:
        async with self._connection("reading the parked-entry stats") as conn:
            entries, parked, oldest = await conn.fetchrow(
                f"SELECT (SELECT count(*) FROM {self.table}), count(*), min(parked_at) "
                f"FROM {self.table} WHERE state = $1",
                State.PARKED.value,
            )
        return query.StoreStats(entries, parked, None if oldest is None else oldest.astimezone(UTC))

    async def places(self) -> list[PlaceCount]:
        read = places_read(self.table, numbered=True)
        async with self._connection("counting parked entries by place") as conn:
            rows = await conn.fetch(read.text, *read.params)
        return places_of(rows, native_times=True)

    async def delete_expired(
        self, retention: timedelta = query.DEFAULT_RETENTION, *, now: datetime | None = None
    ) -> int:
        write = sql.expired_write(self.table, store.expiry(retention, now), numbered=True)
        return await self._changed("deleting expired parked entries", write)

    async def create_job(self, request: JobRequest) -> Job:
        async with self._connection("creating a job") as conn, conn.transaction():
            if request.counted is not None:
                matched, max_id = request.counted
            else:
                max_id = int(await conn.fetchval(jobs_sql.max_id_read(self.table).text))
                read = jobs_sql.matched_read(self.table, request, max_id, numbered=True)
                matched = int(await conn.fetchval(read.text, *read.params))
            if request.limit is not None:
                matched = min(matched, request.limit)
            insert = jobs_sql.insert_job(
                self.table, request, (matched, max_id), datetime.now(UTC), numbered=True
            )
            return _job(await conn.fetchrow(insert.text, *insert.params))

    async def job(self, job_id: int) -> Job:
        found = await self._row(
            "reading a job", jobs_sql.job_read(self.table, job_id, numbered=True)
        )
        if found is None:
            raise store.job_gone(job_id)
        return found

    async def jobs(
        self,
        state: JobState | None = None,
        limit: int = query.DEFAULT_PAGE_SIZE,
        before: int | None = None,
    ) -> list[Job]:
        read = jobs_sql.jobs_read(self.table, state, store.list_size(limit), before, numbered=True)
        async with self._connection("listing jobs") as conn:
            return [_job(row) for row in await conn.fetch(read.text, *read.params)]

    async def cancel_job(self, job_id: int, by: str) -> Job:
        by = checked_name(by, "by")
        now = datetime.now(UTC)
        write = jobs_sql.cancel_write(self.table, job_id, by, now, numbered=True)
        async with self._connection("cancelling a job") as conn, conn.transaction():
            row = await conn.fetchrow(write.text, *write.params)
            if row is None:
                read = jobs_sql.job_read(self.table, job_id, numbered=True)
                found = await conn.fetchrow(read.text, *read.params)
                return store.cancelled_already(job_id, None if found is None else _job(found))
            job = _job(row)
            audit = jobs_sql.audit_write(
                self.table, audit_of(job, now, cancel_by=by), numbered=True
            )
            await conn.execute(audit.text, *audit.params)
            return job

    async def claim_job(
        self, owner: str, lease: timedelta, job_id: int | None = None
    ) -> Job | None:
        now = datetime.now(UTC)
        write = jobs_sql.claim_write(self.table, owner, (now, now + lease), job_id, numbered=True)
        return await self._row("claiming a job", write)

    async def renew_lease(self, job_id: int, owner: str, lease: timedelta) -> Job:
        now = datetime.now(UTC)
        write = jobs_sql.renew_write(self.table, job_id, owner, (now, now + lease), numbered=True)
        found = await self._row("renewing a job's lease", write)
        if found is None:
            raise store.job_gone(job_id)
        return found

    async def settle(self, job: Job, owner: str, handled: Settled, lease: timedelta) -> Job:
        now = datetime.now(UTC)
        change = (store.job_mark(job), now, job.requested_by)
        ids = sorted(set(handled.done_ids))
        async with self._connection("recording a job's progress") as conn, conn.transaction():
            done = 0 if job.kind.marks_entries else len(ids)
            if ids and job.kind.marks_entries:
                mark = sql.mark_write(self.table, ids, change, numbered=True)
                done = int((await conn.execute(mark.text, *mark.params)).rsplit(" ", 1)[-1])
            counts = (done, handled.failed, handled.last_id)
            write = jobs_sql.progress_write(
                self.table, job.id, owner, counts, (now, now + lease), numbered=True
            )
            row = await conn.fetchrow(write.text, *write.params)
        if row is None:
            raise store.job_gone(job.id)
        return _job(row)

    async def release_job(self, job_id: int, owner: str, error: str | None = None) -> Job | None:
        now = datetime.now(UTC)
        write = jobs_sql.release_write(self.table, job_id, owner, error, now, numbered=True)
        return await self._row("releasing a job", write)

    async def finish_job(
        self, job_id: int, owner: str, state: JobState, error: str | None = None
    ) -> Job | None:
        now = datetime.now(UTC)
        write = jobs_sql.finish_write(self.table, job_id, owner, (state, error), now, numbered=True)
        async with self._connection("finishing a job") as conn, conn.transaction():
            row = await conn.fetchrow(write.text, *write.params)
            if row is None:
                return None
            job = _job(row)
            audit = jobs_sql.audit_write(self.table, audit_of(job, now), numbered=True)
            await conn.execute(audit.text, *audit.params)
            return job

    async def job_batch(self, job: Job, after: int, size: int) -> list[ParkedEvent]:
        read = jobs_sql.batch_read(self.table, job, after, size, numbered=True)
        async with self._connection("reading a job's entries") as conn:
            rows = await conn.fetch(read.text, *read.params)
        return [sql.entry(row, native_times=True) for row in rows]

    async def add_audit(self, record: AuditRecord) -> AuditRecord:
        write = jobs_sql.audit_write(self.table, record, numbered=True)
        async with self._connection("writing the audit log") as conn:
            row = await conn.fetchrow(write.text, *write.params)
        return jobs_sql.audit_of_row(row, native_times=True)

    async def audit(
        self,
        job_id: int | None = None,
        limit: int = query.DEFAULT_PAGE_SIZE,
        before: int | None = None,
    ) -> list[AuditRecord]:
        read = jobs_sql.audit_read(
            self.table, job_id, store.list_size(limit), before, numbered=True
        )
        async with self._connection("reading the audit log") as conn:
            rows = await conn.fetch(read.text, *read.params)
        return [jobs_sql.audit_of_row(row, native_times=True) for row in rows]

    async def _row(self, doing: str, read: sql.Read) -> Job | None:
        """The job one statement returns (None: no row)."""
        async with self._connection(doing) as conn:
            row = await conn.fetchrow(read.text, *read.params)
        return None if row is None else _job(row)

    async def _read_version(self, conn: Any) -> int:
        exists = await conn.fetchval("SELECT to_regclass($1)", schema.version_table(self.table))
        if exists is None:
            return 0
        found = await conn.fetchval(f"SELECT max(version) FROM {schema.version_table(self.table)}")
        return 0 if found is None else int(found)

    async def _changed(self, doing: str, write: sql.Read) -> int:
        """Run an UPDATE or DELETE; how many rows it changed."""
        async with self._connection(doing) as conn:
            status: str = await conn.execute(write.text, *write.params)
        return int(status.rsplit(" ", 1)[-1])

    @asynccontextmanager
    async def _connection(self, doing: str, *, current: bool = True) -> AsyncIterator[Any]:
        """A pooled connection whose driver errors become :class:`ParkedStoreError`; refused
        while the schema is not the one this code reads (unless ``current`` is False)."""
        if self._pool is None:
            raise ParkedStoreError(f"parked store {self.table} is not open: call open() first")
        async with self._translated(doing), self._pool.acquire(timeout=self.timeout) as conn:
            if current and not self._current:
                schema.require_latest(self.table, await self._read_version(conn))
                self._current = True
            yield conn

    @asynccontextmanager
    async def _locked(self, doing: str, *, current: bool = True) -> AsyncIterator[Any]:
        """A transaction holding this table's advisory lock (released at commit/rollback)."""
        async with self._connection(doing, current=current) as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
            yield conn

    def _translated(self, doing: str) -> AbstractAsyncContextManager[None]:
        """Driver and network errors become one-line :class:`ParkedStoreError`."""
        return translated(ParkedStoreError, doing, self.table)


def _job(row: Any) -> Job:
    return jobs_sql.job_of(row, native_times=True)


def _insert_statement(table: str) -> str:
    """One batch of entries (one array a column), linked, in order, each fingerprint once."""
    columns = sql.INSERT_COLUMNS
    arrays = ", ".join(
        f"${n}::{_ARRAY_TYPES.get(column, 'text')}[]" for n, column in enumerate(columns, 1)
    )
    names = ", ".join(columns)
    picked = ", ".join(f"u.{column}" for column in columns)
    return (
        f"INSERT INTO {table} ({names}, previous_id) "
        f"SELECT {picked}, (SELECT max(p.id) FROM {table} p WHERE p.place = u.place "
        "AND p.app = u.app AND p.message_id = u.message_id) "
        f"FROM unnest({arrays}) WITH ORDINALITY AS u({names}, ord) ORDER BY u.ord "
        "ON CONFLICT (fingerprint) DO NOTHING RETURNING id"
    )


__all__ = ["DEFAULT_TABLE", "PostgresParkedStore"]
