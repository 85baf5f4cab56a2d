"""A newest-wins store in one PostgreSQL table, shared by every replica of a worker.

One row per ``(app, family, key)``: the newest event applied (``time_ms``, ``unsubscribe``,
``recorded_at``) and the key's lease (``owner``, ``lease_until``). Each change is one
statement, so it is atomic, and the guard's two steps per event are one statement each (the
lease taken and the newest returned; the newest moved and the lease cleared), each sent in
one batch with the same step of the other events in flight (one round trip for all, rows
locked in key order: :class:`~consumers.runtime.store_connections.PgBatch`); lease times are
the database's clock, so the replicas' clocks do not matter. Rows recorded longer than the
retention ago, with no live lease, are deleted in the background. Errors (the server down, a
query timing out) are :class:`~consumers.runtime.newest_stores.NewestStoreError`.
"""

from __future__ import annotations

from datetime import timedelta

from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.newest import Recorded
from consumers.runtime.newest_stores import (
    DEFAULT_RETENTION,
    Leased,
    NewestStoreError,
    check_seconds,
)
from consumers.runtime.store_connections import DEFAULT_POOL_SIZE, PgBatch, PgTable
from router.pg import TABLE_NAME_RULE, valid_table_name

DEFAULT_TABLE = "attentive_newest"

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS {table} (
        app TEXT NOT NULL,
        family TEXT NOT NULL,
        key TEXT NOT NULL,
        time_ms BIGINT,
        unsubscribe BOOLEAN NOT NULL DEFAULT false,
        recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        owner TEXT,
        lease_until TIMESTAMPTZ,
        PRIMARY KEY (app, family, key)
    )
    """,
    "CREATE INDEX IF NOT EXISTS {table}_recorded_at ON {table} (recorded_at)",
)
#: The row's newest event, unless it has none or was recorded past the retention ($4).
_NEWEST = (
    "SELECT time_ms, unsubscribe FROM {table} "
    "WHERE app = $1 AND family = $2 AND key = $3 AND time_ms IS NOT NULL "
    "AND recorded_at > now() - $4::interval"
)
#: The row's newest event becomes ($4, $5) if the row has none, had it past the retention
#: ($6), or it is older, or it is a subscribe at the same time and ($4, $5) an unsubscribe.
_RECORD = (
    "INSERT INTO {table} AS held (app, family, key, time_ms, unsubscribe) "
    "VALUES ($1, $2, $3, $4, $5) "
    "ON CONFLICT (app, family, key) DO UPDATE SET time_ms = excluded.time_ms, "
    "unsubscribe = excluded.unsubscribe, recorded_at = now() "
    "WHERE held.time_ms IS NULL OR held.recorded_at <= now() - $6::interval "
    "OR excluded.time_ms > held.time_ms "
    "OR (excluded.time_ms = held.time_ms AND excluded.unsubscribe AND NOT held.unsubscribe) "
    "RETURNING true"
)
#: The owner $4 holds the row's lease for $5, unless another owner holds an unexpired one.
_ACQUIRE = (
    "INSERT INTO {table} AS held (app, family, key, owner, lease_until) "
    "VALUES ($1, $2, $3, $4, now() + $5::interval) "
    "ON CONFLICT (app, family, key) DO UPDATE SET owner = excluded.owner, "
    "lease_until = excluded.lease_until WHERE held.owner IS NULL "
    "OR held.owner = excluded.owner OR held.lease_until <= now() RETURNING true"
)
_RELEASE = (
    "UPDATE {table} SET owner = NULL, lease_until = NULL "
    "WHERE app = $1 AND family = $2 AND key = $3 AND owner = $4"
)
#: _ACQUIRE, returning the row's newest event and whether it is within the retention ($6),
#: and the call's number in its batch ($7): no row if another owner holds the lease.
_ACQUIRE_AND_READ = (
    _ACQUIRE.removesuffix("RETURNING true")
    + "RETURNING time_ms, unsubscribe, recorded_at > now() - $6::interval AS fresh, "
    "$7::int AS call"
)
#: Whether the row's newest event gives way to ($4, $5): as in _RECORD.
_GREATER = (
    "(held.time_ms IS NULL OR held.recorded_at <= now() - $6::interval "
    "OR $4::bigint > held.time_ms "
    "OR ($4::bigint = held.time_ms AND $5::boolean AND NOT held.unsubscribe))"
)
#: _RECORD and _RELEASE (of the owner $7) on an existing row, returning whether $7 held the
#: lease, and the call's number in its batch ($8): the row locked first (FOR UPDATE), so its
#: previous owner is the one replaced. No row (pruned once the lease lapsed): nothing
#: returned, and _RECORD inserts it.
_RECORD_AND_RELEASE = (
    "UPDATE {table} AS held SET "
    f"time_ms = CASE WHEN {_GREATER} THEN $4::bigint ELSE held.time_ms END, "
    f"unsubscribe = CASE WHEN {_GREATER} THEN $5::boolean ELSE held.unsubscribe END, "
    f"recorded_at = CASE WHEN {_GREATER} THEN now() ELSE held.recorded_at END, "
    "owner = CASE WHEN held.owner = $7 THEN NULL ELSE held.owner END, "
    "lease_until = CASE WHEN held.owner = $7 THEN NULL ELSE held.lease_until END "
    "FROM (SELECT owner FROM {table} WHERE app = $1 AND family = $2 AND key = $3 FOR UPDATE) "
    "AS prior WHERE held.app = $1 AND held.family = $2 AND held.key = $3 "
    "RETURNING prior.owner IS NOT DISTINCT FROM $7 AS released, $8::int AS call"
)
_PRUNE = (
    "DELETE FROM {table} WHERE recorded_at <= now() - $1::interval "
    "AND (lease_until IS NULL OR lease_until <= now())"
)


class PostgresNewestStore:
    """A :class:`~consumers.runtime.newest_stores.NewestStore` in one PostgreSQL table
    (``table``, beside the idempotency table in the same database), through a pool of at most
    ``pool_size`` connections."""

    def __init__(
        self,
        url: str,
        *,
        retention: float = DEFAULT_RETENTION,
        table: str = DEFAULT_TABLE,
        prune_interval: float = 60.0,
        timeout: float = 10.0,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        self.retention = check_seconds("retention", retention)
        if not valid_table_name(table):
            raise WorkerConfigError(
                f"invalid newest-wins table name {table!r}: use {TABLE_NAME_RULE}"
            )
        self.url = url
        self.table = table
        self._retention = timedelta(seconds=self.retention)
        self._newest, self._record, self._acquire, self._release, self._delete = (
            sql.format(table=table) for sql in (_NEWEST, _RECORD, _ACQUIRE, _RELEASE, _PRUNE)
        )
        self._db = PgTable(
            url,
            table,
            error=NewestStoreError,
            timeout=timeout,
            prune_interval=prune_interval,
            pool_size=pool_size,
        )
        # the guard's two steps, each sent with the same step of the other events in flight
        self._acquire_and_read = PgBatch(
            self._db, _ACQUIRE_AND_READ.format(table=table), "acquiring a key's lease"
        )
        self._record_and_release = PgBatch(
            self._db,
            _RECORD_AND_RELEASE.format(table=table),
            "recording the newest event and releasing its lease",
        )

    def __repr__(self) -> str:
        return f"PostgresNewestStore(table={self.table!r})"

    async def open(self) -> None:
        """Connect; create the table and its index if missing."""
        await self._db.open([statement.format(table=self.table) for statement in _SCHEMA])

    async def close(self) -> None:
        """Stop the batches and a prune in progress and close the pool's connections."""
        await self._acquire_and_read.close()
        await self._record_and_release.close()
        await self._db.close()

    async def newest(self, app: str, family: str, key: str) -> Recorded | None:
        """The row's newest event, unless it has none or was recorded past the retention."""
        async with self._db.connection("reading the newest event") as conn:
            row = await conn.fetchrow(self._newest, app, family, key, self._retention)
        return None if row is None else Recorded(row["time_ms"], row["unsubscribe"])

    async def record(self, app: str, family: str, key: str, event: Recorded) -> bool:
        """Insert the row, or move its newest event to ``event`` if that is greater (or the
        row's is none, or past the retention)."""
        args = self._recording(app, family, key, event)
        async with self._db.connection("recording the newest event") as conn:
            recorded = await conn.fetchval(self._record, *args)
        self._db.maybe_prune(self._prune)
        return bool(recorded)

    async def acquire(self, app: str, family: str, key: str, owner: str, lease: float) -> bool:
        """Insert the row with ``owner``'s lease, or take the lease if it is free, expired or
        ``owner``'s already."""
        async with self._db.connection("acquiring a key's lease") as conn:
            acquired = await conn.fetchval(
                self._acquire, app, family, key, owner, timedelta(seconds=lease)
            )
        return bool(acquired)

    async def release(self, app: str, family: str, key: str, owner: str) -> bool:
        """Clear the row's lease if ``owner`` holds it."""
        async with self._db.connection("releasing a key's lease") as conn:
            status = await conn.execute(self._release, app, family, key, owner)
        return bool(status == "UPDATE 1")

    async def acquire_and_read(
        self, app: str, family: str, key: str, owner: str, lease: float
    ) -> Leased | None:
        """:meth:`acquire`, returning the row's newest event (within the retention) if the
        lease is held: one statement."""
        row = await self._acquire_and_read.call(
            app, family, key, owner, timedelta(seconds=lease), self._retention
        )
        if row is None:
            return None
        if row["time_ms"] is None or not row["fresh"]:
            return Leased(None)
        return Leased(Recorded(row["time_ms"], row["unsubscribe"]))

    async def record_and_release(
        self, app: str, family: str, key: str, owner: str, event: Recorded
    ) -> bool:
        """Move the row's newest event to ``event`` if that is greater and clear ``owner``'s
        lease: one statement (two if the row was pruned meanwhile: then it is inserted)."""
        args = self._recording(app, family, key, event)
        row = await self._record_and_release.call(*args, owner)
        if row is None:
            async with self._db.connection("recording the newest event") as conn:
                await conn.fetchval(self._record, *args)
        self._db.maybe_prune(self._prune)
        return row is not None and bool(row["released"])

    def _recording(
        self, app: str, family: str, key: str, event: Recorded
    ) -> tuple[str, str, str, int, bool, timedelta]:
        """The parameters $1 to $6 of the statements that record ``event``."""
        return (app, family, key, event.time_ms, event.unsubscribe, self._retention)

    async def _prune(self) -> None:
        """Delete the rows recorded past the retention whose lease is not live."""
        async with self._db.connection("pruning newest events") as conn:
            await conn.execute(self._delete, self._retention)


__all__ = ["DEFAULT_TABLE", "PostgresNewestStore"]
