"""The rate limit per application: the bucket and its queue on a clock of the test's own, the
limiter on the event loop, and two replicas sharing one limit at the real broker."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from prometheus_client import CollectorRegistry

from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.ratelimit import FairQueue, RateLimiter, TokenBucket
from router.amqp.topology import declare_app_queue, delete_app
from router.contract.names import Names
from tests.conftest import AMQP_URL
from tests.steps import until

APP = "rate-limited"

# -- the bucket and its queue, on a clock of the test's own ----------------------------------


def test_a_bucket_gives_its_rate_over_time_and_no_more() -> None:
    """Given a bucket of 50 a second taken from as fast as it gives
    When a minute passes, a millisecond at a time
    Then it gave its one token at the start and 50 a second after, never more in a second."""
    bucket = TokenBucket(50, now=0.0)
    per_second: Counter[int] = Counter()
    for ms in range(60_000):
        now = ms / 1000
        while bucket.take(now):
            per_second[ms // 1000] += 1
    assert sum(per_second.values()) in (3000, 3001)
    assert max(per_second.values()) <= 51


def test_a_bucket_holds_at_most_one_second_of_its_share() -> None:
    """Given buckets left alone for a long time
    Then each gives at most one second's worth at once (one token at least), then paces."""
    bucket = TokenBucket(20, now=0.0)
    taken = 0
    while bucket.take(1000.0):
        taken += 1
    assert taken == 20
    assert bucket.ready_in(1000.0) == pytest.approx(1 / 20)

    slow = TokenBucket(0.5, now=0.0)
    assert slow.take(1000.0)
    assert not slow.take(1000.0)
    assert slow.ready_in(1000.0) == pytest.approx(2.0)


def test_a_new_rate_applies_from_then_on() -> None:
    """Given a full bucket of 10 a second
    When its rate drops to 2 a second
    Then it holds 2 tokens at most, and the next one comes half a second after."""
    bucket = TokenBucket(10, now=0.0)
    bucket.set_rate(2, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [True, True, False]
    assert bucket.ready_in(100.0) == pytest.approx(0.5)
    assert bucket.take(100.5)


def test_waiters_are_served_first_come_first_served() -> None:
    """Given a queue on a bucket of 10 a second whose one token went to the first comer
    When others come, one of them gives up, and a newcomer arrives as a token is ready
    Then tokens go in arrival order, the newcomer waits its turn, the one who left gets none."""
    queue: FairQueue[str] = FairQueue(TokenBucket(10, now=0.0))
    assert queue.try_pass(0.0)
    for name in ("b", "c", "d"):
        assert not queue.try_pass(0.0)
        queue.join(name)
    assert queue.next_in(0.0) == pytest.approx(0.1)

    assert not queue.try_pass(0.1)  # a token is there, but three came first
    queue.join("e")
    queue.leave("c")
    assert queue.due(0.1) == ["b"]
    assert queue.due(0.35) == ["d", "e"]
    assert queue.next_in(0.35) is None
    assert len(queue) == 0


def test_waiters_that_are_gone_take_no_token() -> None:
    """Given three waiters of whom the first gave up without leaving yet
    When a token comes
    Then it goes to the second."""
    queue: FairQueue[str] = FairQueue(TokenBucket(10, now=0.0, tokens=0))
    for name in ("a", "b", "c"):
        queue.join(name)
    assert queue.due(0.1, gone=lambda name: name == "a") == ["b"]
    assert len(queue) == 1


# -- the limiter on the event loop -----------------------------------------------------------


async def test_without_a_limit_acquire_returns_at_once_and_counts_nothing() -> None:
    """Given a limiter with no rate (the default)
    Then every acquire returns at once, having waited nothing, and no metric is made."""
    registry = CollectorRegistry()
    limiter = RateLimiter(APP, "unused", None, registry=registry)
    assert [await limiter.acquire() for _ in range(1000)] == [0.0] * 1000
    assert limiter.share is None
    assert list(registry.collect()) == []


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(WorkerConfigError, match="must be positive"):
        RateLimiter(APP, "unused", 0)


async def test_handler_starts_wait_their_turn_in_arrival_order() -> None:
    """Given a limiter of 200 a second on one replica
    When 30 handler starts ask for their turn one after the other
    Then they start in the order they asked, and their waits are counted."""
    registry = CollectorRegistry()
    limiter = RateLimiter(APP, "unused", 200, registry=registry)
    started: list[int] = []

    async def start(index: int) -> float:
        waited = await limiter.acquire()
        started.append(index)
        return waited

    async with asyncio.timeout(10):
        waits = await asyncio.gather(*(start(i) for i in range(30)))
    assert started == list(range(30))
    assert waits[0] == 0.0 and all(w > 0 for w in waits[1:])
    labels = {"app": APP}
    assert registry.get_sample_value("attentive_worker_rate_limit_per_second", labels) == 200
    waited = registry.get_sample_value("attentive_worker_rate_limited_seconds_total", labels)
    assert waited == pytest.approx(sum(waits))


async def test_a_waiter_that_gives_up_does_not_hold_up_those_behind() -> None:
    """Given a limiter of 5 a second whose token went to a first handler start
    When the next start gives up (its delivery is returned) while a third waits
    Then the third gets the next token."""
    limiter = RateLimiter(APP, "unused", 5)
    assert await limiter.acquire() == 0.0
    second = asyncio.create_task(limiter.acquire())
    third = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    second.cancel()
    async with asyncio.timeout(5):
        assert await third > 0
    assert second.cancelled()


async def test_an_interrupt_sends_every_waiter_back_at_once() -> None:
    """Given a limiter of 1 a second with ten handler starts waiting (ten seconds' worth)
    When no handler may start any more (a pause) and the runner interrupts the limiter
    Then every waiter returns at once, without a token: the next start still waits."""
    limiter = RateLimiter(APP, "unused", 1)
    assert await limiter.acquire() == 0.0
    waiting = [asyncio.create_task(limiter.acquire()) for _ in range(10)]
    await asyncio.sleep(0)
    limiter.interrupt()
    done, _ = await asyncio.wait(waiting, timeout=5)  # the rate would take ten seconds
    assert len(done) == 10
    late = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    assert not late.done()
    late.cancel()


# -- replicas at the real broker -------------------------------------------------------------


@pytest.fixture
async def app_queue(names: Names, amqp: AbstractRobustConnection) -> AsyncIterator[str]:
    """The application's queue, of this test's namespace."""
    channel = await amqp.channel()
    queue = await declare_app_queue(channel, names, APP)
    yield queue.name
    channel = await amqp.channel()
    await delete_app(channel, names, APP)


async def consumer(connection: aio_pika.abc.AbstractConnection, queue: str) -> AbstractChannel:
    """A channel holding one consumer of ``queue`` that takes nothing (prefetch 1, no ack)."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=1)
    await (await channel.get_queue(queue, ensure=False)).consume(_leave_unacked)
    return channel


async def _leave_unacked(message: AbstractIncomingMessage) -> None:
    """A consumer that holds what it is given (an empty queue gives it nothing)."""


@pytest.mark.broker
async def test_each_replica_takes_its_share_of_the_limit(
    app_queue: str, amqp: AbstractRobustConnection
) -> None:
    """Given a limiter of 100 a second counting the replicas every 0.2 s
    When a second replica, then a third, consume the application's queue, and two leave
    Then its share follows: 100, 50, 33.3, then 100 again, in its metric too."""
    registry = CollectorRegistry()
    limiter = RateLimiter(APP, app_queue, 100, registry=registry, interval=0.2)
    mine = await consumer(amqp, app_queue)
    await limiter.start(amqp)
    try:
        assert limiter.share == 100
        second = await consumer(amqp, app_queue)
        await until(lambda: limiter.replicas == 2, timeout=10)
        assert limiter.share == 50
        third = await consumer(amqp, app_queue)
        await until(lambda: limiter.replicas == 3, timeout=10)
        share = registry.get_sample_value("attentive_worker_rate_limit_per_second", {"app": APP})
        assert share == pytest.approx(100 / 3)
        await second.close()
        await third.close()
        await until(lambda: limiter.replicas == 1, timeout=10)
        assert limiter.share == 100
    finally:
        await limiter.stop()
        await mine.close()


@pytest.mark.broker
async def test_a_failed_count_keeps_the_last_share(
    app_queue: str, amqp: AbstractRobustConnection, names: Names
) -> None:
    """Given a limiter that counted two replicas
    When the queue cannot be counted (it is gone)
    Then it keeps the share of two, and the connection it counts on stays open."""
    limiter = RateLimiter(APP, app_queue, 100, interval=0.2)
    channels = [await consumer(amqp, app_queue) for _ in range(2)]
    await limiter.start(amqp)
    try:
        assert limiter.replicas == 2
        for channel in channels:
            await channel.close()
        await delete_app(await amqp.channel(), names, APP)
        assert await limiter.refresh() == 2
        assert limiter.share == 50
        assert not amqp.is_closed
    finally:
        await limiter.stop()


#: The limit the two replicas share, and how long they run at it.
RATE, SECONDS = 100, 30


@pytest.mark.broker
async def test_two_replicas_together_start_at_most_the_limit(
    app_queue: str, amqp: AbstractRobustConnection, test_id: str
) -> None:
    """Given a full application queue and two replicas, each with a limiter of 100 a second
    When they handle events for 30 s
    Then 3,000 handlers started in those 30 s, give or take 10 %, on both replicas."""
    channel = await amqp.channel(publisher_confirms=True)
    body = b'{"type": "sms.sent"}'
    for _ in range(RATE * SECONDS * 14 // 10 // 200):
        await asyncio.gather(
            *(
                channel.default_exchange.publish(aio_pika.Message(body), app_queue, timeout=10)
                for _ in range(200)
            )
        )
    loop = asyncio.get_running_loop()
    starts: dict[str, list[float]] = {"a": [], "b": []}
    limiters = {name: RateLimiter(APP, app_queue, RATE) for name in starts}
    connections = []
    try:
        for name, limiter in limiters.items():
            connection = await aio_pika.connect(
                AMQP_URL, client_properties={"connection_name": f"{test_id} replica {name}"}
            )
            connections.append(connection)
            replica = await connection.channel()
            await replica.set_qos(prefetch_count=32)
            queue = await replica.get_queue(app_queue, ensure=False)
            await queue.consume(_handler(limiter, starts[name], loop))
        for limiter, connection in zip(limiters.values(), connections, strict=True):
            await limiter.start(connection)
        await until(lambda: all(limiter.replicas == 2 for limiter in limiters.values()))

        began = loop.time()
        await asyncio.sleep(SECONDS)
    finally:
        for limiter in limiters.values():
            await limiter.stop()
        for connection in connections:
            await connection.close()

    within = {
        name: [t - began for t in times if began <= t < began + SECONDS]
        for name, times in starts.items()
    }
    per_second = Counter(int(t) for times in within.values() for t in times)
    total = sum(per_second.values())
    seconds = [per_second[s] for s in range(SECONDS)]
    assert abs(total - RATE * SECONDS) <= RATE * SECONDS // 10, f"per second: {seconds}"
    assert all(within.values()), {name: len(times) for name, times in within.items()}


def _handler(
    limiter: RateLimiter, starts: list[float], loop: asyncio.AbstractEventLoop
) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
    async def handle(message: AbstractIncomingMessage) -> None:
        await limiter.acquire()
        starts.append(loop.time())
        await message.ack()

    return handle
