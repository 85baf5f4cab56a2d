"""What a worker's shared store needs of Redis or PostgreSQL: a client with the store's scripts
loaded, their calls pipelined, or a table with its pool, its schema and a background prune; each
error as the store's own.

A store passes its error class (``error``), so a driver or network failure reaches the
pipeline as that store's one-line error, the URL's password left out.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, TypeVar

import asyncpg
import redis.asyncio
import structlog
from redis.exceptions import NoScriptError, RedisError, ResponseError

from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.idempotency import one_line, without_password
from router.pg import POOL_MIN_SIZE, advisory_lock_key, translated

log = structlog.get_logger("consumers")

StoreError = Callable[[str], Exception]
#: One call of a :class:`TurnBatches`.
C = TypeVar("C")


@asynccontextmanager
async def redis_errors(url: str, doing: str, error: StoreError) -> AsyncIterator[None]:
    """Client and network errors raised inside become ``error("<doing> (<url>): <text>")``."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise error(f"{doing} ({without_password(url)}): {one_line(exc)}") from exc


async def connected_scripts(
    url: str, sources: Mapping[str, str], *, timeout: float, error: StoreError
) -> RedisScripts:
    """The scripts ``sources`` loaded into the Redis of ``url`` (so it answered, within
    ``timeout`` seconds), ready to be called through its client."""
    client = redis.asyncio.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    scripts = RedisScripts(client, sources)
    try:
        async with redis_errors(url, "cannot connect to Redis", error):
            await scripts.load()
    except BaseException:
        await client.aclose()
        raise
    return scripts


#: Connections a store's pool opens at most unless told otherwise: enough for a worker's
#: handlers (a prefetch of 256 keeps a dozen statements in flight at a time) to share without
#: queueing on the pool, few enough that replicas stay well under PostgreSQL's connection limit.
DEFAULT_POOL_SIZE = 16


async def _keep_session(connection: Any) -> None:
    """Give a connection back to the pool as it is: the stores' statements change nothing in
    the session (no ``SET``, ``LISTEN``, cursors or session locks), so the default reset, a
    round trip per statement, would buy nothing. An open transaction is still rolled back."""


class TurnBatches(Generic[C]):
    """Calls made in one turn of the event loop, sent together by :meth:`_answers` (one round
    trip for all of them, and a fraction of a driver's cost per call: a worker's prefetch
    starts many deliveries at once, each calling its store). Each caller gets its own answer
    or error; a batch that fails fails each of its calls. ``name`` names the batches' tasks.

    One batch is in flight at a time: the calls made meanwhile wait and go together as the
    next once it is answered (as a database commits a group), so the busier the store, the
    larger its batches rather than the more its round trips."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._waiting: list[tuple[C, asyncio.Future[Any]]] = []
        self._sending: asyncio.Task[None] | None = None
        self._scheduled = False

    async def _call(self, call: C) -> Any:
        """``call``'s answer, sent with the calls made in the same turn of the loop (or, while
        a batch is in flight, with those made until it is answered)."""
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append((call, answer))
        self._schedule()
        return await answer

    async def close(self) -> None:
        """Stop the batch in flight (its callers get ``CancelledError``)."""
        if self._sending is not None:
            self._sending.cancel()
            await asyncio.wait({self._sending})

    async def _answers(self, calls: list[C]) -> list[Any]:
        """Each call's answer, or the exception it should raise (in ``calls``' order)."""
        raise NotImplementedError

    def _schedule(self) -> None:
        """Send the waiting calls at the end of this turn, unless a send is due already or a
        batch is in flight (then once it is answered)."""
        if self._scheduled or self._sending is not None or not self._waiting:
            return
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        self._scheduled = False
        calls, self._waiting = self._waiting, []
        self._sending = asyncio.create_task(self._settle(calls), name=self._name)
        self._sending.add_done_callback(self._sent)

    def _sent(self, _: asyncio.Task[None]) -> None:
        self._sending = None
        self._schedule()

    async def _settle(self, calls: list[tuple[C, asyncio.Future[Any]]]) -> None:
        try:
            answers = await self._answers([call for call, _ in calls])
        except asyncio.CancelledError:
            for _, waiting in calls:
                waiting.cancel()
            raise
        except Exception as error:
            answers = [error] * len(calls)
        for (_, waiting), answer in zip(calls, answers, strict=True):
            if waiting.done():  # its caller was cancelled
                continue
            if isinstance(answer, Exception):
                waiting.set_exception(answer)
            else:
                waiting.set_result(answer)


class RedisScripts(TurnBatches["_ScriptCall"]):
    """A store's Lua scripts, their calls made in one turn of the event loop sent together as
    one pipeline, one pipeline in flight at a time (:class:`TurnBatches`). A script Redis no
    longer has (a restart, ``SCRIPT FLUSH``) is loaded again and its calls sent again."""

    def __init__(self, client: redis.asyncio.Redis, sources: Mapping[str, str]) -> None:
        super().__init__("redis scripts")
        #: The client the scripts are called through (for plain commands too).
        self.client = client
        self._sources = dict(sources)
        self._shas = {name: hashlib.sha1(s.encode()).hexdigest() for name, s in sources.items()}

    async def load(self) -> None:
        """Load every script into Redis (so the first calls need no second round trip)."""
        for source in self._sources.values():
            await self.client.script_load(source)

    async def call(self, name: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Script ``name``'s answer to ``keys`` and ``args``, sent with the calls made in the
        same turn of the loop."""
        return await self._call(_ScriptCall(name, keys, args))

    async def _answers(self, calls: list[_ScriptCall]) -> list[Any]:
        answers = await self._pipelined(calls)
        lost = [n for n, answer in enumerate(answers) if isinstance(answer, NoScriptError)]
        if lost:
            for name in {calls[n].name for n in lost}:
                await self.client.script_load(self._sources[name])
            again = await self._pipelined([calls[n] for n in lost])
            for n, answer in zip(lost, again, strict=True):
                answers[n] = answer
        return answers

    async def _pipelined(self, calls: list[_ScriptCall]) -> list[Any]:
        """Each call's answer, or the error Redis answered it with."""
        if len(calls) == 1:  # a pipeline of one costs more than the command alone
            call = calls[0]
            try:
                sha = self._shas[call.name]
                return [await self.client.evalsha(sha, len(call.keys), *call.keys, *call.args)]
            except ResponseError as error:
                return [error]
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(self._shas[call.name], len(call.keys), *call.keys, *call.args)
        return list(await pipe.execute(raise_on_error=False))


class _ScriptCall:
    __slots__ = ("args", "keys", "name")

    def __init__(self, name: str, keys: Sequence[str], args: Sequence[str | int]) -> None:
        self.name = name
        self.keys = keys
        self.args = args


class PgTable:
    """One store's PostgreSQL table: a pool of at most ``pool_size`` connections, the schema
    made under an advisory lock, and a prune run in the background at most once per
    ``prune_interval`` seconds."""

    def __init__(
        self,
        url: str,
        table: str,
        *,
        error: StoreError,
        timeout: float,
        prune_interval: float,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise WorkerConfigError(f"a store's pool size must be at least 1, not {pool_size!r}")
        self.url = url
        self.table = table
        self.timeout = timeout
        self.pool_size = pool_size
        self.prune_interval = prune_interval
        self._error = error
        self._pool: Any = None
        self._next_prune = 0.0
        self._pruning: asyncio.Task[None] | None = None

    async def open(self, schema: Sequence[str]) -> None:
        """Connect and run ``schema`` (idempotent DDL) in one transaction under the table's
        advisory lock, so replicas starting together do not race."""
        if self._pool is not None:
            return
        try:
            async with self.translated("cannot connect to the database"):
                pool = await asyncpg.create_pool(
                    self.url,
                    min_size=min(POOL_MIN_SIZE, self.pool_size),
                    max_size=self.pool_size,
                    timeout=self.timeout,
                    command_timeout=self.timeout,
                    reset=_keep_session,
                )
        except ValueError as exc:  # asyncpg's verdict on the URL, before any connection
            raise WorkerConfigError(
                f"invalid PostgreSQL URL {without_password(self.url)!r}: {one_line(exc)}"
            ) from None
        self._pool = pool
        try:
            async with self.connection("creating the table") as conn, conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1)", advisory_lock_key("schema", self.table)
                )
                for statement in schema:
                    await conn.execute(statement)
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
            async with self.translated("closing the database"):
                await pool.close()

    @asynccontextmanager
    async def connection(self, doing: str) -> AsyncIterator[Any]:
        """A pooled connection, errors inside translated (``doing`` says what failed)."""
        async with self.translated(doing):
            if self._pool is None:
                raise self._error(f"the store of {self.table} is not open: call open() first")
            pool = self._pool
            async with asyncio.timeout(self.timeout):  # no task per wait, unlike wait_for
                conn = await pool.acquire()
            try:
                yield conn
            finally:
                await pool.release(conn)

    def translated(self, doing: str) -> AbstractAsyncContextManager[None]:
        """Driver and network errors become one-line store errors; a bad URL's
        ``ValueError`` passes, for :meth:`open` to say so."""
        return translated(self._error, doing, self.table, keep=(ValueError,))

    def maybe_prune(self, prune: Callable[[], Awaitable[None]]) -> None:
        """Start ``prune()`` in the background if one is due and none is running; its store
        error is logged, never raised."""
        now = time.monotonic()
        if now < self._next_prune or (self._pruning is not None and not self._pruning.done()):
            return
        self._next_prune = now + self.prune_interval
        self._pruning = asyncio.create_task(self._logged(prune), name=f"prune {self.table}")

    async def _logged(self, prune: Callable[[], Awaitable[None]]) -> None:
        try:
            await prune()
        except Exception as exc:
            log.warning("store_prune_failed", table=self.table, error=one_line(exc))


class PgBatch(TurnBatches[tuple[Any, ...]]):
    """Calls of one statement made in one turn of the event loop, sent together
    (:class:`TurnBatches`): one pooled connection and one round trip for all of them (asyncpg's
    ``fetchmany``), one batch in flight at a time.

    ``statement`` takes a call's parameters, then the call's number in its batch (one more
    parameter), and returns at most one row, whose ``call`` column is that number: each caller
    gets its own row, or None. A batch runs its calls one after another in one implicit
    transaction, so it sends them sorted by their first ``order`` parameters (the row's key):
    two batches (two replicas') then lock rows in the same order and never wait for each other
    in a cycle. A batch that fails fails each of its calls with the store's error (``doing``
    says what failed); a call alone is sent as a plain statement."""

    def __init__(self, table: PgTable, statement: str, doing: str, *, order: int = 3) -> None:
        super().__init__(f"batch {table.table}")
        self._table = table
        self._statement = statement
        self._doing = doing
        self._order = order

    async def call(self, *args: Any) -> Any:
        """The statement's row for ``args`` (None if it returned none), sent with the calls
        made in the same turn of the loop."""
        return await self._call(args)

    async def _answers(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        order = self._order
        sent = sorted(range(len(calls)), key=lambda n: calls[n][:order])
        numbered = [(*calls[n], n) for n in sent]
        async with self._table.connection(self._doing) as conn:
            if len(numbered) == 1:
                rows = [await conn.fetchrow(self._statement, *numbered[0])]
            else:
                rows = await conn.fetchmany(self._statement, numbered)
        answers: list[Any] = [None] * len(calls)
        for row in rows:
            if row is not None:
                answers[row["call"]] = row
        return answers


__all__ = [
    "DEFAULT_POOL_SIZE",
    "PgBatch",
    "PgTable",
    "RedisScripts",
    "StoreError",
    "TurnBatches",
    "connected_scripts",
    "redis_errors",
]
