"""Newest wins against the real broker (issue 29, item 5): the opt-out that a retried
subscribe must not undo, a dead letter replayed after a newer event, two worker processes on
one shared store with 2,000 events of 20 subscribers, and a worker killed mid-handler.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
import redis.asyncio
from aio_pika.abc import AbstractRobustConnection

from consumers import Event, Reject, RetryPolicy, Worker
from router.cli.main import main as cli_main
from router.contract.events import message_id
from router.contract.examples import example_payload
from router.contract.names import (
    EVENT_TIME_HEADER,
    SUBJECT_KEY_HEADER,
    WEBHOOK_PATH,
    Names,
    routing_key,
)
from router.contract.ordering import SubjectKeys
from router.parked.open import parked_store_from_url
from tests.conftest import AMQP_URL, TOKEN, Client, StartWorker, depth, signed, take
from tests.databases import REDIS_URL
from tests.steps import park, until
from tests.test_idempotency_replicas import Replicas

pytestmark = [pytest.mark.broker, pytest.mark.database]

FAMILY = "subscription"
PHONE = "+15555550123"
#: Subscribers and events of the two-process story.
SUBSCRIBERS, EVENTS = 20, 2_000
#: The longest the two processes may take to settle every event (seconds).
SETTLE_TIMEOUT = 120.0
#: The key lease of the kill story (seconds): short, so the test does not wait a minute.
KILL_LEASE = 3.0


def sms(event_type: str, at: int, phone: str = PHONE) -> bytes:
    payload = example_payload(event_type, "acme", timestamp_ms=at)
    payload["subscriber"]["phone"] = phone
    payload["nonce"] = uuid.uuid4().hex  # a message id of its own
    return orjson.dumps(payload)


def a_minute_ago() -> int:
    """An event time well within the skew of any clock."""
    return int(time.time() * 1000) - 60_000


class Statuses:
    """A worker ``app`` keeping each phone's status (last write wins) with newest wins."""

    def __init__(self, app: str, *, fail: Any = None) -> None:
        self.worker = Worker(app, retry=RetryPolicy(delays=(2.0,), max_attempts=3))
        self.status: dict[str, str] = {}
        self.handled: list[tuple[str, int]] = []

        @self.worker.on("sms.subscribed", newest=FAMILY)
        @self.worker.on("sms.unsubscribed", newest=FAMILY)
        async def keep(event: Event) -> None:
            self.handled.append((event.type, event.attempt))
            if fail is not None:
                fail(event)
            self.status[event.subscriber["phone"]] = event.type.removeprefix("sms.")

    def verdicts(self, verdict: str) -> float:
        labels = {"app": self.worker.app, "family": FAMILY, "verdict": verdict}
        value = self.worker.registry.get_sample_value(
            "attentive_worker_newest_verdicts_total", labels
        )
        return value or 0.0


async def post(ingress: Client, body: bytes) -> None:
    response = await ingress.post(WEBHOOK_PATH, data=body, headers=signed(body))
    assert response.status == 200, await response.text()


async def test_a_subscribe_retried_after_a_newer_unsubscribe_leaves_the_subscriber_opted_out(
    ingress: Client, start_worker: StartWorker, amqp: AbstractRobustConnection, names: Names
) -> None:
    # Given a worker keeping subscription statuses with newest wins, whose downstream fails
    # the first subscribe (retried 2 s later, the retry tier shortened)
    def fail_the_first_subscribe(event: Event) -> None:
        if event.type == "sms.subscribed" and event.attempt == 1:
            raise ConnectionError("the downstream is down for a moment")

    kept = Statuses("optouts", fail=fail_the_first_subscribe)
    await start_worker(kept.worker)
    t0 = a_minute_ago()

    # When a phone subscribes, the handling fails, and the phone's unsubscribe (one second
    # later in Attentive's time) is handled before the subscribe's retry comes back
    await post(ingress, sms("sms.subscribed", t0))
    await until(lambda: kept.handled == [("sms.subscribed", 1)])
    await post(ingress, sms("sms.unsubscribed", t0 + 1000))
    await until(lambda: kept.status == {PHONE: "unsubscribed"})
    await until(lambda: kept.verdicts("stale") == 1, timeout=20)

    # Then the retry was acked unhandled as stale, and the phone stays opted out
    assert kept.handled == [("sms.subscribed", 1), ("sms.unsubscribed", 1)]
    assert kept.status == {PHONE: "unsubscribed"}
    assert await depth(amqp, names.app_queue("optouts")) == 0
    assert await depth(amqp, names.app_dead_letter_queue("optouts")) == 0


async def test_a_dead_letter_replayed_after_a_newer_event_is_skipped_and_counted(
    ingress: Client,
    start_worker: StartWorker,
    amqp: AbstractRobustConnection,
    names: Names,
    tmp_path: Path,
) -> None:
    # Given a worker with newest wins that dead-lettered a phone's subscribe
    rejected: list[str] = []

    def reject_the_first_subscribe(event: Event) -> None:
        if event.type == "sms.subscribed" and not rejected:
            rejected.append(event.message_id)
            raise Reject("the subscriber's list is not set up yet")

    kept = Statuses("replays", fail=reject_the_first_subscribe)
    await start_worker(kept.worker)
    t0 = a_minute_ago()
    await post(ingress, sms("sms.subscribed", t0))
    channel = await amqp.channel(publisher_confirms=True)
    (dead,) = await take(await channel.get_queue(names.app_dead_letter_queue("replays")), 1)

    # And the phone's newer unsubscribe was handled
    await post(ingress, sms("sms.unsubscribed", t0 + 1000))
    await until(lambda: kept.status == {PHONE: "unsubscribed"})

    # When the keeper has parked the dead letter in the store, and ops replay it as they
    # would (`attentive-router dlq replay`, a replay job)
    database = f"sqlite:///{tmp_path / 'router.db'}"
    store = parked_store_from_url(database)
    await store.open()
    await store.upgrade()
    await park(store, dead, "replays")
    await store.close()
    replay = ["dlq", "replay", "--app", "replays", "--namespace", names.prefix]
    replay += ["--amqp-url", AMQP_URL, "--database-url", database]
    assert await asyncio.to_thread(_exit_code, replay) == 0
    await until(lambda: kept.verdicts("stale") == 1)

    # Then the replayed subscribe was acked unhandled, counted stale, and the phone stays out
    assert kept.handled == [("sms.subscribed", 1), ("sms.unsubscribed", 1)]
    assert kept.status == {PHONE: "unsubscribed"}
    assert await depth(amqp, names.app_queue("replays")) == 0
    assert await depth(amqp, names.app_dead_letter_queue("replays")) == 0


def _exit_code(argv: list[str]) -> int:
    """``attentive-router ARGV``'s exit code, run in this process."""
    try:
        return cli_main(argv)
    except SystemExit as exited:
        return int(exited.code or 0)


# --- worker processes on one shared store ------------------------------------------------


class Processes(Replicas):
    """Worker processes of :mod:`tests.newest_worker`, each logging (JSON) to a file."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        super().__init__(env, logs)
        self.record = env["NEWEST_RECORD"]

    def start(self, **extra: str) -> Path:
        log = self.logs / f"replica-{len(self.processes)}.log"
        self.processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "router", "worker", "tests.newest_worker:build_worker"),
                    *("--log-format", "json"),
                ],
                env={**self.env, **extra},
                stdout=subprocess.DEVNULL,
                stderr=log.open("ab"),
            )
        )
        return log

    async def wait_for_lines(self, event: str, count: int, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while await asyncio.to_thread(self.count, event) < count:
                await asyncio.sleep(0.1)


@pytest.fixture
async def processes(admin: Client, names: Names, tmp_path: Path) -> AsyncIterator[Processes]:
    """Processes of an application of the test's own on the shared Redis store; its keys
    there removed afterwards."""
    app = f"newest-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ)
    env.update(
        ROUTER_AMQP_URL=AMQP_URL,
        ROUTER_ADMIN_URL=str(admin.make_url("")).rstrip("/"),
        ROUTER_ADMIN_TOKEN=TOKEN,
        ROUTER_NAMESPACE=names.prefix,
        WORKER_IDEMPOTENCY_URL=REDIS_URL,
        NEWEST_APP=app,
        NEWEST_RECORD=f"test_newest:{app}",
        NEWEST_RECORD_URL=REDIS_URL,
    )
    running = Processes(env, tmp_path)
    yield running
    for process in running.processes:
        process.kill()  # (nothing, if it ended)
        process.wait(timeout=10)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        for pattern in (f"{running.record}:*", f"attentive:*:{app}:*"):
            keys = [key async for key in client.scan_iter(match=pattern)]
            if keys:
                await client.delete(*keys)
    finally:
        await client.aclose()


async def publish(
    amqp: AbstractRobustConnection, names: Names, bodies: list[bytes], keys: SubjectKeys
) -> None:
    """Publish ``bodies`` to the events exchange as the ingress does (with their ordering
    headers), a hundred at a time."""
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(names.events_exchange)

    def message(body: bytes) -> tuple[aio_pika.Message, str]:
        payload = orjson.loads(body)
        event_type, company = payload["type"], payload["company"]["company_id"]
        headers = {
            SUBJECT_KEY_HEADER: keys.key(event_type, company, payload),
            EVENT_TIME_HEADER: payload["timestamp"],
        }
        return (
            aio_pika.Message(
                body,
                headers=headers,
                message_id=message_id(body),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key(event_type, company),
        )

    async with asyncio.timeout(60):
        for start in range(0, len(bodies), 100):
            await asyncio.gather(
                *(exchange.publish(*message(body)) for body in bodies[start : start + 100])
            )


async def recorded(processes: Processes) -> tuple[dict[str, str], list[str], int]:
    """The statuses, the overlaps seen and how many handlings there were."""
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        record = processes.record
        state = await client.hgetall(f"{record}:state")
        overlaps = await client.lrange(f"{record}:overlaps", 0, -1)
        handled = await client.llen(f"{record}:handled")
    finally:
        await client.aclose()
    return {str(k): str(v) for k, v in state.items()}, [str(o) for o in overlaps], handled


def newest_states(bodies: list[bytes]) -> dict[str, str]:
    """Each phone's newest event's status (an unsubscribe wins a tie)."""
    newest: dict[str, tuple[int, bool]] = {}
    for body in bodies:
        payload = orjson.loads(body)
        phone = payload["subscriber"]["phone"]
        rank = (payload["timestamp"], payload["type"] == "sms.unsubscribed")
        newest[phone] = max(newest.get(phone, rank), rank)
    return {phone: "unsubscribed" if out else "subscribed" for phone, (_, out) in newest.items()}


async def test_two_processes_never_run_one_subscribers_handlers_together_and_end_right(
    processes: Processes, amqp: AbstractRobustConnection, names: Names
) -> None:
    # Given two worker processes of one application (prefetch 50, a rate limit far above
    # what they reach) sharing newest wins in Redis
    for _ in range(2):
        processes.start(WORKER_RATE_LIMIT="100000")
    await processes.wait_for_lines("worker_consuming", 2)

    # When 2,000 subscribes and unsubscribes of 20 phones, with times in any order and some
    # ties, are published at once
    rng = random.Random(29)
    t0 = a_minute_ago() - 10_000
    phones = [f"+1555555{n:04d}" for n in range(SUBSCRIBERS)]
    bodies = [
        sms(rng.choice(["sms.subscribed", "sms.unsubscribed"]), t0 + rng.randrange(5_000), phone)
        for phone in phones
        for _ in range(EVENTS // SUBSCRIBERS)
    ]
    rng.shuffle(bodies)
    await publish(amqp, names, bodies, SubjectKeys(b"a secret of the test's own"))

    # Then every event is settled: handled, or skipped as stale
    app = processes.env["NEWEST_APP"]
    try:
        async with asyncio.timeout(SETTLE_TIMEOUT):
            while True:
                _, _, handled = await recorded(processes)
                stale = await asyncio.to_thread(processes.count, "event_skipped")
                if handled + stale >= EVENTS:
                    break
                await asyncio.sleep(0.2)
    finally:
        exit_codes = processes.stop()
    state, overlaps, handled = await recorded(processes)
    deferred = processes.count("event_deferred")
    print(f"handled {handled}, stale {processes.count('event_skipped')}, deferred {deferred}")

    # And no two handlers of a phone ever ran at once, and each phone is in its newest state
    assert overlaps == []
    assert state == newest_states(bodies)
    assert exit_codes == [0, 0]
    for queue in (names.app_queue(app), names.app_dead_letter_queue(app)):
        assert await depth(amqp, queue) == 0


async def test_a_worker_killed_mid_handler_blocks_its_subscriber_at_most_for_the_lease(
    processes: Processes, amqp: AbstractRobustConnection, names: Names
) -> None:
    # Given a worker process whose handler of one phone never returns, holding its key's
    # lease (3 s), and a second worker process of the application
    lease = {"WORKER_KEY_LEASE": str(KILL_LEASE)}
    processes.start(NEWEST_HANG_PHONE=PHONE, **lease)
    stuck = processes.processes[0]
    await processes.wait_for_lines("worker_consuming", 1)
    t0 = a_minute_ago()
    keys = SubjectKeys(b"a secret of the test's own")
    await publish(amqp, names, [sms("sms.subscribed", t0)], keys)
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        async with asyncio.timeout(15):
            while not await client.exists(f"{processes.record}:hung"):
                await asyncio.sleep(0.05)
        processes.start(**lease)
        await processes.wait_for_lines("worker_consuming", 2)

        # When the stuck process is killed (SIGKILL: its lease stays in the store), and the
        # phone unsubscribes meanwhile
        stuck.kill()
        stuck.wait(timeout=10)
        killed_at = time.monotonic()
        await publish(amqp, names, [sms("sms.unsubscribed", t0 + 1000)], keys)

        # Then the other process handles the phone's events once the lease lapsed: the
        # redelivered subscribe, then the unsubscribe (or the subscribe skipped as stale)
        async with asyncio.timeout(KILL_LEASE + 20):
            while await client.hget(f"{processes.record}:state", PHONE) != "unsubscribed":
                await asyncio.sleep(0.05)
        waited = time.monotonic() - killed_at
    finally:
        await client.aclose()
    print(f"the phone's events were handled {waited:.1f} s after the kill")
    app = processes.env["NEWEST_APP"]
    assert processes.count("event_deferred") >= 1  # the dead holder's lease was respected
    assert processes.stop()[1] == 0
    assert await depth(amqp, names.app_queue(app)) == 0
