"""Idempotency stores shared by every replica of a worker: Redis or PostgreSQL.

A :class:`~consumers.runtime.idempotency.MemoryStore` knows only its own process's claims,
so a copy of an id that lands on another replica runs the handler again. These stores keep
the claims and the handled ids where every replica looks:

* :class:`RedisStore`: one key per id, ``<prefix>:<app>:<message id>``, holding the claim's
  token while claimed (``SET ... NX PX <lease>``) and ``1`` once done (``PX <window>``), so
  Redis drops an abandoned claim or an old id by itself;
* :class:`PostgresStore`: one row per id (``done``, ``token``, ``lease_until``,
  ``handled_at``), claimed by one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` the row is
  an expired claim or done past the window; old rows are deleted now and then in the
  background.

:func:`idempotency_store_from_url` picks one from a URL. A store's errors (the server down, a
query timing out) are :class:`IdempotencyStoreError`; inside the pipeline they make the
delivery retry, like any other failure.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import redis.asyncio
import structlog
from redis.asyncio.connection import parse_url
from redis.exceptions import RedisError

from consumers.runtime.errors import ConsumerError, WorkerConfigError
from consumers.runtime.idempotency import (
    DEFAULT_LEASE,
    Acquired,
    AlreadyDone,
    Claim,
    IdempotencyStore,
    InProgressElsewhere,
    MemoryStore,
    check_duration,
    new_token,
)
from router.pg import TABLE_NAME_RULE, advisory_lock_key, create_pool, valid_table_name

#: How long an id counts as handled unless told otherwise: a day.
DEFAULT_WINDOW = 24 * 3600.0
DEFAULT_KEY_PREFIX = "attentive:handled"
DEFAULT_TABLE = "attentive_handled"

_REDIS_SCHEMES = ("redis", "rediss")
_POSTGRES_SCHEMES = ("postgresql", "postgres")
_ACCEPTED = (
    "use memory, redis://host:port/db, rediss://host:port/db "
    "or postgresql://user@host:port/database"
)
#: What asyncpg raises when the server, the network or the query is wrong.
_POSTGRES_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
#: What redis-py raises when the server or the network is wrong.
_REDIS_ERRORS = (RedisError, OSError)
#: How many times ``begin`` tries again when the id's claim vanished between two reads.
_BEGIN_TRIES = 3
#: The value of a done id's Redis key (the previous release's ``remember`` wrote it too).
_DONE = b"1"
#: KEYS[1] done for ARGV[2] ms, unless another token holds it or it is done already.
_REDIS_COMPLETE = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
return 1
"""
#: Delete KEYS[1] only while it holds the token ARGV[1].
_REDIS_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

log = structlog.get_logger("consumers")


class IdempotencyStoreError(ConsumerError):
    """A shared idempotency store could not be reached or answered with an error."""


class RedisStore:
    """An :class:`~consumers.runtime.idempotency.IdempotencyStore` in Redis.

    ``begin`` is ``SET <prefix>:<app>:<message id> <token> NX PX <lease>``; when the key is
    there already, its value says done (``1``) or claimed (a token). ``complete`` sets it to
    ``1`` for ``window`` seconds and ``release`` deletes it, each in a small Lua script that
    first checks the key still holds the claim's token.
    """

    def __init__(
        self,
        url: str,
        *,
        window: float = DEFAULT_WINDOW,
        lease: float = DEFAULT_LEASE,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        timeout: float = 10.0,
    ) -> None:
        check_duration("window", window)
        check_duration("lease", lease)
        try:
            parse_url(url)
        except ValueError as exc:
            raise WorkerConfigError(f"invalid Redis URL {_redacted(url)!r}: {exc}") from None
        if not key_prefix:
            raise WorkerConfigError("the Redis key prefix of the idempotency store is empty")
        self.url = url
        self.window = window
        self.key_prefix = key_prefix
        self.timeout = timeout
        self.lease = lease
        self._window_ms = max(1, math.ceil(window * 1000))
        self._lease_ms = max(1, math.ceil(lease * 1000))
        self._client: redis.asyncio.Redis | None = None

    def __repr__(self) -> str:
        return f"RedisStore({_redacted(self.url)!r}, key_prefix={self.key_prefix!r})"

    async def open(self) -> None:
        """Connect and ping: :class:`IdempotencyStoreError` if Redis does not answer."""
        if self._client is not None:
            return
        client = redis.asyncio.Redis.from_url(
            self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )
        try:
            async with self._translated("cannot connect to Redis"):
                await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._client = client

    async def close(self) -> None:
        """Close the client's connections."""
        client, self._client = self._client, None
        if client is not None:
            async with self._translated("closing the Redis connection"):
                await client.aclose()

    async def begin(self, app: str, message_id: str) -> Claim:
        """Set the id's key to a new token if it is absent; else read what holds it."""
        client, key = self._require_open(), self._key(app, message_id)
        async with self._translated("claiming a message id"):
            for _ in range(_BEGIN_TRIES):
                token = new_token()
                if await client.set(key, token, nx=True, px=self._lease_ms):
                    return Acquired(app, message_id, token)
                held = await client.get(key)
                if held is not None:
                    return AlreadyDone() if held == _DONE else InProgressElsewhere()
                # released or expired between the two commands: claim again
        return InProgressElsewhere()  # it keeps changing hands: come back later

    async def complete(self, claim: Acquired) -> bool:
        """Set the id's key to ``1`` for the window, unless another claim or done holds it."""
        client = self._require_open()
        async with self._translated("completing a message id"):
            done = await client.eval(
                _REDIS_COMPLETE,
                1,
                self._key(claim.app, claim.message_id),
                claim.token,
                self._window_ms,
            )
        return bool(done)

    async def release(self, claim: Acquired) -> bool:
        """Delete the id's key if it still holds this claim's token."""
        client = self._require_open()
        async with self._translated("releasing a message id"):
            released = await client.eval(
                _REDIS_RELEASE, 1, self._key(claim.app, claim.message_id), claim.token
            )
        return bool(released)

    def _key(self, app: str, message_id: str) -> str:
        return f"{self.key_prefix}:{app}:{message_id}"

    def _require_open(self) -> redis.asyncio.Redis:
        if self._client is None:
            raise IdempotencyStoreError(f"{self!r} is not open: call open() first")
        return self._client

    @asynccontextmanager
    async def _translated(self, doing: str) -> AsyncIterator[None]:
        """Client and network errors become one-line :class:`IdempotencyStoreError`."""
        try:
            yield
        except _REDIS_ERRORS as exc:
            raise IdempotencyStoreError(
                f"{doing} ({_redacted(self.url)}): {_one_line(exc)}"
            ) from exc


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
        window: float = DEFAULT_WINDOW,
        lease: float = DEFAULT_LEASE,
        table: str = DEFAULT_TABLE,
        prune_interval: float = 60.0,
        min_size: int = 1,
        max_size: int = 4,
        timeout: float = 10.0,
    ) -> None:
        check_duration("window", window)
        check_duration("lease", lease)
        if not valid_table_name(table):
            raise WorkerConfigError(
                f"invalid idempotency table name {table!r}: use {TABLE_NAME_RULE}"
            )
        self.url = url
        self.window = window
        self.lease = lease
        self.table = table
        self.prune_interval = prune_interval
        self.min_size = min_size
        self.max_size = max_size
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
                pool = await create_pool(
                    self.url, min_size=self.min_size, max_size=self.max_size, timeout=self.timeout
                )
        except ValueError as exc:  # asyncpg's verdict on the URL, before any connection
            raise WorkerConfigError(
                f"invalid PostgreSQL URL {_redacted(self.url)!r}: {_one_line(exc)}"
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

    async def begin(self, app: str, message_id: str) -> Claim:
        """Insert a claim, or take over an expired claim or an id done past the window;
        else read whether the row is done or claimed."""
        async with self._translated("claiming a message id"), self._acquire() as conn:
            for _ in range(_BEGIN_TRIES):
                token = new_token()
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
                    return Acquired(app, message_id, token)
                done = await conn.fetchval(
                    f"SELECT done FROM {self.table} WHERE app = $1 AND message_id = $2",
                    app,
                    message_id,
                )
                if done is not None:
                    return AlreadyDone() if done else InProgressElsewhere()
                # released between the two statements: claim again
        return InProgressElsewhere()  # it keeps changing hands: come back later

    async def complete(self, claim: Acquired) -> bool:
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

    async def release(self, claim: Acquired) -> bool:
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
        except IdempotencyStoreError as exc:
            log.warning("idempotency_prune_failed", table=self.table, error=str(exc))

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Any]:
        if self._pool is None:
            raise IdempotencyStoreError(f"{self!r} is not open: call open() first")
        async with self._pool.acquire(timeout=self.timeout) as conn:
            yield conn

    @asynccontextmanager
    async def _translated(self, doing: str) -> AsyncIterator[None]:
        """Driver and network errors become one-line :class:`IdempotencyStoreError`."""
        try:
            yield
        except _POSTGRES_ERRORS as exc:
            if isinstance(exc, ValueError):  # a bad URL: the caller says so
                raise
            raise IdempotencyStoreError(f"{doing} ({self.table}): {_one_line(exc)}") from exc


def idempotency_store_from_url(url: str | None, **kwargs: Any) -> IdempotencyStore:
    """The (not yet opened) store ``url`` names; ``kwargs`` go to the store's constructor.

    ``None`` or ``memory`` is a :class:`~consumers.runtime.idempotency.MemoryStore` (this
    process only); ``redis://`` and ``rediss://`` a :class:`RedisStore`; ``postgresql://``
    and ``postgres://`` a :class:`PostgresStore`. Anything else is a
    :class:`~consumers.runtime.errors.WorkerConfigError`.
    """
    if url is None or url.strip().lower() == "memory":
        return MemoryStore(**kwargs)
    scheme, separator, _ = url.partition("://")
    if separator and scheme.lower() in _REDIS_SCHEMES:
        return RedisStore(url, **kwargs)
    if separator and scheme.lower() in _POSTGRES_SCHEMES:
        return PostgresStore(url, **kwargs)
    raise WorkerConfigError(f"unsupported idempotency store URL {_redacted(url)!r}: {_ACCEPTED}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _redacted(url: str) -> str:
    """``url`` without a password, so an error message can be logged."""
    scheme, separator, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not separator or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


__all__ = [
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_TABLE",
    "DEFAULT_WINDOW",
    "IdempotencyStoreError",
    "PostgresStore",
    "RedisStore",
    "idempotency_store_from_url",
    "lock_key",
]
