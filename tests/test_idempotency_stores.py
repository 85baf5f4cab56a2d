"""The idempotency stores, memory, Redis and PostgreSQL, held to the same stories.

Redis and PostgreSQL are the real local servers. Each test gets a place of its own: a Redis
key prefix (its keys deleted afterwards) or a PostgreSQL table (dropped afterwards).
``ROUTER_TEST_REDIS_URL`` and ``ROUTER_TEST_POSTGRES_URL`` point them elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio

import consumers
from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.idempotency import IdempotencyStore, MemoryStore
from consumers.runtime.outcomes import Handled, Skipped
from consumers.runtime.shared_stores import (
    DEFAULT_KEY_PREFIX,
    DEFAULT_TABLE,
    DEFAULT_WINDOW,
    IdempotencyStoreError,
    PostgresStore,
    RedisStore,
    idempotency_store_from_url,
)

pytestmark = pytest.mark.database

REDIS_URL = os.environ.get("ROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "ROUTER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
#: The longest any one wait in these tests may take (seconds).
TIMEOUT = 30.0
#: A window short enough to wait out.
TINY_WINDOW = 0.3
APP = "sms-audit"
MESSAGE_ID = "a" * 64


@dataclass
class Backend:
    """Where one test's handled ids live; every :meth:`opened` store shares that place."""

    kind: str
    #: The Redis key prefix or the PostgreSQL table (empty for memory).
    location: str
    stores: list[IdempotencyStore] = field(default_factory=list)

    def make(self, **kwargs: Any) -> IdempotencyStore:
        if self.kind == "memory":
            return MemoryStore(**kwargs)
        if self.kind == "redis":
            return RedisStore(REDIS_URL, key_prefix=self.location, **kwargs)
        return PostgresStore(POSTGRES_URL, table=self.location, **kwargs)

    async def opened(self, **kwargs: Any) -> IdempotencyStore:
        """A store on this place, opened; the fixture closes it after the test."""
        store = self.make(**kwargs)
        async with asyncio.timeout(TIMEOUT):
            await store.open()
        self.stores.append(store)
        return store


async def _provide(kind: str) -> AsyncIterator[Backend]:
    place = f"test_idem_{uuid.uuid4().hex[:16]}"
    backend = Backend(kind, "" if kind == "memory" else place)
    yield backend
    async with asyncio.timeout(TIMEOUT):
        for store in backend.stores:
            await store.close()
        if kind == "redis":
            client = redis.asyncio.Redis.from_url(REDIS_URL)
            try:
                keys = [key async for key in client.scan_iter(match=f"{place}:*")]
                if keys:
                    await client.delete(*keys)
            finally:
                await client.aclose()
        elif kind == "postgres":
            conn = await asyncpg.connect(POSTGRES_URL)
            try:
                await conn.execute(f"DROP TABLE IF EXISTS {place}")
            finally:
                await conn.close()


@pytest.fixture(params=["memory", "redis", "postgres"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """Any backend, in a place no other test uses."""
    async for provided in _provide(request.param):
        yield provided


@pytest.fixture(params=["redis", "postgres"])
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A backend replicas share (not memory), in a place no other test uses."""
    async for provided in _provide(request.param):
        yield provided


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float = TIMEOUT) -> float:
    """Poll ``condition`` until it holds; the seconds that took (TimeoutError past timeout)."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.02)
    return time.monotonic() - started


async def _seen(store: IdempotencyStore, app: str, message_id: str) -> bool:
    async with asyncio.timeout(TIMEOUT):
        return await store.seen(app, message_id)


async def _remember(store: IdempotencyStore, app: str, message_id: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        await store.remember(app, message_id)


# --- the stories every backend tells -----------------------------------------------------


async def test_an_unseen_id_is_not_seen(backend: Backend) -> None:
    store = await backend.opened()
    assert await _seen(store, APP, MESSAGE_ID) is False


async def test_a_remembered_id_is_seen(backend: Backend) -> None:
    store = await backend.opened()
    await _remember(store, APP, MESSAGE_ID)
    assert await _seen(store, APP, MESSAGE_ID) is True
    assert await _seen(store, APP, "b" * 64) is False


async def test_remembering_twice_is_fine(backend: Backend) -> None:
    store = await backend.opened()
    await _remember(store, APP, MESSAGE_ID)
    await _remember(store, APP, MESSAGE_ID)
    assert await _seen(store, APP, MESSAGE_ID) is True


async def test_applications_are_separate(backend: Backend) -> None:
    store = await backend.opened()
    await _remember(store, APP, MESSAGE_ID)
    assert await _seen(store, "crm-sync", MESSAGE_ID) is False
    await _remember(store, "crm-sync", MESSAGE_ID)
    assert await _seen(store, "crm-sync", MESSAGE_ID) is True


async def test_an_id_is_forgotten_once_the_window_passed(backend: Backend) -> None:
    store = await backend.opened(window=TINY_WINDOW)
    started = time.monotonic()
    await _remember(store, APP, MESSAGE_ID)
    assert await _seen(store, APP, MESSAGE_ID) is True

    async def forgotten() -> bool:
        return not await _seen(store, APP, MESSAGE_ID)

    await _until(forgotten, timeout=TINY_WINDOW + 5)
    # Not forgotten before the window: the remembering happened after ``started``.
    assert time.monotonic() - started >= TINY_WINDOW - 0.05


async def test_remembering_again_starts_the_window_again(backend: Backend) -> None:
    window = 1.0
    store = await backend.opened(window=window)
    await _remember(store, APP, MESSAGE_ID)
    await asyncio.sleep(window * 0.6)
    await _remember(store, APP, MESSAGE_ID)
    await asyncio.sleep(window * 0.6)  # past the first window, within the second
    assert await _seen(store, APP, MESSAGE_ID) is True


async def test_closing_twice_and_opening_twice_is_fine(backend: Backend) -> None:
    store = await backend.opened()
    async with asyncio.timeout(TIMEOUT):
        await store.open()
        await store.remember(APP, MESSAGE_ID)
        await store.close()
        await store.close()


# --- what replicas share -----------------------------------------------------------------


async def test_another_replica_sees_what_one_remembered(shared: Backend) -> None:
    first = await shared.opened()
    second = await shared.opened()
    assert await _seen(second, APP, MESSAGE_ID) is False
    await _remember(first, APP, MESSAGE_ID)
    assert await _seen(second, APP, MESSAGE_ID) is True
    assert await _seen(second, "crm-sync", MESSAGE_ID) is False


async def test_a_reopened_store_still_knows(shared: Backend) -> None:
    store = await shared.opened()
    await _remember(store, APP, MESSAGE_ID)
    async with asyncio.timeout(TIMEOUT):
        await store.close()
        await store.open()
    assert await _seen(store, APP, MESSAGE_ID) is True


async def test_a_closed_store_says_so(shared: Backend) -> None:
    store = shared.make()
    with pytest.raises(IdempotencyStoreError, match="not open"):
        await _seen(store, APP, MESSAGE_ID)
    with pytest.raises(IdempotencyStoreError, match="not open"):
        await _remember(store, APP, MESSAGE_ID)


async def test_the_pipeline_skips_what_another_replica_handled(shared: Backend) -> None:
    calls: list[str] = []

    def replica() -> consumers.Worker:
        worker = consumers.Worker("dedupe", idempotency=shared.make())

        @worker.on("sms.*")
        async def count(event: consumers.Event) -> None:
            calls.append(event.message_id)

        return worker

    first, second = replica(), replica()
    assert first.idempotency is not second.idempotency
    shared.stores.extend([first.idempotency, second.idempotency])
    async with asyncio.timeout(TIMEOUT):
        await first.idempotency.open()
        await second.idempotency.open()

    body = orjson.dumps(
        {"type": "sms.sent", "company": {"company_id": "c-1"}, "nonce": uuid.uuid4().hex}
    )
    other = orjson.dumps(
        {"type": "sms.sent", "company": {"company_id": "c-1"}, "nonce": uuid.uuid4().hex}
    )
    async with asyncio.timeout(TIMEOUT):
        assert await first.handle(consumers.Event.from_body(body)) == Handled()
        assert await second.handle(consumers.Event.from_body(body)) == Skipped("duplicate")
        assert await second.handle(consumers.Event.from_body(other)) == Handled()
    event = consumers.Event.from_body(body)
    assert calls == [event.message_id, consumers.Event.from_body(other).message_id]


# --- Redis specifics ---------------------------------------------------------------------


async def test_redis_keys_expire_by_themselves() -> None:
    prefix = f"test_idem_{uuid.uuid4().hex[:16]}"
    store = RedisStore(REDIS_URL, key_prefix=prefix, window=60)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        async with asyncio.timeout(TIMEOUT):
            await store.open()
            await store.remember(APP, MESSAGE_ID)
            key = f"{prefix}:{APP}:{MESSAGE_ID}"
            ttl_ms = await client.pttl(key)
            assert 59_000 < ttl_ms <= 60_000
    finally:
        async with asyncio.timeout(TIMEOUT):
            await client.delete(f"{prefix}:{APP}:{MESSAGE_ID}")
            await client.aclose()
            await store.close()


async def test_redis_unreachable_is_a_store_error() -> None:
    store = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(IdempotencyStoreError, match="cannot connect to Redis"):
        async with asyncio.timeout(TIMEOUT):
            await store.open()
    with pytest.raises(IdempotencyStoreError, match="not open"):
        await _seen(store, APP, MESSAGE_ID)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:notaport/0", "redis://127.0.0.1:99999/0", "http://127.0.0.1/"]
)
def test_a_malformed_redis_url_is_a_config_error(url: str) -> None:
    with pytest.raises(WorkerConfigError, match="invalid Redis URL"):
        RedisStore(url)


def test_a_redis_error_hides_the_password() -> None:
    with pytest.raises(WorkerConfigError) as raised:
        RedisStore("redis://user:s3cret@127.0.0.1:notaport/0")
    assert "s3cret" not in str(raised.value)
    assert "user:***@" in str(raised.value)


# --- PostgreSQL specifics ----------------------------------------------------------------


async def _row_count(table: str, message_id: str) -> int:
    async with asyncio.timeout(TIMEOUT):
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            count = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE message_id = $1", message_id
            )
        finally:
            await conn.close()
    return int(count)


@pytest.fixture
async def postgres() -> AsyncIterator[Backend]:
    async for provided in _provide("postgres"):
        yield provided


async def test_postgres_replicas_opening_a_fresh_table_at_once(postgres: Backend) -> None:
    stores = [postgres.make() for _ in range(6)]
    postgres.stores.extend(stores)
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(*(store.open() for store in stores))
    await _remember(stores[0], APP, MESSAGE_ID)
    for store in stores:
        assert await _seen(store, APP, MESSAGE_ID) is True


async def test_postgres_prunes_rows_past_the_window_only(postgres: Backend) -> None:
    store = await postgres.opened(window=TINY_WINDOW, prune_interval=0)
    await _remember(store, APP, "old")
    await asyncio.sleep(TINY_WINDOW + 0.1)
    await _remember(store, APP, "new")  # starts a prune in the background

    async def pruned() -> bool:
        return await _row_count(postgres.location, "old") == 0

    await _until(pruned)
    assert await _row_count(postgres.location, "new") == 1


async def test_postgres_prunes_at_most_once_per_interval(postgres: Backend) -> None:
    store = await postgres.opened(window=TINY_WINDOW, prune_interval=3600)
    await _remember(store, APP, "first")  # the first remember prunes (nothing yet)
    await _remember(store, APP, "old")
    await asyncio.sleep(TINY_WINDOW + 0.1)
    await _remember(store, APP, "new")  # no prune due for an hour
    await asyncio.sleep(0.3)
    assert await _row_count(postgres.location, "old") == 1
    assert await _seen(store, APP, "old") is False


async def test_postgres_unreachable_is_a_store_error() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/test", timeout=5)
    with pytest.raises(IdempotencyStoreError, match="cannot connect"):
        async with asyncio.timeout(TIMEOUT):
            await store.open()


async def test_a_malformed_postgres_url_is_a_config_error() -> None:
    store = PostgresStore("postgresql://postgres:s3cret@127.0.0.1:notaport/test")
    with pytest.raises(WorkerConfigError, match="invalid PostgreSQL URL") as raised:
        async with asyncio.timeout(TIMEOUT):
            await store.open()
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize("table", ["Handled", "1handled", "handled; drop table x", "h" * 41, ""])
def test_a_bad_table_name_is_a_config_error(table: str) -> None:
    with pytest.raises(WorkerConfigError, match="invalid idempotency table name"):
        PostgresStore(POSTGRES_URL, table=table)


@pytest.mark.parametrize("window", [0, -1, float("nan"), float("inf")])
def test_a_window_must_be_positive(window: float) -> None:
    with pytest.raises(WorkerConfigError, match="window"):
        PostgresStore(POSTGRES_URL, window=window)
    with pytest.raises(WorkerConfigError, match="window"):
        RedisStore(REDIS_URL, window=window)


# --- the factory -------------------------------------------------------------------------


@pytest.mark.parametrize("url", [None, "memory", "MEMORY"])
def test_the_factory_gives_memory(url: str | None) -> None:
    store = idempotency_store_from_url(url, window=5)
    assert isinstance(store, MemoryStore)
    assert store.window == 5


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://h:6380/1", "REDIS://h"])
def test_the_factory_gives_redis(url: str) -> None:
    store = idempotency_store_from_url(url, window=5, key_prefix="p")
    assert isinstance(store, RedisStore)
    assert (store.url, store.window, store.key_prefix) == (url, 5, "p")
    assert isinstance(idempotency_store_from_url(url), RedisStore)
    assert RedisStore(url).window == DEFAULT_WINDOW
    assert RedisStore(url).key_prefix == DEFAULT_KEY_PREFIX


@pytest.mark.parametrize("url", [POSTGRES_URL, "postgres://u@h/db", "PostgreSQL://h/db"])
def test_the_factory_gives_postgres(url: str) -> None:
    store = idempotency_store_from_url(url, window=5, table="handled_ids")
    assert isinstance(store, PostgresStore)
    assert (store.url, store.window, store.table) == (url, 5, "handled_ids")
    assert PostgresStore(url).table == DEFAULT_TABLE


@pytest.mark.parametrize(
    "url",
    ["", "memory://", "mysql://u@h/db", "sqlite:///handled.db", "redis:/h", "127.0.0.1:6379"],
)
def test_the_factory_refuses_other_urls(url: str) -> None:
    with pytest.raises(WorkerConfigError) as raised:
        idempotency_store_from_url(url)
    message = str(raised.value)
    assert "\n" not in message
    for form in ("memory", "redis://", "rediss://", "postgresql://"):
        assert form in message


def test_the_factory_hides_a_password() -> None:
    with pytest.raises(WorkerConfigError) as raised:
        idempotency_store_from_url("mysql://user:s3cret@h/db")
    assert "s3cret" not in str(raised.value)


async def test_a_factory_store_works(shared: Backend) -> None:
    url = REDIS_URL if shared.kind == "redis" else POSTGRES_URL
    place = {"key_prefix" if shared.kind == "redis" else "table": shared.location}
    store = idempotency_store_from_url(url, **place)
    async with asyncio.timeout(TIMEOUT):
        await store.open()
    shared.stores.append(store)
    await _remember(store, APP, MESSAGE_ID)
    assert await _seen(await shared.opened(), APP, MESSAGE_ID) is True
