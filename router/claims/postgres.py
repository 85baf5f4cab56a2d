"""Claims in PostgreSQL: the backend for routers on several machines.

``grant`` runs in one transaction that first takes a transaction-scoped advisory lock whose
key is derived from the table name, then reads every claim, decides and inserts. Every
router process granting claims in the same table queues on that lock, so no two decide on
the same picture. Creating the schema takes the same lock: two processes opening a fresh
database at once do not race on ``CREATE TABLE IF NOT EXISTS``.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from router.claims.model import Claim, ClaimSpec, EventPattern
from router.claims.store import Granted, Refused, decide
from router.errors import ClaimStoreError, ConfigError, InvalidClaim
from router.pg import (
    TABLE_NAME_RULE,
    advisory_lock_key,
    create_pool,
    translated,
    valid_table_name,
)

DEFAULT_TABLE = "attentive_claims"
_COLUMNS = "id, app, pattern, company, created_at"


def lock_key(table: str) -> int:
    """The advisory-lock key (a signed 64-bit integer) serializing writers of ``table``."""
    return advisory_lock_key("claims", table)


class PostgresClaimStore:
    """A :class:`~router.claims.store.ClaimStore` over one PostgreSQL table, via a small pool."""

    def __init__(self, url: str, *, table: str = DEFAULT_TABLE, timeout: float = 30.0) -> None:
        if not valid_table_name(table):
            raise ConfigError(f"invalid claims table name {table!r}: use {TABLE_NAME_RULE}")
        self.url = url
        self.table = table
        self.timeout = timeout
        self._lock_key = lock_key(table)
        self._pool: Any = None

    def __repr__(self) -> str:
        return f"PostgresClaimStore(table={self.table!r})"

    async def open(self) -> None:
        """Connect and create the table and its unique index if missing."""
        if self._pool is not None:
            return
        async with self._translated("cannot connect to the claims database"):
            pool = await create_pool(self.url, timeout=self.timeout)
        self._pool = pool
        try:
            async with self._transaction() as conn:
                await conn.execute(
                    f"""
                    CREATE TABLE IF NOT EXISTS {self.table} (
                        id BIGSERIAL PRIMARY KEY,
                        app TEXT NOT NULL,
                        pattern TEXT NOT NULL,
                        company TEXT NULL,
                        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
                    )
                    """
                )
                await conn.execute(
                    f"CREATE UNIQUE INDEX IF NOT EXISTS {self.table}_scope "
                    f"ON {self.table} (app, pattern, coalesce(company, ''))"
                )
        except BaseException:
            self._pool = None
            pool.terminate()
            raise

    async def close(self) -> None:
        """Close the pool's connections."""
        pool, self._pool = self._pool, None
        if pool is not None:
            async with self._translated("closing the claims database"):
                await pool.close()

    async def list(self, app: str | None = None) -> builtins.list[Claim]:
        """Every claim (of ``app``), oldest first."""
        async with self._translated("reading claims"), self._acquire() as conn:
            if app is None:
                rows = await conn.fetch(f"SELECT {_COLUMNS} FROM {self.table} ORDER BY id")
            else:
                rows = await conn.fetch(
                    f"SELECT {_COLUMNS} FROM {self.table} WHERE app = $1 ORDER BY id", app
                )
        return [_claim(row) for row in rows]

    async def grant(self, wanted: Sequence[ClaimSpec]) -> Granted | Refused:
        """Grant all of ``wanted`` or none: lock, read, decide, insert, commit."""
        specs = tuple(wanted)
        async with self._transaction() as conn:
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM {self.table} ORDER BY id")
            decision = decide([_claim(row) for row in rows], specs)
            if decision.conflicts:
                return Refused(decision.conflicts)
            created: builtins.list[Claim] = []
            for spec in decision.to_insert:
                row = await conn.fetchrow(
                    f"INSERT INTO {self.table} (app, pattern, company) VALUES ($1, $2, $3) "
                    f"RETURNING {_COLUMNS}",
                    spec.app,
                    str(spec.pattern),
                    spec.company,
                )
                created.append(_claim(row))
        made = tuple(created)
        return Granted(claims=_in_order(specs, decision.already_held + made), created=made)

    async def remove(self, claim_id: int) -> Claim | None:
        """Delete a claim; the deleted claim, or None when there was none with that id."""
        async with self._translated("removing a claim"), self._acquire() as conn:
            row = await conn.fetchrow(
                f"DELETE FROM {self.table} WHERE id = $1 RETURNING {_COLUMNS}", claim_id
            )
        return None if row is None else _claim(row)

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Any]:
        if self._pool is None:
            raise ClaimStoreError(f"claim store {self.table} is not open: call open() first")
        async with self._pool.acquire(timeout=self.timeout) as conn:
            yield conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        """A transaction holding this table's advisory lock (released at commit/rollback)."""
        async with (
            self._translated("writing claims"),
            self._acquire() as conn,
            conn.transaction(),
        ):
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
            yield conn

    def _translated(self, doing: str) -> AbstractAsyncContextManager[None]:
        """Driver and network errors become one-line :class:`ClaimStoreError`."""
        return translated(ClaimStoreError, doing, self.table)


def _claim(row: Any) -> Claim:
    claim_id = int(row["id"])
    try:
        pattern = EventPattern.parse(str(row["pattern"]))
    except InvalidClaim as exc:
        raise ClaimStoreError(f"claim {claim_id} in the database is unreadable: {exc}") from exc
    created_at: datetime = row["created_at"].astimezone(UTC)
    company = row["company"]
    return Claim(
        str(row["app"]),
        pattern,
        None if company is None else str(company),
        id=claim_id,
        created_at=created_at,
    )


def _in_order(wanted: Sequence[ClaimSpec], claims: Sequence[Claim]) -> tuple[Claim, ...]:
    """``claims`` in the order of the specs of ``wanted`` they answer, each once."""
    ordered: builtins.list[Claim] = []
    for spec in wanted:
        claim = next(claim for claim in claims if spec.same_as(claim))
        if claim not in ordered:
            ordered.append(claim)
    return tuple(ordered)


__all__ = ["DEFAULT_TABLE", "PostgresClaimStore", "lock_key"]
