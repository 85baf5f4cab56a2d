"""Idempotency stores shared by every replica of a worker: Redis or PostgreSQL.

A :class:`~consumers.runtime.idempotency.MemoryStore` remembers only what its own process
handled, so a redelivery that lands on another replica runs the handler again. These stores
keep the handled ids where every replica looks:

* :class:`RedisStore`: one key per handled id, ``<prefix>:<app>:<message id>``, that Redis
  expires after the window (``SET ... PX``);
* :class:`PostgresStore`: one row per handled id, with the time it was handled; rows older
  than the window no longer count, and are deleted now and then in the background.

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
from consumers.runtime.idempotency import IdempotencyStore, MemoryStore
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

log = structlog.get_logger("consumers")


class IdempotencyStoreError(ConsumerError):
    """A shared idempotency store could not be reached or answered with an error."""


class RedisStore:
    """An :class:`~consumers.runtime.idempotency.IdempotencyStore` in Redis.

    ``seen`` is ``EXISTS <prefix>:<app>:<message id>``; ``remember`` sets that key with a
    time to live of ``window`` seconds, so Redis forgets it by itself. Remembering an id
    again starts its window again.
    """

    def __init__(
        self,
        url: str,
        *,
        window: float = DEFAULT_WINDOW,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        timeout: float = 10.0,
    ) -> None:
        _check_window(window)
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
        self._window_ms = max(1, math.ceil(window * 1000))
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

    async def seen(self, app: str, message_id: str) -> bool:
        """Whether the key of this id exists (Redis dropped it once the window passed)."""
        client = self._require_open()
        async with self._translated("checking a message id"):
            count = await client.exists(self._key(app, message_id))
        return bool(count)

    async def remember(self, app: str, message_id: str) -> None:
        """Set the key of this id, to expire after the window."""
        client = self._require_open()
        async with self._translated("remembering a message id"):
            await client.set(self._key(app, message_id), b"1", px=self._window_ms)

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


def lock_key(table: str) -> int:
    """The advisory-lock key (a signed 64-bit integer) serializing the schema of ``table``."""
    return advisory_lock_key("idempotency", table)


class PostgresStore:
    """An :class:`~consumers.runtime.idempotency.IdempotencyStore` in one PostgreSQL table.

    One row per ``(app, message_id)`` with ``handled_at``; an id counts as seen while
    ``handled_at`` is within ``window`` seconds of the database's clock (so the replicas'
    clocks do not matter). Rows past the window are deleted in the background, at most once
    per ``prune_interval`` seconds per store, starting with the first ``remember``.
    """

    def __init__(
        self,
        url: str,
        *,
        window: float = DEFAULT_WINDOW,
        table: str = DEFAULT_TABLE,
        prune_interval: float = 60.0,
        min_size: int = 1,
        max_size: int = 4,
        timeout: float = 10.0,
    ) -> None:
        _check_window(window)
        if not valid_table_name(table):
            raise WorkerConfigError(
                f"invalid idempotency table name {table!r}: use {TABLE_NAME_RULE}"
            )
        self.url = url
        self.window = window
        self.table = table
        self.prune_interval = prune_interval
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self._interval = timedelta(seconds=window)
        self._lock_key = lock_key(table)
        self._pool: Any = None
        self._next_prune = 0.0
        self._pruning: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"PostgresStore(table={self.table!r})"

    async def open(self) -> None:
        """Connect and create the table if missing (under an advisory lock)."""
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
                        PRIMARY KEY (app, message_id)
                    )
                    """
                )
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

    async def seen(self, app: str, message_id: str) -> bool:
        """Whether a row for this id was written within the window."""
        async with self._translated("checking a message id"), self._acquire() as conn:
            found = await conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {self.table} WHERE app = $1 "
                "AND message_id = $2 AND handled_at > now() - $3::interval)",
                app,
                message_id,
                self._interval,
            )
        return bool(found)

    async def remember(self, app: str, message_id: str) -> None:
        """Insert the row for this id, or move its ``handled_at`` to now."""
        async with self._translated("remembering a message id"), self._acquire() as conn:
            await conn.execute(
                f"INSERT INTO {self.table} (app, message_id, handled_at) "
                "VALUES ($1, $2, now()) "
                "ON CONFLICT (app, message_id) DO UPDATE SET handled_at = now()",
                app,
                message_id,
            )
        self._maybe_prune()

    def _maybe_prune(self) -> None:
        """Start a background prune if one is due and none is running."""
        now = time.monotonic()
        if now < self._next_prune or (self._pruning is not None and not self._pruning.done()):
            return
        self._next_prune = now + self.prune_interval
        self._pruning = asyncio.create_task(self._prune(), name=f"prune {self.table}")

    async def _prune(self) -> None:
        """Delete the rows past the window; a failure is logged, never raised."""
        try:
            async with self._translated("pruning handled ids"), self._acquire() as conn:
                await conn.execute(
                    f"DELETE FROM {self.table} WHERE handled_at <= now() - $1::interval",
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


def _check_window(window: float) -> None:
    if not (isinstance(window, int | float) and math.isfinite(window) and window > 0):
        raise WorkerConfigError(
            f"the idempotency window must be a positive number of seconds, not {window!r}"
        )


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
