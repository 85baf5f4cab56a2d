"""Paused applications in the claims' PostgreSQL database: the backend for routers on several
machines.

A change runs in one transaction that first takes a transaction-scoped advisory lock derived
from the table's name (:func:`router.pg.advisory_lock_key`), then reads the row, decides and
writes it; creating the table takes the same lock, so routers opening a fresh database at once
do not race on ``CREATE TABLE IF NOT EXISTS``.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from router.apps.model import AppState, decide
from router.apps.store import AppStoreError, Change
from router.errors import ConfigError
from router.pg import TABLE_NAME_RULE, advisory_lock_key, create_pool, translated, valid_table_name

DEFAULT_TABLE = "attentive_app_states"
_COLUMNS = "app, paused, since, changed_by, reason"
_SCHEMA = """
    CREATE TABLE IF NOT EXISTS {table} (
        app TEXT PRIMARY KEY,
        paused BOOLEAN NOT NULL,
        since TIMESTAMPTZ NOT NULL,
        changed_by TEXT NOT NULL,
        reason TEXT NOT NULL
    )
"""


class PostgresAppStore:
    """An :class:`~router.apps.store.AppStateStore` over one PostgreSQL table, via a small pool."""

    def __init__(self, url: str, *, table: str = DEFAULT_TABLE, timeout: float = 30.0) -> None:
        if not valid_table_name(table):
            raise ConfigError(f"invalid application state table name {table!r}: {TABLE_NAME_RULE}")
        self.url = url
        self.table = table
        self.timeout = timeout
        self._lock_key = advisory_lock_key("apps", table)
        self._pool: Any = None

    def __repr__(self) -> str:
        return f"PostgresAppStore(table={self.table!r})"

    async def open(self) -> None:
        """Connect and create the table if missing."""
        if self._pool is not None:
            return
        async with translated(AppStoreError, "opening the database", self.table):
            pool = await create_pool(self.url, timeout=self.timeout)
            try:
                async with pool.acquire(timeout=self.timeout) as conn, conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
                    await conn.execute(_SCHEMA.format(table=self.table))
            except BaseException:
                pool.terminate()
                raise
        self._pool = pool

    async def close(self) -> None:
        """Close the pool's connections."""
        pool, self._pool = self._pool, None
        if pool is not None:
            async with translated(AppStoreError, "closing the database", self.table):
                await pool.close()

    async def get(self, app: str) -> AppState:
        async with self._acquire("reading an application's state") as conn:
            row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM {self.table} WHERE app = $1", app)
        return AppState(app) if row is None else _state(row)

    async def list(self) -> builtins.list[AppState]:
        async with self._acquire("reading the applications' states") as conn:
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM {self.table} ORDER BY app")
        return [_state(row) for row in rows]

    async def change(self, app: str, *, paused: bool, by: str, reason: str, at: datetime) -> Change:
        async with self._transaction() as conn:
            row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM {self.table} WHERE app = $1", app)
            before = AppState(app) if row is None else _state(row)
            after = decide(before, paused=paused, by=by, reason=reason, at=at)
            if after != before:
                await conn.execute(
                    f"INSERT INTO {self.table} ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5) "
                    "ON CONFLICT (app) DO UPDATE SET paused = EXCLUDED.paused, "
                    "since = EXCLUDED.since, changed_by = EXCLUDED.changed_by, "
                    "reason = EXCLUDED.reason",
                    app,
                    paused,
                    at,
                    after.by,
                    after.reason,
                )
        return Change(before, after)

    @asynccontextmanager
    async def _acquire(self, doing: str) -> AsyncIterator[Any]:
        if self._pool is None:
            raise AppStoreError(f"app store {self.table} is not open: call open() first")
        async with (
            translated(AppStoreError, doing, self.table),
            self._pool.acquire(timeout=self.timeout) as conn,
        ):
            yield conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        """A transaction holding this table's advisory lock (released at commit/rollback)."""
        async with self._acquire("writing an application's state") as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
            yield conn


def _state(row: Any) -> AppState:
    since: datetime = row["since"].astimezone(UTC)
    return AppState(
        str(row["app"]), bool(row["paused"]), since, str(row["changed_by"]), str(row["reason"])
    )


__all__ = ["DEFAULT_TABLE", "PostgresAppStore"]
