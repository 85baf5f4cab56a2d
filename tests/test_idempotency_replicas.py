"""One handling per message id across replicas: a copy of an id that another delivery is
handling is deferred (returned through the shortest delay tier, no attempt counted), never
handled at the same time, never dropped.

The first story runs one worker in this process; the second runs two worker processes of one
application on one shared store (Redis, then PostgreSQL) with the same 1,000 ids delivered
to both at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import orjson
import pytest
import redis.asyncio
from aio_pika.abc import AbstractRobustConnection

from consumers import Event, RetryPolicy, Worker
from router.amqp import topology
from router.contract.events import message_id
from router.contract.examples import example_payload
from router.contract.names import WEBHOOK_PATH, Names, routing_key
from tests import replica_worker
from tests.conftest import AMQP_URL, TOKEN, Client, StartWorker, depth, signed
from tests.databases import POSTGRES_URL, REDIS_URL, drop_table, forget_redis_keys
from tests.steps import until

pytestmark = [pytest.mark.broker, pytest.mark.database]

FAST = RetryPolicy(delays=(0.2, 0.4), max_attempts=3)
#: How many distinct ids the replica test delivers, each twice.
IDS = 1_000
#: The longest the replicas may take to settle every copy (seconds).
SETTLE_TIMEOUT = 60.0


async def test_a_copy_waiting_for_a_failing_delivery_is_handled_later_as_the_same_attempt(
    ingress: Client, start_worker: StartWorker, amqp: AbstractRobustConnection, names: Names
) -> None:
    # Given a worker whose handler holds the first delivery until the test opens a gate,
    # then fails it
    gate = asyncio.Event()
    attempts: list[int] = []
    worker = Worker("patient", retry=FAST)

    @worker.on("sms.sent")
    async def hold_then_fail_once(event: Event) -> None:
        attempts.append(event.attempt)
        if len(attempts) == 1:
            await gate.wait()
            raise ConnectionError("the first delivery fails")

    def deferred() -> float:
        labels = {"app": "patient", "type": "sms.sent", "outcome": "deferred"}
        return worker.registry.get_sample_value("attentive_worker_events_total", labels) or 0.0

    await start_worker(worker)
    body = orjson.dumps({**example_payload("sms.sent"), "nonce": uuid.uuid4().hex})

    # When the same event arrives twice, and the second copy comes while the first is held
    for _ in range(2):
        response = await ingress.post(WEBHOOK_PATH, data=body, headers=signed(body))
        assert response.status == 200
    await until(lambda: deferred() >= 2)  # deferred, came back through the tier, deferred

    # Then the copy never ran alongside the first delivery
    assert attempts == [1]

    # And once the first failed (and released the id), the copy is handled as attempt 1:
    # waiting was no failed attempt; the first delivery's retry is then a duplicate
    gate.set()
    await until(lambda: len(attempts) == 2)
    assert attempts == [1, 1]
    await until(lambda: _skipped(worker) == 1)
    assert await depth(amqp, names.app_queue("patient")) == 0
    assert await depth(amqp, names.app_dead_letter_queue("patient")) == 0


def _skipped(worker: Worker) -> float:
    labels = {"app": worker.app, "type": "sms.sent", "outcome": "skipped"}
    return worker.registry.get_sample_value("attentive_worker_events_total", labels) or 0.0


# --- two worker processes ----------------------------------------------------------------


class Replicas:
    """Worker processes of :mod:`tests.replica_worker`, each logging (JSON) to a file."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> Path:
        log = self.logs / f"replica-{len(self.processes)}.log"
        self.processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "router", "worker", "tests.replica_worker:build_worker"),
                    *("--log-format", "json"),
                ],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log.open("ab"),
            )
        )
        return log

    def count(self, event: str) -> int:
        """How many log lines of every replica are ``event``."""
        total = 0
        for log in self.logs.glob("replica-*.log"):
            for line in log.read_bytes().splitlines():
                if line.startswith(b"{") and orjson.loads(line).get("event") == event:
                    total += 1
        return total

    def stop(self) -> list[int | None]:
        """SIGTERM each (they drain), then wait; the exit codes."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=30))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait(timeout=10))
        return codes


@pytest.fixture(params=["redis", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    return REDIS_URL if request.param == "redis" else POSTGRES_URL


@pytest.fixture
async def replicas(
    admin: Client, names: Names, store_url: str, tmp_path: Path
) -> AsyncIterator[Replicas]:
    """Replicas on a store place and a record list of the test's own, removed afterwards."""
    place = f"test_replicas_{uuid.uuid4().hex[:12]}"
    running = Replicas(
        {
            **os.environ,
            "ROUTER_AMQP_URL": AMQP_URL,
            "ROUTER_ADMIN_URL": str(admin.make_url("")).rstrip("/"),
            "ROUTER_ADMIN_TOKEN": TOKEN,
            "ROUTER_NAMESPACE": names.prefix,
            "REPLICA_STORE_URL": store_url,
            "REPLICA_STORE_PLACE": place,
            replica_worker.RECORD_URL_VARIABLE: REDIS_URL,
            "REPLICA_RECORD_KEY": f"{place}:record",
        },
        tmp_path,
    )
    yield running
    for process in running.processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
    await forget_redis_keys(place)
    if store_url == POSTGRES_URL:
        await drop_table(place)


async def _recorded(replicas: Replicas) -> list[str]:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        raw = await client.lrange(replicas.env["REPLICA_RECORD_KEY"], 0, -1)
    finally:
        await client.aclose()
    return [item.decode() if isinstance(item, bytes) else item for item in raw]


async def _wait_for_lines(replicas: Replicas, event: str, count: int, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while await asyncio.to_thread(replicas.count, event) < count:
            await asyncio.sleep(0.1)


async def _settled(replicas: Replicas, copies: int) -> None:
    """Wait until as many copies were handled or skipped as were published."""
    async with asyncio.timeout(SETTLE_TIMEOUT):
        while True:
            skipped = await asyncio.to_thread(replicas.count, "event_skipped")
            if len(await _recorded(replicas)) + skipped >= copies:
                return
            await asyncio.sleep(0.1)


def _bodies(run: str) -> Iterator[bytes]:
    for number in range(IDS):
        yield orjson.dumps({**example_payload("sms.sent"), "nonce": f"{run}-{number}"})


async def test_two_replicas_given_the_same_ids_at_once_handle_each_exactly_once(
    replicas: Replicas, amqp: AbstractRobustConnection, names: Names
) -> None:
    # Given two worker processes of one application sharing one idempotency store
    for _ in range(2):
        replicas.start()
    await _wait_for_lines(replicas, "worker_consuming", 2, timeout=30)

    # When 1,000 events are each published twice, one copy right behind the other, so the
    # broker hands the two copies of an id to the two replicas at the same moment
    bodies = list(_bodies(uuid.uuid4().hex))
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(names.events_exchange)
    key = routing_key("sms.sent", example_payload("sms.sent")["company"]["company_id"])
    async with asyncio.timeout(60):
        for start in range(0, len(bodies), 100):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            body,
                            message_id=message_id(body),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        key,
                    )
                    for body in bodies[start : start + 100]
                    for _ in range(2)
                )
            )

    # Then every id is handled once and its other copy skipped (right away, or after being
    # deferred while the first was handled)
    try:
        await _settled(replicas, copies=2 * IDS)
    finally:
        exit_codes = replicas.stop()
    handled = Counter(await _recorded(replicas))
    expected = {message_id(body) for body in bodies}
    deferred = replicas.count("event_deferred")
    print(
        f"ids {IDS}, handlings {sum(handled.values())}, distinct {len(handled)}, "
        f"skipped {replicas.count('event_skipped')}, deferred {deferred}"
    )
    assert set(handled) == expected
    assert [mid for mid, times in handled.items() if times > 1] == []
    assert exit_codes == [0, 0]

    # And nothing is left in the application queue or its delay tiers, or dead-lettered
    app = replica_worker.APP
    for queue in (
        names.app_queue(app),
        names.app_dead_letter_queue(app),
        *(names.app_retry_queue(app, tier) for tier in (200, 1_000)),
    ):
        assert await depth(amqp, queue) == 0, queue
    await channel.close()


@pytest.fixture(autouse=True)
async def _events_exchange(amqp: AbstractRobustConnection, names: Names) -> None:
    """The events exchange the replicas' queue is bound to (the ingress declares it too)."""
    channel = await amqp.channel()
    await topology.declare(channel, names)
    await channel.close()
