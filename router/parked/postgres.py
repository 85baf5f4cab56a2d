"""Parked events in PostgreSQL: the backend for routers on several machines.

Writes that decide from what is stored (adding entries links each to the latest earlier one
of its message; migrating reads the schema version) run in a transaction that first takes a
transaction-scoped advisory lock derived from the table name, so keepers on several machines
queue there instead of deciding on the same picture. Entries go in one statement a batch
(``INSERT ... SELECT FROM unnest(...)``); facets are one statement (one snapshot).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from router.errors import NotFound
from router.parked import query, schema, sql
from router.parked.model import ParkedEvent, State
from router.parked.store import ParkedStoreError, expiry, facet_size, mark_state
from router.pg import advisory_lock_key, create_pool

DEFAULT_TABLE = "attentive_parked_events"
#: What the driver raises when the server, the network or the URL is wrong.
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
#: The array type each inserted column travels in (see :data:`router.parked.sql.INSERT_COLUMNS`).
_ARRAY_TYPES = {"fingerprint": "bytea", "body": "bytea", "attempts": "int4", "replays": "int4"}
_ARRAY_TYPES.update(dict.fromkeys(("first_failed_at", "parked_at", "stored_at"), "timestamptz"))
_DAY = "to_char(parked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


class PostgresParkedStore:
    """A :class:`~router.parked.store.ParkedStore` in one PostgreSQL table, via a small pool."""

    def __init__(
        self,
        url: str,
        *,
        table: str = DEFAULT_TABLE,
        min_size: int = 1,
        max_size: int = 4,
        timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.table = schema.checked_table(table)
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self._lock_key = advisory_lock_key("parked", table)
        self._pool: Any = None
        self._current = False
        self._insert = _insert_statement(table)

    def __repr__(self) -> str:
        return f"PostgresParkedStore(table={self.table!r})"

    async def open(self) -> None:
        """Connect (a pool of ``min_size`` to ``max_size`` connections)."""
        if self._pool is None:
            try:
                self._pool = await create_pool(
                    self.url, min_size=self.min_size, max_size=self.max_size, timeout=self.timeout
                )
            except _DRIVER_ERRORS as exc:
                raise self._failed("cannot connect to the parked-event database", exc) from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await pool.close()
            except _DRIVER_ERRORS as exc:
                raise self._failed("closing the parked-event database", exc) from exc

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
        top = facet_size(size)
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
        change = (mark_state(state, by), datetime.now(UTC), by)
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

    async def delete_expired(
        self, retention: timedelta = query.DEFAULT_RETENTION, *, now: datetime | None = None
    ) -> int:
        write = sql.expired_write(self.table, expiry(retention, now), numbered=True)
        return await self._changed("deleting expired parked entries", write)

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
        try:
            async with self._pool.acquire(timeout=self.timeout) as conn:
                if current and not self._current:
                    schema.require_latest(self.table, await self._read_version(conn))
                    self._current = True
                yield conn
        except _DRIVER_ERRORS as exc:
            raise self._failed(doing, exc) from exc

    @asynccontextmanager
    async def _locked(self, doing: str, *, current: bool = True) -> AsyncIterator[Any]:
        """A transaction holding this table's advisory lock (released at commit/rollback)."""
        async with self._connection(doing, current=current) as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
            yield conn

    def _failed(self, doing: str, exc: BaseException) -> ParkedStoreError:
        """A driver or network error as one line."""
        said = " ".join(str(exc).split()) or type(exc).__name__
        return ParkedStoreError(f"{doing} ({self.table}): {said}")


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
