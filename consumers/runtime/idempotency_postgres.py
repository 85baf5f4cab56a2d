"""An idempotency store in one PostgreSQL table, shared by every replica of a worker.

One row per id (``done``, ``token``, ``lease_until``, ``handled_at``), claimed by one
``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` the row is an expired claim or done past the
window; old rows are deleted now and then in the background. Errors (the server down, a query
timing out) are :class:`IdempotencyStoreError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from typing import Any

import structlog

from consumers.runtime import idempotency
from consumers.runtime.errors import WorkerConfigError
from router.pg import (
    TABLE_NAME_RULE,
    advisory_lock_key,
    create_pool,
    translated,
    valid_table_name,
)

DEFAULT_TABLE = "attentive_handled"

#: The columns a previous release's table lacks, and how to add them (its rows are done).
_COLUMNS = {
    "done": "BOOLEAN NOT NULL DEFAULT true",
    "token": "TEXT",
    "lease_until": "TIMESTAMPTZ",
}
#: A row another delivery may claim: done past the window, or a claim whose lease expired.
_EXPIRED = (
    "((held.done AND held.handled_at <= now() - {window}::interval) "
    "OR (NOT held.done AND held.lease_until <= now()))"
)


def lock_key(table: str) -> int:
    """The advisory-lock key (a signed 64-bit integer) serializing the schema of ``table``."""
    return advisory_lock_key("idempotency", table)


log = structlog.get_logger("consumers")


class PostgresStore:
    """An :class:`~consumers.runtime.idempotency.IdempotencyStore` in one PostgreSQL table.

    One row per ``(app, message_id)``: claimed (``done`` false, the holder's ``token``, its
    ``lease_until``) or done (``done`` true since ``handled_at``). ``begin`` inserts a claim,
    or takes over a row that is an expired claim or done past ``window`` seconds, in one
    ``INSERT ... ON CONFLICT DO UPDATE ... WHERE``; times are the database's clock, so the
    replicas' clocks do not matter. A table of the previous release (no ``done``, ``token``
    or ``lease_until``) gets the columns when the store opens; its rows count as done. Rows
    past the window (and claims abandoned since) are deleted in the background, at most once
    per ``prune_interval`` seconds per store, starting with the first ``complete``.
    """

    def __init__(
        self,
        url: str,
        *,
        window: float = idempotency.DEFAULT_WINDOW,
        lease: float = idempotency.DEFAULT_LEASE,
        table: str = DEFAULT_TABLE,
        prune_interval: float = 60.0,
        timeout: float = 10.0,
    ) -> None:
        idempotency.check_duration("window", window)
        idempotency.check_duration("lease", lease)
        if not valid_table_name(table):
            raise WorkerConfigError(
                f"invalid idempotency table name {table!r}: use {TABLE_NAME_RULE}"
            )
        self.url = url
        self.window = window
        self.lease = lease
        self.table = table
        self.prune_interval = prune_interval
        self.timeout = timeout
        self._interval = timedelta(seconds=window)
        self._lease = timedelta(seconds=lease)
        self._lock_key = lock_key(table)
        self._pool: Any = None
        self._next_prune = 0.0
        self._pruning: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"PostgresStore(table={self.table!r})"

    async def open(self) -> None:
        """Connect; create the table if missing, or add the columns a previous release's
        table lacks (under an advisory lock)."""
        if self._pool is not None:
            return
        try:
            async with self._translated("cannot connect to the idempotency database"):
                pool = await create_pool(self.url, timeout=self.timeout)
        except ValueError as exc:  # asyncpg's verdict on the URL, before any connection
            raise WorkerConfigError(
                f"invalid PostgreSQL URL {idempotency.without_password(self.url)!r}: "
                f"{idempotency.one_line(exc)}"
            ) from None
        self._pool = pool
        try:
            async with (
                self._translated("creating the idempotency table"),
                self._acquire() as conn,
                conn.transaction(),
            ):
                await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
                await conn.execute(
                    f"""
                    CREATE TABLE IF NOT EXISTS {self.table} (
                        app TEXT NOT NULL,
                        message_id TEXT NOT NULL,
                        handled_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                        done BOOLEAN NOT NULL DEFAULT true,
                        token TEXT,
                        lease_until TIMESTAMPTZ,
                        PRIMARY KEY (app, message_id)
                    )
                    """
                )
                await self._add_missing_columns(conn)
                await conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {self.table}_handled_at "
                    f"ON {self.table} (handled_at)"
                )
        except BaseException:
            self._pool = None
            pool.terminate()
            raise
        self._next_prune = 0.0

    async def close(self) -> None:
        """Stop a prune in progress and close the pool's connections."""
        pruning, self._pruning = self._pruning, None
        if pruning is not None and not pruning.done():
            pruning.cancel()
            await asyncio.wait({pruning}, timeout=self.timeout)
        pool, self._pool = self._pool, None
        if pool is not None:
            async with self._translated("closing the idempotency database"):
                await pool.close()

    async def _add_missing_columns(self, conn: Any) -> None:
        """Bring a previous release's table (app, message_id, handled_at) up to date: its
        rows become done ids. Only missing columns are added, so a store opening on a
        current table takes no exclusive lock on it."""
        present = {
            row["attname"]
            for row in await conn.fetch(
                "SELECT attname FROM pg_attribute "
                "WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped",
                self.table,
            )
        }
        for column, definition in _COLUMNS.items():
            if column not in present:
                await conn.execute(
                    f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS {column} {definition}"
                )

    async def begin(self, app: str, message_id: str) -> idempotency.Claim:
        """Insert a claim, or take over an expired claim or an id done past the window;
        else read whether the row is done or claimed."""
        async with self._translated("claiming a message id"), self._acquire() as conn:
            for _ in range(idempotency.BEGIN_TRIES):
                token = idempotency.new_token()
                claimed = await conn.fetchval(
                    f"INSERT INTO {self.table} AS held "
                    "(app, message_id, handled_at, done, token, lease_until) "
                    "VALUES ($1, $2, now(), false, $3, now() + $4::interval) "
                    "ON CONFLICT (app, message_id) DO UPDATE SET handled_at = now(), "
                    "done = false, token = EXCLUDED.token, lease_until = EXCLUDED.lease_until "
                    f"WHERE {_EXPIRED.format(window='$5')} RETURNING true",
                    app,
                    message_id,
                    token,
                    self._lease,
                    self._interval,
                )
                if claimed:
                    return idempotency.Acquired(app, message_id, token)
                done = await conn.fetchval(
                    f"SELECT done FROM {self.table} WHERE app = $1 AND message_id = $2",
                    app,
                    message_id,
                )
                if done is not None:
                    return idempotency.AlreadyDone() if done else idempotency.InProgressElsewhere()
                # released between the two statements: claim again
        return idempotency.InProgressElsewhere()  # it keeps changing hands: come back later

    async def complete(self, claim: idempotency.Acquired) -> bool:
        """Mark the row done now, if this claim holds it (or nobody holds it any more)."""
        async with self._translated("completing a message id"), self._acquire() as conn:
            done = await conn.fetchval(
                f"INSERT INTO {self.table} AS held (app, message_id, handled_at, done) "
                "VALUES ($1, $2, now(), true) "
                "ON CONFLICT (app, message_id) DO UPDATE SET handled_at = now(), "
                "done = true, token = NULL, lease_until = NULL "
                f"WHERE held.token = $3 OR {_EXPIRED.format(window='$4')} RETURNING true",
                claim.app,
                claim.message_id,
                claim.token,
                self._interval,
            )
        self._maybe_prune()
        return bool(done)

    async def release(self, claim: idempotency.Acquired) -> bool:
        """Delete the row if this claim still holds it."""
        async with self._translated("releasing a message id"), self._acquire() as conn:
            status = await conn.execute(
                f"DELETE FROM {self.table} WHERE app = $1 AND message_id = $2 AND token = $3",
                claim.app,
                claim.message_id,
                claim.token,
            )
        return bool(status == "DELETE 1")

    def _maybe_prune(self) -> None:
        """Start a background prune if one is due and none is running."""
        now = time.monotonic()
        if now < self._next_prune or (self._pruning is not None and not self._pruning.done()):
            return
        self._next_prune = now + self.prune_interval
        self._pruning = asyncio.create_task(self._prune(), name=f"prune {self.table}")

    async def _prune(self) -> None:
        """Delete the ids done past the window and the claims abandoned before it (never a
        live claim); a failure is logged, never raised."""
        try:
            async with self._translated("pruning handled ids"), self._acquire() as conn:
                await conn.execute(
                    f"DELETE FROM {self.table} WHERE handled_at <= now() - $1::interval "
                    "AND (done OR lease_until <= now())",
                    self._interval,
                )
        except idempotency.IdempotencyStoreError as exc:
            log.warning("idempotency_prune_failed", table=self.table, error=str(exc))

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Any]:
        if self._pool is None:
            raise idempotency.IdempotencyStoreError(f"{self!r} is not open: call open() first")
        async with self._pool.acquire(timeout=self.timeout) as conn:
            yield conn

    def _translated(self, doing: str) -> AbstractAsyncContextManager[None]:
        """Driver and network errors become one-line :class:`IdempotencyStoreError`; a bad
        URL's ``ValueError`` passes, for :meth:`open` to say so."""
        return translated(idempotency.IdempotencyStoreError, doing, self.table, keep=(ValueError,))


__all__ = ["DEFAULT_TABLE", "PostgresStore", "lock_key"]
