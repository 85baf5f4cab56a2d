"""The idempotency stores, memory, Redis and PostgreSQL, held to the same stories.

Redis and PostgreSQL are the real local servers. Each test gets a place of its own: a Redis
key prefix (its keys deleted afterwards) or a PostgreSQL table (dropped afterwards).
``ROUTER_TEST_REDIS_URL`` and ``ROUTER_TEST_POSTGRES_URL`` point them elsewhere.
"""

from __future__ import annotations

import asyncio
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
from consumers.runtime.idempotency import (
    DEFAULT_LEASE,
    Acquired,
    AlreadyDone,
    Claim,
    IdempotencyStore,
    InProgressElsewhere,
    MemoryStore,
)
from consumers.runtime.outcomes import DeadLetter, Deferred, Handled, RetryLater, Skipped
from consumers.runtime.settings import WorkerSettings
from consumers.runtime.shared_stores import (
    DEFAULT_KEY_PREFIX,
    DEFAULT_TABLE,
    DEFAULT_WINDOW,
    IdempotencyStoreError,
    PostgresStore,
    RedisStore,
    idempotency_store_from_url,
)
from tests.databases import POSTGRES_URL, REDIS_URL, drop_table, forget_redis_keys

pytestmark = pytest.mark.database

#: The longest any one wait in these tests may take (seconds).
TIMEOUT = 30.0
#: A window and a lease short enough to wait out.
TINY_WINDOW = 0.3
TINY_LEASE = 0.3
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
            await forget_redis_keys(place)
        elif kind == "postgres":
            await drop_table(place)


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


async def _acquired_again(store: IdempotencyStore, *, since: float, after: float) -> None:
    """Wait until a delivery of :data:`MESSAGE_ID` acquires it again, and check that this was
    not sooner than ``after`` seconds past ``since`` (a ``time.monotonic()`` taken before the
    previous claim was made or completed)."""

    async def acquired() -> bool:
        return isinstance(await _begin(store, APP, MESSAGE_ID), Acquired)

    await _until(acquired, timeout=after + 5)
    assert time.monotonic() - since >= after - 0.05


async def _begin(store: IdempotencyStore, app: str, message_id: str) -> Claim:
    async with asyncio.timeout(TIMEOUT):
        return await store.begin(app, message_id)


async def _acquire(store: IdempotencyStore, app: str, message_id: str) -> Acquired:
    claim = await _begin(store, app, message_id)
    assert isinstance(claim, Acquired), f"{message_id} was not acquired: {claim!r}"
    return claim


async def _complete(store: IdempotencyStore, claim: Acquired) -> bool:
    async with asyncio.timeout(TIMEOUT):
        return await store.complete(claim)


async def _release(store: IdempotencyStore, claim: Acquired) -> bool:
    async with asyncio.timeout(TIMEOUT):
        return await store.release(claim)


async def _handled(store: IdempotencyStore, app: str, message_id: str) -> None:
    """Claim and complete ``message_id``, as the pipeline does around a handler that returned."""
    assert await _complete(store, await _acquire(store, app, message_id)) is True


# --- the stories every backend tells -----------------------------------------------------


async def test_a_new_id_is_acquired_with_a_token_of_its_own(backend: Backend) -> None:
    store = await backend.opened()

    first = await _acquire(store, APP, MESSAGE_ID)
    other = await _acquire(store, APP, "b" * 64)

    assert (first.app, first.message_id) == (APP, MESSAGE_ID)
    assert first.token and other.token and first.token != other.token


async def test_a_completed_id_is_already_done(backend: Backend) -> None:
    # Given an id claimed and completed
    store = await backend.opened()
    await _handled(store, APP, MESSAGE_ID)

    # When it comes again, Then it is done; another id is still new
    assert await _begin(store, APP, MESSAGE_ID) == AlreadyDone()
    assert isinstance(await _begin(store, APP, "b" * 64), Acquired)


async def test_a_claimed_id_is_in_progress_elsewhere_until_completed(backend: Backend) -> None:
    # Given an id claimed and not yet completed
    store = await backend.opened()
    claim = await _acquire(store, APP, MESSAGE_ID)

    # When it comes again, Then another delivery holds it
    assert await _begin(store, APP, MESSAGE_ID) == InProgressElsewhere()

    # And once the holder completed it, it is done
    assert await _complete(store, claim) is True
    assert await _begin(store, APP, MESSAGE_ID) == AlreadyDone()


async def test_a_released_id_can_be_claimed_again(backend: Backend) -> None:
    # Given an id whose handler raised, so its claim was released
    store = await backend.opened()
    claim = await _acquire(store, APP, MESSAGE_ID)
    assert await _release(store, claim) is True

    # When its retry comes, Then it is claimed afresh (with a new token)
    again = await _acquire(store, APP, MESSAGE_ID)
    assert again.token != claim.token
    # And releasing the old claim once more changes nothing
    assert await _release(store, claim) is False
    assert await _begin(store, APP, MESSAGE_ID) == InProgressElsewhere()


async def test_only_one_of_many_simultaneous_begins_acquires(backend: Backend) -> None:
    # Given two stores on one place (two replicas; one store twice for memory)
    stores = [await backend.opened(), await backend.opened()]
    if backend.kind == "memory":
        stores = [stores[0], stores[0]]

    # When 20 deliveries of one id begin at once
    async with asyncio.timeout(TIMEOUT):
        claims = await asyncio.gather(*(stores[i % 2].begin(APP, MESSAGE_ID) for i in range(20)))

    # Then exactly one holds it and the others see it in progress
    assert sum(isinstance(claim, Acquired) for claim in claims) == 1
    assert sum(claim == InProgressElsewhere() for claim in claims) == 19


async def test_applications_are_separate(backend: Backend) -> None:
    store = await backend.opened()
    await _handled(store, APP, MESSAGE_ID)
    assert isinstance(await _begin(store, "crm-sync", MESSAGE_ID), Acquired)
    assert await _begin(store, APP, MESSAGE_ID) == AlreadyDone()


async def test_an_expired_lease_is_taken_over(backend: Backend) -> None:
    # Given a claim whose holder died mid-handler (it never completes nor releases)
    store = await backend.opened(lease=TINY_LEASE)
    started = time.monotonic()
    await _acquire(store, APP, MESSAGE_ID)
    assert await _begin(store, APP, MESSAGE_ID) == InProgressElsewhere()

    # When its lease expires, Then another delivery acquires the id, and not before the lease
    await _acquired_again(store, since=started, after=TINY_LEASE)


async def test_a_stale_holder_cannot_release_or_complete_the_new_claim(backend: Backend) -> None:
    # Given a slow holder whose lease expired and another delivery that took the id over
    store = await backend.opened(lease=TINY_LEASE)
    stale = await _acquire(store, APP, MESSAGE_ID)
    await asyncio.sleep(TINY_LEASE + 0.1)
    current = await _acquire(store, APP, MESSAGE_ID)

    # When the slow holder releases, then completes, Then neither touches the new claim
    assert await _release(store, stale) is False
    assert await _complete(store, stale) is False
    assert await _begin(store, APP, MESSAGE_ID) == InProgressElsewhere()

    # And the new holder completes it
    assert await _complete(store, current) is True
    assert await _begin(store, APP, MESSAGE_ID) == AlreadyDone()
    assert await _release(store, current) is False  # done stays done


async def test_a_holder_past_its_lease_completes_if_nobody_took_over(backend: Backend) -> None:
    # Given a handler slower than its lease, and no other delivery of the id meanwhile
    store = await backend.opened(lease=TINY_LEASE)
    claim = await _acquire(store, APP, MESSAGE_ID)
    await asyncio.sleep(TINY_LEASE + 0.1)

    # When it returns, Then the id is remembered as done all the same
    assert await _complete(store, claim) is True
    assert await _begin(store, APP, MESSAGE_ID) == AlreadyDone()


async def test_a_done_id_is_forgotten_once_the_window_passed(backend: Backend) -> None:
    store = await backend.opened(window=TINY_WINDOW)
    started = time.monotonic()
    await _handled(store, APP, MESSAGE_ID)
    assert await _begin(store, APP, MESSAGE_ID) == AlreadyDone()

    # Then a later delivery acquires it, and not before the window
    await _acquired_again(store, since=started, after=TINY_WINDOW)


async def test_the_window_does_not_cut_a_live_claim_short(backend: Backend) -> None:
    # Given a window shorter than the lease, and a claim held past the window
    store = await backend.opened(window=TINY_WINDOW, lease=60)
    await _acquire(store, APP, MESSAGE_ID)
    await asyncio.sleep(TINY_WINDOW + 0.1)

    # Then the id is still in progress: only the lease ends a claim
    assert await _begin(store, APP, MESSAGE_ID) == InProgressElsewhere()


async def test_closing_twice_and_opening_twice_is_fine(backend: Backend) -> None:
    store = await backend.opened()
    async with asyncio.timeout(TIMEOUT):
        await store.open()
        await _handled(store, APP, MESSAGE_ID)
        await store.close()
        await store.close()


@pytest.mark.parametrize("lease", [0, -1, float("nan"), float("inf")])
def test_a_lease_must_be_positive(backend: Backend, lease: float) -> None:
    with pytest.raises(WorkerConfigError, match="lease"):
        backend.make(lease=lease)


# --- the pipeline around a handler -------------------------------------------------------


def _body() -> bytes:
    return orjson.dumps(
        {"type": "sms.sent", "company": {"company_id": "c-1"}, "nonce": uuid.uuid4().hex}
    )


async def test_the_pipeline_defers_an_id_being_handled_and_skips_it_once_done(
    backend: Backend,
) -> None:
    # Given a worker whose handler waits until the test lets it finish
    store = await backend.opened()
    worker = consumers.Worker("dedupe", idempotency=store)
    finish, calls = asyncio.Event(), 0

    @worker.on("sms.*")
    async def slow(event: consumers.Event) -> None:
        nonlocal calls
        calls += 1
        await finish.wait()

    body = _body()
    async with asyncio.timeout(TIMEOUT):
        first = asyncio.create_task(worker.handle(consumers.Event.from_body(body)))
        while calls == 0:
            await asyncio.sleep(0.01)

        # When a second delivery of the same id arrives while the first is being handled
        second = await worker.handle(consumers.Event.from_body(body))

        # Then it is deferred, not handled; once the first is done, a third is skipped
        assert second == Deferred()
        finish.set()
        assert await first == Handled()
        assert await worker.handle(consumers.Event.from_body(body)) == Skipped("duplicate")
    assert calls == 1


async def test_the_pipeline_releases_a_failed_or_rejected_id(backend: Backend) -> None:
    # Given a handler that fails, then rejects, then succeeds
    store = await backend.opened()
    worker = consumers.Worker("flaky", idempotency=store)
    errors: list[Exception] = [ConnectionError("timeout"), consumers.Reject("bad data")]

    @worker.on("sms.*")
    async def flaky(event: consumers.Event) -> None:
        if errors:
            raise errors.pop(0)

    body = _body()
    async with asyncio.timeout(TIMEOUT):
        # When it is delivered three times (a retry, then a replay from the dead letters)
        outcomes = [await worker.handle(consumers.Event.from_body(body)) for _ in range(3)]

    # Then each later delivery could claim the id, and the last one completed it
    assert [type(o) for o in outcomes] == [RetryLater, DeadLetter, Handled]
    assert await _begin(store, "flaky", consumers.Event.from_body(body).message_id) == (
        AlreadyDone()
    )


# --- what replicas share -----------------------------------------------------------------


async def test_another_replica_sees_the_claim_and_the_completion(shared: Backend) -> None:
    first = await shared.opened()
    second = await shared.opened()
    claim = await _acquire(first, APP, MESSAGE_ID)
    assert await _begin(second, APP, MESSAGE_ID) == InProgressElsewhere()
    assert await _release(second, claim) is True  # the token is the proof, not the store
    held = await _acquire(second, APP, MESSAGE_ID)
    assert await _complete(second, held) is True
    assert await _begin(first, APP, MESSAGE_ID) == AlreadyDone()
    assert isinstance(await _begin(first, "crm-sync", MESSAGE_ID), Acquired)


async def test_a_reopened_store_still_knows(shared: Backend) -> None:
    store = await shared.opened()
    await _handled(store, APP, MESSAGE_ID)
    async with asyncio.timeout(TIMEOUT):
        await store.close()
        await store.open()
    assert await _begin(store, APP, MESSAGE_ID) == AlreadyDone()


async def test_a_closed_store_says_so(shared: Backend) -> None:
    store = shared.make()
    claim = Acquired(APP, MESSAGE_ID, "0" * 32)
    with pytest.raises(IdempotencyStoreError, match="not open"):
        await _begin(store, APP, MESSAGE_ID)
    with pytest.raises(IdempotencyStoreError, match="not open"):
        await _complete(store, claim)
    with pytest.raises(IdempotencyStoreError, match="not open"):
        await _release(store, claim)


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

    body, other = _body(), _body()
    async with asyncio.timeout(TIMEOUT):
        assert await first.handle(consumers.Event.from_body(body)) == Handled()
        assert await second.handle(consumers.Event.from_body(body)) == Skipped("duplicate")
        assert await second.handle(consumers.Event.from_body(other)) == Handled()
    event = consumers.Event.from_body(body)
    assert calls == [event.message_id, consumers.Event.from_body(other).message_id]


async def test_a_store_error_makes_the_delivery_retry(shared: Backend) -> None:
    # Given a worker whose shared store cannot be reached
    store = shared.make()
    worker = consumers.Worker("unreachable", idempotency=store)
    calls: list[str] = []

    @worker.on("sms.*")
    async def count(event: consumers.Event) -> None:
        calls.append(event.message_id)

    # When a delivery comes (the store was never opened: as good as down)
    async with asyncio.timeout(TIMEOUT):
        outcome = await worker.handle(consumers.Event.from_body(_body()))

    # Then it is retried later, and the handler did not run
    assert isinstance(outcome, RetryLater)
    assert isinstance(outcome.error, IdempotencyStoreError)
    assert calls == []


# --- Redis specifics ---------------------------------------------------------------------


@pytest.fixture
async def redis_backend() -> AsyncIterator[Backend]:
    async for provided in _provide("redis"):
        yield provided


@pytest.fixture
async def redis_client() -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


async def test_redis_keys_expire_by_themselves(
    redis_backend: Backend, redis_client: redis.asyncio.Redis
) -> None:
    # Given a store with a 60 s window and a 20 s lease
    store = await redis_backend.opened(window=60, lease=20)
    key = f"{redis_backend.location}:{APP}:{MESSAGE_ID}"

    # When an id is claimed, Then its key lives as long as the lease and holds the token
    claim = await _acquire(store, APP, MESSAGE_ID)
    async with asyncio.timeout(TIMEOUT):
        assert 19_000 < await redis_client.pttl(key) <= 20_000
        assert await redis_client.get(key) == claim.token.encode()

    # And once completed, as long as the window, holding the done marker
    assert await _complete(store, claim) is True
    async with asyncio.timeout(TIMEOUT):
        assert 59_000 < await redis_client.pttl(key) <= 60_000
        assert await redis_client.get(key) == b"1"


async def test_redis_keys_of_an_application_match_its_ids_and_no_others(
    redis_backend: Backend, redis_client: redis.asyncio.Redis
) -> None:
    # Given ids handled by two applications
    store = await redis_backend.opened()
    for app in (APP, "other-app"):
        assert await _complete(store, await _acquire(store, app, MESSAGE_ID)) is True

    # When one application's keys are looked for by the pattern the store gives
    assert isinstance(store, RedisStore)
    async with asyncio.timeout(TIMEOUT):
        found = [key async for key in redis_client.scan_iter(match=store.keys_of(APP))]

    # Then it is that application's id alone
    assert found == [f"{redis_backend.location}:{APP}:{MESSAGE_ID}".encode()]


async def test_redis_ids_the_previous_release_remembered_are_done(
    redis_backend: Backend, redis_client: redis.asyncio.Redis
) -> None:
    # Given a key as the previous release's ``remember`` wrote it (``SET key 1 PX window``)
    key = f"{redis_backend.location}:{APP}:{MESSAGE_ID}"
    async with asyncio.timeout(TIMEOUT):
        await redis_client.set(key, b"1", px=60_000)

    # When a store of this release begins that id, Then it is done
    store = await redis_backend.opened()
    assert await _begin(store, APP, MESSAGE_ID) == AlreadyDone()


async def test_redis_unreachable_is_a_store_error() -> None:
    store = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(IdempotencyStoreError, match="cannot connect to Redis"):
        async with asyncio.timeout(TIMEOUT):
            await store.open()
    with pytest.raises(IdempotencyStoreError, match="not open"):
        await _begin(store, APP, MESSAGE_ID)


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
    await _handled(stores[0], APP, MESSAGE_ID)
    for store in stores:
        assert await _begin(store, APP, MESSAGE_ID) == AlreadyDone()


async def test_postgres_prunes_rows_past_the_window_only(postgres: Backend) -> None:
    # Given an id done past the window, a claim held past it, and an id done just now
    store = await postgres.opened(window=TINY_WINDOW, prune_interval=0)
    await _handled(store, APP, "old")
    await _acquire(store, APP, "held")
    await asyncio.sleep(TINY_WINDOW + 0.1)

    # When a completion starts a prune in the background
    await _handled(store, APP, "new")

    # Then the old id's row goes; the live claim and the new id stay
    async def pruned() -> bool:
        return await _row_count(postgres.location, "old") == 0

    await _until(pruned)
    assert await _row_count(postgres.location, "new") == 1
    assert await _row_count(postgres.location, "held") == 1
    assert await _begin(store, APP, "held") == InProgressElsewhere()


async def test_postgres_prunes_at_most_once_per_interval(postgres: Backend) -> None:
    store = await postgres.opened(window=TINY_WINDOW, prune_interval=3600)
    await _handled(store, APP, "first")  # the first completion prunes (nothing yet)
    await _handled(store, APP, "old")
    await asyncio.sleep(TINY_WINDOW + 0.1)
    await _handled(store, APP, "new")  # no prune due for an hour
    await asyncio.sleep(0.3)
    assert await _row_count(postgres.location, "old") == 1
    assert isinstance(await _begin(store, APP, "old"), Acquired)  # past the window all the same


async def test_postgres_opens_the_previous_releases_table(postgres: Backend) -> None:
    # Given the table as the previous release made it, with an id it remembered just now
    # and one it remembered long before the window
    async with asyncio.timeout(TIMEOUT):
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(
                f"""
                CREATE TABLE {postgres.location} (
                    app TEXT NOT NULL,
                    message_id TEXT NOT NULL,
                    handled_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                    PRIMARY KEY (app, message_id)
                )
                """
            )
            await conn.execute(
                f"INSERT INTO {postgres.location} (app, message_id, handled_at) "
                "VALUES ($1, 'recent', now()), ($1, 'ancient', now() - interval '2 days')",
                APP,
            )
        finally:
            await conn.close()

    # When a store of this release opens it (two replicas: the second finds it up to date)
    store = await postgres.opened()
    await postgres.opened()

    # Then the recent id is done, the ancient one is past the window, a new id is claimable,
    # and claims work as on a fresh table
    assert await _begin(store, APP, "recent") == AlreadyDone()
    assert isinstance(await _begin(store, APP, "ancient"), Acquired)
    claim = await _acquire(store, APP, MESSAGE_ID)
    assert await _begin(store, APP, MESSAGE_ID) == InProgressElsewhere()
    assert await _complete(store, claim) is True
    assert await _begin(store, APP, MESSAGE_ID) == AlreadyDone()


async def test_postgres_rows_an_old_replica_writes_during_an_upgrade_are_done(
    postgres: Backend,
) -> None:
    # Given a table this release opened, and a replica of the previous release still running
    store = await postgres.opened()

    # When that replica remembers an id as it did (no ``done``, ``token`` or ``lease_until``)
    async with asyncio.timeout(TIMEOUT):
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(
                f"INSERT INTO {postgres.location} (app, message_id, handled_at) "
                "VALUES ($1, $2, now())",
                APP,
                MESSAGE_ID,
            )
        finally:
            await conn.close()

    # Then this release reads it as done
    assert await _begin(store, APP, MESSAGE_ID) == AlreadyDone()


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
    await _handled(store, APP, MESSAGE_ID)
    assert await _begin(await shared.opened(), APP, MESSAGE_ID) == AlreadyDone()


@pytest.mark.parametrize("url", [None, REDIS_URL, POSTGRES_URL])
def test_the_factory_passes_the_lease_on(url: str | None) -> None:
    store = idempotency_store_from_url(url, lease=42)
    assert isinstance(store, MemoryStore | RedisStore | PostgresStore)
    assert store.lease == 42


# --- the lease setting -------------------------------------------------------------------


def test_the_lease_setting_defaults_to_five_minutes_and_reads_the_environment() -> None:
    assert WorkerSettings.from_env({}).idempotency_lease == DEFAULT_LEASE == 300.0
    assert WorkerSettings.from_env({"WORKER_IDEMPOTENCY_LEASE": "30"}).idempotency_lease == 30.0


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "soon"])
def test_a_bad_lease_setting_is_one_clear_error(value: str) -> None:
    with pytest.raises(WorkerConfigError, match="WORKER_IDEMPOTENCY_LEASE") as raised:
        WorkerSettings.from_env({"WORKER_IDEMPOTENCY_LEASE": value})
    assert "\n" not in str(raised.value)
