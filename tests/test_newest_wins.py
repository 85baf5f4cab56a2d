"""Newest wins per key, one handler per key at a time (issue 29, items 2, 3 and 5).

The decision alone; the stores (memory, and the real local Redis and PostgreSQL, each test in
a place of its own) under concurrent compare-and-sets and leases; the lanes; the guard around
a handler; and a property: random histories of subscribe, unsubscribe and attribute events,
shuffled, duplicated and delayed, run by two replicas at once through the memory store, end
with every key in the state of its newest event, and no opt-out lost.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.event import Event
from consumers.runtime.lanes import Lanes, Leases
from consumers.runtime.newest import (
    DEFAULT_SKEW,
    FUTURE,
    NO_TIME,
    Apply,
    Recorded,
    Stale,
    Unordered,
    decide,
    is_unsubscribe,
)
from consumers.runtime.newest_guard import NewestWins
from consumers.runtime.newest_open import newest_store_from_url
from consumers.runtime.newest_postgres import PostgresNewestStore
from consumers.runtime.newest_redis import RedisNewestStore
from consumers.runtime.newest_stores import (
    Leased,
    MemoryNewestStore,
    NewestStore,
    NewestStoreError,
    from_rank,
    rank,
)
from consumers.runtime.outcomes import Deferred, Handled, Outcome, Skipped
from consumers.runtime.store_connections import RedisScripts
from router.contract.names import EVENT_TIME_HEADER, SUBJECT_KEY_HEADER
from tests.databases import POSTGRES_URL, REDIS_URL, drop_table, forget_redis_keys

#: The longest any one wait in these tests may take (seconds).
TIMEOUT = 30.0
APP, FAMILY, KEY = "sms-audit", "subscription", "k1"
NOW_MS = 1_760_000_000_000
#: An event time well in the past, so no clock makes it "future".
T0 = 1_700_000_000_000


# --- the decision ------------------------------------------------------------------------


def _decide(time_ms: int | None, unsubscribe: bool, newest: Recorded | None) -> object:
    return decide(time_ms, unsubscribe, newest, now_ms=NOW_MS)


def test_an_event_without_a_time_is_unordered_whatever_was_recorded() -> None:
    for newest in (None, Recorded(T0), Recorded(T0, True)):
        for unsubscribe in (False, True):
            assert _decide(None, unsubscribe, newest) == Unordered(NO_TIME)


def test_the_first_event_of_a_key_is_applied() -> None:
    assert _decide(T0, False, None) == Apply(Recorded(T0))
    assert _decide(T0, True, None) == Apply(Recorded(T0, True))


@pytest.mark.parametrize("recorded_unsubscribe", [False, True])
@pytest.mark.parametrize("unsubscribe", [False, True])
def test_a_newer_event_is_applied_and_an_older_one_is_stale_with_both_times(
    unsubscribe: bool, recorded_unsubscribe: bool
) -> None:
    newest = Recorded(T0, recorded_unsubscribe)
    assert _decide(T0 + 1, unsubscribe, newest) == Apply(Recorded(T0 + 1, unsubscribe))
    assert _decide(T0 - 1, unsubscribe, newest) == Stale(Recorded(T0 - 1, unsubscribe), newest)


@pytest.mark.parametrize(
    ("unsubscribe", "recorded_unsubscribe", "applied"),
    [(False, False, False), (True, False, True), (False, True, False), (True, True, False)],
)
def test_on_equal_times_only_an_unsubscribe_over_a_subscribe_is_applied(
    unsubscribe: bool, recorded_unsubscribe: bool, applied: bool
) -> None:
    verdict = _decide(T0, unsubscribe, Recorded(T0, recorded_unsubscribe))
    assert isinstance(verdict, Apply) is applied
    assert isinstance(verdict, Stale) is not applied


def test_a_time_beyond_the_skew_is_unordered_and_one_within_it_is_applied() -> None:
    skew_ms = int(DEFAULT_SKEW * 1000)
    assert _decide(NOW_MS + skew_ms, False, Recorded(T0)) == Apply(Recorded(NOW_MS + skew_ms))
    for newest in (None, Recorded(T0), Recorded(NOW_MS + 10 * skew_ms, True)):
        assert _decide(NOW_MS + skew_ms + 1, True, newest) == Unordered(FUTURE)
    assert decide(NOW_MS + 2_000, False, None, now_ms=NOW_MS, skew=1.0) == Unordered(FUTURE)


@given(
    st.integers(0, 2**45),
    st.booleans(),
    st.none() | st.tuples(st.integers(0, 2**45), st.booleans()),
)
def test_the_decision_orders_events_by_time_then_unsubscribe(
    time_ms: int, unsubscribe: bool, recorded: tuple[int, bool] | None
) -> None:
    newest = None if recorded is None else Recorded(*recorded)
    event = Recorded(time_ms, unsubscribe)
    verdict = decide(time_ms, unsubscribe, newest, now_ms=2**46)
    if newest is None or (time_ms, unsubscribe) > (newest.time_ms, newest.unsubscribe):
        assert verdict == Apply(event)
    else:
        assert verdict == Stale(event, newest)
    assert from_rank(rank(event)) == event


def test_unsubscribes_are_the_unsubscribed_types() -> None:
    assert is_unsubscribe("sms.unsubscribed") and is_unsubscribe("email.unsubscribed")
    assert not is_unsubscribe("sms.subscribed") and not is_unsubscribe("custom_attribute.set")


# --- the stores --------------------------------------------------------------------------


@dataclass
class Place:
    """Where one test's newest events live; every :meth:`opened` store shares it."""

    kind: str
    location: str
    stores: list[NewestStore] = field(default_factory=list)
    memory: MemoryNewestStore | None = None

    async def opened(self, **kwargs: Any) -> NewestStore:
        store: NewestStore
        if self.kind == "memory":  # one process: every "replica" shares the one store
            self.memory = self.memory or MemoryNewestStore(**kwargs)
            store = self.memory
        elif self.kind == "redis":
            store = RedisNewestStore(REDIS_URL, key_prefix=self.location, **kwargs)
        else:
            store = PostgresNewestStore(POSTGRES_URL, table=self.location, **kwargs)
        async with asyncio.timeout(TIMEOUT):
            await store.open()
        self.stores.append(store)
        return store


@pytest.fixture(params=["memory", "redis", "postgres"])
async def place(request: pytest.FixtureRequest) -> AsyncIterator[Place]:
    """A store's place no other test uses; cleaned afterwards."""
    kind = str(request.param)
    if kind != "memory":
        request.applymarker(pytest.mark.database)
    provided = Place(kind, f"test_newest_{uuid.uuid4().hex[:16]}")
    yield provided
    async with asyncio.timeout(TIMEOUT):
        for store in provided.stores:
            await store.close()
        if kind == "redis":
            await forget_redis_keys(provided.location)
        elif kind == "postgres":
            await drop_table(provided.location)


async def _within(call: Awaitable[Any]) -> Any:
    async with asyncio.timeout(TIMEOUT):
        return await call


async def _until(condition: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not await condition():
            await asyncio.sleep(0.02)


async def test_a_key_remembers_only_a_newer_event_or_an_unsubscribe_on_a_tie(place: Place) -> None:
    # Given a key with nothing recorded
    store = await place.opened()
    assert await _within(store.newest(APP, FAMILY, KEY)) is None

    # When events are recorded, Then only a greater one moves the newest
    assert await _within(store.record(APP, FAMILY, KEY, Recorded(T0 + 5))) is True
    assert await _within(store.record(APP, FAMILY, KEY, Recorded(T0 + 4, True))) is False
    assert await _within(store.record(APP, FAMILY, KEY, Recorded(T0 + 5))) is False
    assert await _within(store.record(APP, FAMILY, KEY, Recorded(T0 + 5, True))) is True
    assert await _within(store.record(APP, FAMILY, KEY, Recorded(T0 + 5))) is False
    assert await _within(store.newest(APP, FAMILY, KEY)) == Recorded(T0 + 5, True)

    # And the application, the family and the key each make another key
    for other in (("other-app", FAMILY, KEY), (APP, "attribute", KEY), (APP, FAMILY, "k2")):
        assert await _within(store.newest(*other)) is None


async def test_fifty_concurrent_records_leave_the_greatest(place: Place) -> None:
    # Given five replicas' stores on one place, and 50 events of one key at random times
    stores = [await place.opened() for _ in range(5)]
    events = [Recorded(T0 + random.randrange(20), random.random() < 0.5) for _ in range(50)]

    # When all are recorded at once
    await _within(
        asyncio.gather(
            *(stores[n % 5].record(APP, FAMILY, KEY, event) for n, event in enumerate(events))
        )
    )

    # Then the newest is the greatest: the latest time, an unsubscribe if one had it
    assert await _within(stores[0].newest(APP, FAMILY, KEY)) == max(events)


async def test_an_unsubscribe_wins_a_concurrent_tie(place: Place) -> None:
    stores = [await place.opened() for _ in range(5)]
    events = [Recorded(T0, n == 37) for n in range(50)]

    wins = await _within(
        asyncio.gather(
            *(stores[n % 5].record(APP, FAMILY, KEY, event) for n, event in enumerate(events))
        )
    )

    assert await _within(stores[0].newest(APP, FAMILY, KEY)) == Recorded(T0, True)
    assert wins[37] is True and sum(wins) <= 2


async def test_a_newest_event_is_forgotten_after_the_retention(place: Place) -> None:
    # Given a key recorded with a retention of a third of a second
    store = await place.opened(retention=0.3)
    started = time.monotonic()
    await _within(store.record(APP, FAMILY, KEY, Recorded(T0 + 9)))

    # When the retention passes, Then the key is forgotten and an older event records again
    async def forgotten() -> bool:
        return await store.newest(APP, FAMILY, KEY) is None

    await _until(forgotten)
    assert time.monotonic() - started >= 0.25
    assert await _within(store.acquire_and_read(APP, FAMILY, KEY, "me", 30.0)) == Leased(None)
    assert await _within(store.record(APP, FAMILY, KEY, Recorded(T0))) is True


@pytest.mark.database
async def test_postgres_deletes_the_rows_past_the_retention() -> None:
    place = Place("postgres", f"test_newest_{uuid.uuid4().hex[:16]}")
    try:
        # Given a key recorded, and the retention passed
        store = await place.opened(retention=0.2, prune_interval=0.0)
        await _within(store.record(APP, FAMILY, "old", Recorded(T0)))
        await asyncio.sleep(0.3)

        # When another key is recorded (which prunes in the background)
        await _within(store.record(APP, FAMILY, "new", Recorded(T0)))

        # Then the old key's row is deleted
        async def pruned() -> bool:
            conn = await asyncpg.connect(POSTGRES_URL)
            try:
                keys = await conn.fetch(f"SELECT key FROM {place.location}")
            finally:
                await conn.close()
            return [row["key"] for row in keys] == ["new"]

        await _until(pruned)
    finally:
        for store in place.stores:
            await store.close()
        await drop_table(place.location)


async def test_a_memory_store_is_bounded() -> None:
    # Given a memory store of two keys at most
    store = MemoryNewestStore(max_entries=2)

    # When three keys are recorded, Then the first one recorded is forgotten
    for key in ("a", "b", "c"):
        await store.record(APP, FAMILY, key, Recorded(T0))
    assert await store.newest(APP, FAMILY, "a") is None
    assert await store.newest(APP, FAMILY, "c") == Recorded(T0)


async def test_a_lease_is_held_by_one_owner_until_released(place: Place) -> None:
    one, two = await place.opened(), await place.opened()

    assert await _within(one.acquire(APP, FAMILY, KEY, "one", 30.0)) is True
    assert await _within(two.acquire(APP, FAMILY, KEY, "two", 30.0)) is False
    assert await _within(one.acquire(APP, FAMILY, KEY, "one", 30.0)) is True  # extended
    assert await _within(two.acquire(APP, FAMILY, "k2", "two", 30.0)) is True
    assert await _within(two.release(APP, FAMILY, KEY, "two")) is False
    assert await _within(one.release(APP, FAMILY, KEY, "one")) is True
    assert await _within(two.acquire(APP, FAMILY, KEY, "two", 30.0)) is True


async def test_twenty_concurrent_acquires_give_the_lease_to_one(place: Place) -> None:
    stores = [await place.opened() for _ in range(4)]
    held = await _within(
        asyncio.gather(
            *(stores[n % 4].acquire(APP, FAMILY, KEY, f"owner-{n}", 30.0) for n in range(20))
        )
    )
    assert sum(held) == 1


async def test_a_lease_left_by_a_killed_holder_lapses(place: Place) -> None:
    # Given a holder that took a 0.4 s lease and died without releasing it
    store = await place.opened()
    started = time.monotonic()
    assert await _within(store.acquire(APP, FAMILY, KEY, "killed", 0.4)) is True

    # When another owner asks, Then it gets the key once the lease lapsed, not before
    async def acquired() -> bool:
        return await store.acquire(APP, FAMILY, KEY, "survivor", 30.0)

    await _until(acquired)
    assert time.monotonic() - started >= 0.35


async def test_a_lease_is_taken_with_the_newest_and_released_with_the_next(place: Place) -> None:
    # Given a key whose newest event is recorded, and two replicas
    one, two = await place.opened(), await place.opened()
    await _within(one.record(APP, FAMILY, KEY, Recorded(T0 + 5)))

    # When one takes the key's lease, Then it reads the newest in the same step
    assert await _within(one.acquire_and_read(APP, FAMILY, KEY, "one", 30.0)) == Leased(
        Recorded(T0 + 5)
    )
    # And the other, while it is held, reads nothing and gets no lease
    assert await _within(two.acquire_and_read(APP, FAMILY, KEY, "two", 30.0)) is None

    # When the holder records a newer event as it releases
    assert await _within(one.record_and_release(APP, FAMILY, KEY, "one", Recorded(T0 + 9)))

    # Then the other takes the key at once and reads that event
    assert await _within(two.acquire_and_read(APP, FAMILY, KEY, "two", 30.0)) == Leased(
        Recorded(T0 + 9)
    )
    # And an older event released with the lease leaves the newest, and frees the lease
    assert await _within(two.record_and_release(APP, FAMILY, KEY, "two", Recorded(T0 + 3)))
    assert await _within(one.acquire_and_read(APP, FAMILY, KEY, "one", 30.0)) == Leased(
        Recorded(T0 + 9)
    )
    # And a key with nothing recorded is taken with no newest
    assert await _within(one.acquire_and_read(APP, FAMILY, "k2", "one", 30.0)) == Leased(None)


async def test_recording_without_the_lease_records_and_leaves_the_holders_lease(
    place: Place,
) -> None:
    # Given a key held by another replica
    store = await place.opened()
    assert await _within(store.acquire(APP, FAMILY, KEY, "holder", 30.0)) is True

    # When a replica that lost the lease records an unsubscribe on a tie as it releases
    await _within(store.record(APP, FAMILY, KEY, Recorded(T0)))
    released = await _within(store.record_and_release(APP, FAMILY, KEY, "lost", Recorded(T0, True)))

    # Then it is told it did not hold the lease, the event is the newest all the same,
    # and the holder keeps the key
    assert released is False
    assert await _within(store.newest(APP, FAMILY, KEY)) == Recorded(T0, True)
    assert await _within(store.acquire_and_read(APP, FAMILY, KEY, "other", 30.0)) is None

    # And on a key never taken (or pruned meanwhile), the event is recorded as well
    released = await _within(store.record_and_release(APP, FAMILY, "k2", "lost", Recorded(T0)))
    assert released is False
    assert await _within(store.newest(APP, FAMILY, "k2")) == Recorded(T0)


async def test_fifty_concurrent_takes_and_releases_leave_the_greatest_and_one_holder(
    place: Place,
) -> None:
    # Given five replicas' stores on one place, and 50 events of one key at random times
    stores = [await place.opened() for _ in range(5)]
    events = [Recorded(T0 + random.randrange(20), random.random() < 0.5) for _ in range(50)]
    holders = 0

    async def handle(n: int, event: Recorded) -> bool:
        nonlocal holders
        owner, store = f"owner-{n}", stores[n % 5]
        while await store.acquire_and_read(APP, FAMILY, KEY, owner, 30.0) is None:
            await asyncio.sleep(0.001)
        holders += 1
        alone = holders == 1
        await asyncio.sleep(0)
        holders -= 1
        released = await store.record_and_release(APP, FAMILY, KEY, owner, event)
        return alone and released

    # When each takes the key's lease and records its event as it releases, all at once
    alone = await _within(asyncio.gather(*(handle(n, e) for n, e in enumerate(events))))

    # Then each held the key alone, and the newest is the greatest of them
    assert all(alone)
    assert await _within(stores[0].newest(APP, FAMILY, KEY)) == max(events)


@pytest.mark.database
@pytest.mark.database
async def test_redis_keys_of_an_application_match_each_of_its_keys_and_no_others() -> None:
    # Given a store that recorded a time and holds a lease for two applications
    prefix = f"test_newest_{uuid.uuid4().hex[:16]}"
    store = RedisNewestStore(REDIS_URL, key_prefix=prefix)
    client = redis.asyncio.Redis.from_url(REDIS_URL, socket_timeout=TIMEOUT)
    try:
        await _within(store.open())
        for app in (APP, "other-app"):
            assert await _within(store.record(app, FAMILY, KEY, Recorded(T0))) is True
            assert await _within(store.acquire(app, FAMILY, KEY, "owner", 30.0)) is True

        # When its keys are looked for by the pattern the store gives for one application
        found = [key async for key in client.scan_iter(match=store.keys_of(APP))]

        # Then they are that application's keys, both kinds, and none of the other's
        everything = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        assert len(found) == 2 and len(everything) == 4
        assert all(APP.encode() in key and b"other-app" not in key for key in found)
    finally:
        await store.close()
        await client.aclose()
        await forget_redis_keys(prefix)


async def test_redis_script_calls_made_together_each_get_their_own_answer() -> None:
    # Given a script Redis has never seen (not loaded: the first calls find it missing)
    client = redis.asyncio.Redis.from_url(REDIS_URL, socket_timeout=TIMEOUT)
    source = (
        f"-- {uuid.uuid4().hex}\n"
        "if ARGV[1] == 'bad' then return redis.error_reply('a bad argument') end\n"
        "return ARGV[1]"
    )
    scripts = RedisScripts(client, {"echo": source})
    try:
        # When 50 calls are made at once, one of them with an argument the script refuses
        arguments = ["bad" if n == 7 else str(n) for n in range(50)]
        answers = await _within(
            asyncio.gather(
                *(scripts.call("echo", [], [argument]) for argument in arguments),
                return_exceptions=True,
            )
        )

        # Then each call gets its own answer, and the refused one its error alone
        assert isinstance(answers[7], ResponseError)
        assert [a for n, a in enumerate(answers) if n != 7] == [
            a.encode() for n, a in enumerate(arguments) if n != 7
        ]
        # And a call made alone is answered as well
        assert await _within(scripts.call("echo", [], ["alone"])) == b"alone"
    finally:
        await scripts.close()
        await client.aclose()


async def test_redis_script_calls_made_together_all_fail_when_redis_cannot_be_reached() -> None:
    # Given scripts on a Redis no one listens at
    unreachable = "redis://127.0.0.1:1/0"
    client = redis.asyncio.Redis.from_url(unreachable, socket_connect_timeout=1)
    scripts = RedisScripts(client, {"echo": "return ARGV[1]"})
    try:
        # When calls are made at once, Then each gets the connection's error
        answers = await _within(
            asyncio.gather(
                *(scripts.call("echo", [], [str(n)]) for n in range(5)), return_exceptions=True
            )
        )
        assert all(isinstance(answer, RedisConnectionError) for answer in answers)
    finally:
        await scripts.close()
        await client.aclose()

    # And a store there cannot be opened: its own error says so
    with pytest.raises(NewestStoreError, match="cannot connect to Redis"):
        await _within(RedisNewestStore(unreachable, timeout=1.0).open())


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        (None, MemoryNewestStore),
        ("memory", MemoryNewestStore),
        (REDIS_URL, RedisNewestStore),
        (POSTGRES_URL, PostgresNewestStore),
    ],
)
def test_a_url_names_its_store_as_the_idempotency_url_does(url: str | None, kind: type) -> None:
    assert isinstance(newest_store_from_url(url, retention=60.0), kind)


def test_a_bad_url_retention_or_pool_size_is_a_configuration_error() -> None:
    with pytest.raises(WorkerConfigError):
        newest_store_from_url("mysql://db/x")
    with pytest.raises(WorkerConfigError):
        MemoryNewestStore(retention=0)
    with pytest.raises(WorkerConfigError):
        PostgresNewestStore(POSTGRES_URL, pool_size=0)


# --- the lanes ---------------------------------------------------------------------------


async def test_a_keys_turns_run_one_at_a_time_in_arrival_order() -> None:
    # Given 20 deliveries of one key arriving in order, each handler taking a random while
    lanes, started, running = Lanes(), list[int](), set[int]()

    async def handle(n: int) -> None:
        async with lanes.turn(KEY):
            assert not running, "two handlers of one key ran at once"
            running.add(n)
            started.append(n)
            for _ in range(random.randrange(4)):
                await asyncio.sleep(0)
            running.discard(n)

    # When they all run at once, Then they started in arrival order, and the lane is gone
    await _within(asyncio.gather(*(handle(n) for n in range(20))))
    assert started == list(range(20))
    assert len(lanes) == 0


async def test_other_keys_run_while_a_key_is_busy() -> None:
    # Given a handler of key A that waits for a signal
    lanes, release = Lanes(), asyncio.Event()

    async def slow() -> None:
        async with lanes.turn("a"):
            await release.wait()

    blocked = asyncio.create_task(slow())
    queued = asyncio.create_task(slow())
    await asyncio.sleep(0)  # both have taken their turns of key A

    # When key B's handler comes, Then it runs to its end while A's are still waiting
    async def quick() -> str:
        async with lanes.turn("b"):
            return "done"

    assert await _within(quick()) == "done"
    assert len(lanes) == 1 and not blocked.done()
    release.set()
    await _within(asyncio.gather(blocked, queued))
    assert len(lanes) == 0


async def test_a_turn_cancelled_while_waiting_does_not_stall_its_lane() -> None:
    lanes, release, ran = Lanes(), asyncio.Event(), []

    async def turn(n: int, wait: bool) -> None:
        async with lanes.turn(KEY):
            ran.append(n)
            if wait:
                await release.wait()

    first = asyncio.create_task(turn(1, True))
    second = asyncio.create_task(turn(2, False))
    third = asyncio.create_task(turn(3, False))
    await asyncio.sleep(0)
    second.cancel()
    release.set()
    await _within(asyncio.gather(first, third))
    assert ran == [1, 3] and second.cancelled() and len(lanes) == 0


async def test_a_held_lease_is_renewed_while_its_handler_runs() -> None:
    # Given a 0.3 s lease held by a handler that runs for a second
    store = MemoryNewestStore()
    mine, theirs = Leases(store, APP, lease=0.3), Leases(store, APP, lease=0.3)
    lease = mine.of(FAMILY, KEY)
    assert await _within(lease.acquire()) is True

    # When another replica asks well past the lease, Then the key is still held
    await asyncio.sleep(1.0)
    assert await _within(theirs.of(FAMILY, KEY).acquire()) is False

    # And once released, it is the other's at once
    await _within(lease.release())
    assert await _within(theirs.of(FAMILY, KEY).acquire()) is True


class _FailingRecords(MemoryNewestStore):
    """A memory store whose record-and-release fails, as a store that went away would."""

    async def record_and_release(
        self, app: str, family: str, key: str, owner: str, event: Recorded
    ) -> bool:
        raise NewestStoreError("recording the newest event: the store went away")


async def test_a_failed_record_raises_and_the_lease_is_still_given_up() -> None:
    # Given a lease held on a store whose records fail
    store = _FailingRecords()
    leases = Leases(store, APP)
    lease = leases.of(FAMILY, KEY)
    assert await _within(lease.take()) == Leased(None)

    # When it is released with an event to record, Then the error reaches the caller
    with pytest.raises(NewestStoreError):
        await _within(lease.release(Recorded(T0)))

    # And nothing was recorded, and the key is free for another replica
    assert await store.newest(APP, FAMILY, KEY) is None
    assert await _within(store.acquire(APP, FAMILY, KEY, "other", 30.0)) is True


# --- the guard ---------------------------------------------------------------------------


def _event(
    event_type: str, time_ms: int | None, key: str | None = KEY, *, message_id: str = ""
) -> Event:
    headers: dict[str, Any] = {}
    if key is not None:
        headers[SUBJECT_KEY_HEADER] = key
    if time_ms is not None:
        headers[EVENT_TIME_HEADER] = time_ms
    body = orjson.dumps({"type": event_type, "company": {"company_id": "c1"}})
    return Event.from_body(body, message_id=message_id or uuid.uuid4().hex, headers=headers)


def _guard(store: NewestStore, *, owner: str = "me", family: str | None = FAMILY) -> NewestWins:
    return NewestWins(lambda _: family, Leases(store, APP, owner=owner), CollectorRegistry())


def _verdicts(guard: NewestWins) -> dict[str, float]:
    return {
        sample.labels["verdict"]: sample.value
        for metric in guard.verdicts.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


class Handler:
    """A handler that remembers what it handled, and can be told to raise once."""

    def __init__(self) -> None:
        self.handled: list[str] = []
        self.fail_next = False

    async def __call__(self, event: Event) -> Outcome:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the database is down")
        self.handled.append(event.type)
        return Handled()


async def test_an_older_event_after_a_newer_one_is_skipped_stale_and_counted() -> None:
    # Given an unsubscribe handled for a key
    store, handler = MemoryNewestStore(), Handler()
    guard = _guard(store)
    assert await _within(guard(_event("sms.unsubscribed", T0 + 10), handler)) == Handled()

    # When an older subscribe comes (a retry, a replay), Then it is acked unhandled
    assert await _within(guard(_event("sms.subscribed", T0), handler)) == Skipped("stale")
    assert handler.handled == ["sms.unsubscribed"]
    assert _verdicts(guard) == {"applied": 1.0, "stale": 1.0}
    assert await store.newest(APP, FAMILY, KEY) == Recorded(T0 + 10, True)


async def test_a_handler_that_raised_leaves_the_newest_for_its_retry() -> None:
    # Given a subscribe whose handler raises
    store, handler = MemoryNewestStore(), Handler()
    guard, subscribed = _guard(store), _event("sms.subscribed", T0 + 5)
    handler.fail_next = True
    with pytest.raises(RuntimeError):
        await _within(guard(subscribed, handler))

    # Then nothing was recorded, the lease is free, and the retry is applied
    assert await store.newest(APP, FAMILY, KEY) is None
    assert await _within(guard(subscribed, handler)) == Handled()
    assert await store.newest(APP, FAMILY, KEY) == Recorded(T0 + 5)


async def test_a_key_busy_on_another_replica_is_deferred_unhandled() -> None:
    store, handler = MemoryNewestStore(), Handler()
    assert await store.acquire(APP, FAMILY, KEY, "other-replica", 30.0)

    outcome = await _within(_guard(store)(_event("sms.subscribed", T0), handler))

    assert outcome == Deferred() and handler.handled == []


async def test_events_that_cannot_be_ordered_are_handled_and_never_recorded() -> None:
    store, handler = MemoryNewestStore(), Handler()
    guard = _guard(store)
    future = round(time.time() * 1000) + 3_600_000
    for event in (_event("sms.subscribed", None), _event("sms.subscribed", future)):
        assert await _within(guard(event, handler)) == Handled()
    assert await _within(guard(_event("sms.subscribed", T0, key=None), handler)) == Handled()

    assert await store.newest(APP, FAMILY, KEY) is None
    assert _verdicts(guard) == {
        "unordered-no-time": 1.0,
        "unordered-future": 1.0,
        "unordered-no-key": 1.0,
    }
    # an older event still applies: the future one did not become the newest
    assert await _within(guard(_event("sms.unsubscribed", T0), handler)) == Handled()


async def test_a_handler_without_a_family_is_not_guarded() -> None:
    store, handler = MemoryNewestStore(), Handler()
    guard = _guard(store, family=None)
    for stamp in (T0 + 1, T0):
        assert await _within(guard(_event("sms.subscribed", stamp), handler)) == Handled()
    assert await store.newest(APP, FAMILY, KEY) is None and _verdicts(guard) == {}


# --- the property: random histories end in their newest state ----------------------------


@dataclass(frozen=True)
class Happening:
    """Something that happened to a subscriber (``who``) at ``at`` ms past :data:`T0`."""

    who: int
    kind: str
    at: int
    value: str

    @property
    def family(self) -> str:
        return "attribute" if self.kind == "custom_attribute.set" else "subscription"

    @property
    def key(self) -> str:
        return f"s{self.who}:color" if self.family == "attribute" else f"s{self.who}"

    @property
    def state(self) -> str:
        return self.value if self.family == "attribute" else self.kind


_HAPPENINGS = st.builds(
    Happening,
    who=st.integers(0, 2),
    kind=st.sampled_from(["sms.subscribed", "sms.unsubscribed", "custom_attribute.set"]),
    at=st.integers(0, 6),
    value=st.sampled_from(["red", "green", "blue"]),
)


def _family_of(event: Event) -> str:
    return "attribute" if event.type == "custom_attribute.set" else "subscription"


async def _run_history(history: list[Happening], rnd: random.Random) -> dict[str, str]:
    """Deliver ``history`` shuffled, some events twice and some failing once (retried at the
    back of the queue), to two replicas sharing a memory store, every delivery at once; the
    state the handlers leave per key. Each handler asserts that no other of its key runs."""
    store, state, running = MemoryNewestStore(), dict[str, str](), set[str]()
    replicas = [
        NewestWins(_family_of, Leases(store, APP, owner=f"replica-{n}"), CollectorRegistry())
        for n in range(2)
    ]
    by_id = {f"m{n}": happening for n, happening in enumerate(history)}
    failing = {message_id for message_id in by_id if rnd.random() < 0.2}
    queue = [_delivery(message_id, happening) for message_id, happening in by_id.items()]
    queue += [event for event in queue if rnd.random() < 0.3]  # duplicates
    rnd.shuffle(queue)

    async def handler(event: Event) -> Outcome:
        happening = by_id[event.message_id]
        assert happening.key not in running, f"two handlers of {happening.key} at once"
        running.add(happening.key)
        try:
            for _ in range(rnd.randrange(3)):
                await asyncio.sleep(0)
            if event.message_id in failing:
                failing.discard(event.message_id)
                raise RuntimeError("failed once")
            state[happening.key] = happening.state
        finally:
            running.discard(happening.key)
        return Handled()

    async def deliver(event: Event) -> Event | None:
        """Run one delivery; the event again if it is to come back (retried or deferred)."""
        try:
            outcome = await rnd.choice(replicas)(event, handler)
        except RuntimeError:
            return event
        return event if isinstance(outcome, Deferred) else None

    tasks: list[asyncio.Task[Event | None]] = []
    async with asyncio.timeout(TIMEOUT):
        while queue or tasks:
            tasks += [asyncio.create_task(deliver(event)) for event in queue]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            done = [task for task in tasks if task.done()]
            tasks = [task for task in tasks if not task.done()]
            queue = [again for task in done if (again := task.result()) is not None]
    return state


def _delivery(message_id: str, happening: Happening) -> Event:
    return _event(happening.kind, T0 + happening.at, happening.key, message_id=message_id)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_HAPPENINGS, min_size=1, max_size=25), st.integers(0, 2**32))
def test_every_key_ends_in_its_newest_events_state_and_no_opt_out_is_lost(
    history: list[Happening], seed: int
) -> None:
    # Given a history delivered out of order, duplicated, delayed, to two replicas at once
    state = asyncio.run(_run_history(history, random.Random(seed)))

    # Then every key is in the state of its newest event: the latest time, an unsubscribe
    # winning a tie with a subscribe (an attribute set twice at one time: either value)
    for key in {happening.key for happening in history}:
        events = [happening for happening in history if happening.key == key]
        latest = max(happening.at for happening in events)
        newest = [happening.state for happening in events if happening.at == latest]
        if "sms.unsubscribed" in newest:
            assert state[key] == "sms.unsubscribed", f"the opt-out of {key} was lost"
        else:
            assert state[key] in newest, f"{key} ended in {state[key]}, not {newest}"
