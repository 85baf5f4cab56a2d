"""The worker runtime against the real RabbitMQ: handled, retried, dead-lettered, deduplicated,
drained, refused: every delivery accounted for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from aiohttp.test_utils import TestServer

from consumers import ClaimRefused, Event, Reject, RetryPolicy, Worker
from consumers.runtime.runner import WorkerRunner
from consumers.runtime.settings import WorkerSettings
from router.admin.app import create_admin_app
from router.admin.client import AdminUnreachable
from router.amqp.nodes import connect_first
from router.amqp.topology import APP_DELIVERY_LIMIT, declare_app_queue
from router.contract.examples import example_body
from router.contract.names import WEBHOOK_PATH, Names
from router.settings import Settings
from tests.conftest import AMQP_URL, TOKEN, Client, StartWorker, depth, signed, take
from tests.steps import claim, until
from tests.wire import free_port

pytestmark = pytest.mark.broker

WEBHOOK = WEBHOOK_PATH
FAST = RetryPolicy(delays=(0.2, 0.4), max_attempts=3)


async def post(ingress: Client, body: bytes) -> None:
    response = await ingress.post(WEBHOOK, data=body, headers=signed(body))
    assert response.status == 200


def recording(app: str, pattern: str) -> tuple[Worker, list[Event]]:
    """A worker of ``app`` whose handler of ``pattern`` records each event it is given; and
    the events it recorded."""
    seen: list[Event] = []
    worker = Worker(app)

    @worker.on(pattern)
    async def record(event: Event) -> None:
        seen.append(event)

    return worker, seen


async def test_a_handler_receives_the_parsed_event_and_the_delivery_is_acked(
    ingress: Client, start_worker: StartWorker, amqp: AbstractRobustConnection, names: Names
) -> None:
    # Given a worker for SMS events
    worker, seen = recording("sms-audit", "sms.*")
    await start_worker(worker)

    # When Attentive sends an sms.subscribed
    body = example_body("sms.subscribed", "acme", timestamp_ms=1632945178104)
    await post(ingress, body)

    # Then the handler gets it parsed, with its delivery facts, and the queue is empty
    await until(lambda: len(seen) == 1)
    (event,) = seen
    assert (event.type, event.company_id, event.attempt) == ("sms.subscribed", "acme", 1)
    assert event.subscriber["phone"] == "+15555555555"
    assert event.timestamp is not None and event.timestamp.year == 2021
    assert event.raw == body
    assert event.routing_key == "sms.subscribed.acme"
    assert len(event.message_id) == 64
    await until_empty(amqp, names.app_queue("sms-audit"))


async def until_empty(amqp: AbstractRobustConnection, queue: str) -> None:
    async with asyncio.timeout(15):
        while await depth(amqp, queue) != 0:
            await asyncio.sleep(0.05)


async def test_a_failing_handler_is_retried_through_the_delay_tiers_then_succeeds(
    ingress: Client, start_worker: StartWorker, amqp: AbstractRobustConnection, names: Names
) -> None:
    attempts: list[tuple[int, float]] = []
    keys: set[str] = set()
    worker = Worker("flaky", retry=FAST)

    @worker.on("email.opened")
    async def handle(event: Event) -> None:
        attempts.append((event.attempt, time.monotonic()))
        keys.add(event.routing_key)
        if event.attempt < 3:
            raise ConnectionError("the CRM is down")

    await start_worker(worker)
    await post(ingress, example_body("email.opened"))

    await until(lambda: len(attempts) == 3)
    assert [a for a, _ in attempts] == [1, 2, 3]
    # each retry waited at least its tier (0.2 s, then 0.4 s) in a delay queue
    assert attempts[1][1] - attempts[0][1] >= 0.19
    assert attempts[2][1] - attempts[1][1] >= 0.39
    assert keys == {"email.opened.MDc6Q29tcGFueTU"}  # retries keep the event's routing key
    await until_empty(amqp, names.app_queue("flaky"))
    assert await depth(amqp, names.app_dead_letter_queue("flaky")) == 0


def always_failing(
    app: str, event_type: str, error: Callable[[Event], Exception]
) -> tuple[Worker, list[int]]:
    """A worker of ``app`` (fast retries) whose handler of ``event_type`` raises
    ``error(event)`` every time; and the attempts it was called with."""
    attempts: list[int] = []
    worker = Worker(app, retry=FAST)

    @worker.on(event_type)
    async def handle(event: Event) -> None:
        attempts.append(event.attempt)
        raise error(event)

    return worker, attempts


async def test_after_the_last_attempt_the_event_is_dead_lettered_with_its_story(
    ingress: Client, start_worker: StartWorker, amqp: AbstractRobustConnection, names: Names
) -> None:
    worker, attempts = always_failing(
        "broken",
        "custom_attribute.set",
        lambda event: ValueError(f"cannot map attribute (attempt {event.attempt})"),
    )
    await start_worker(worker)
    body = example_body("custom_attribute.set")
    await post(ingress, body)

    channel = await amqp.channel()
    dlq = await channel.get_queue(names.app_dead_letter_queue("broken"))
    (dead,) = await take(dlq, 1, timeout=20)
    assert attempts == [1, 2, 3]
    assert dead.body == body
    headers = dead.headers
    assert headers["x-attentive-attempt"] == 3
    assert headers["x-attentive-dead-letter-reason"] == "exhausted"
    assert headers["x-attentive-error"] == "ValueError: cannot map attribute (attempt 3)"
    assert "ValueError" in str(headers["x-attentive-traceback"])
    assert headers["x-attentive-app"] == "broken"
    for stamp in ("first-failed-at", "last-failed-at", "dead-lettered-at"):
        assert str(headers[f"x-attentive-{stamp}"]).endswith("Z")
    assert dead.routing_key == "custom_attribute.set.MDc6Q29tcGFueTU"
    assert headers["x-attentive-routing-key"] == dead.routing_key
    assert await depth(amqp, names.app_queue("broken")) == 0


async def test_a_reject_dead_letters_at_once(
    ingress: Client, start_worker: StartWorker, amqp: AbstractRobustConnection, names: Names
) -> None:
    worker, attempts = always_failing(
        "strict", "sms.inbound_message", lambda _: Reject("inbound message without text")
    )
    await start_worker(worker)
    await post(ingress, example_body("sms.inbound_message"))
    channel = await amqp.channel()
    (dead,) = await take(await channel.get_queue(names.app_dead_letter_queue("strict")), 1)
    assert attempts == [1]
    assert dead.headers["x-attentive-dead-letter-reason"] == "rejected"
    assert dead.headers["x-attentive-attempt"] == 1


async def test_a_duplicate_delivery_is_skipped(
    ingress: Client, start_worker: StartWorker, amqp: AbstractRobustConnection, names: Names
) -> None:
    worker, seen = recording("once", "email.sent")
    await start_worker(worker)
    body = example_body("email.sent")
    await post(ingress, body)  # Attentive's first delivery
    await until(lambda: len(seen) == 1)
    await post(ingress, body)  # and its retry of the same event: the same message id
    await until_empty(amqp, names.app_queue("once"))
    metrics = worker.registry.get_sample_value(
        "attentive_worker_events_total", {"app": "once", "type": "email.sent", "outcome": "skipped"}
    )
    assert len(seen) == 1
    assert metrics == 1.0


async def test_shutdown_lets_an_in_flight_handler_finish_and_acks_it(
    ingress: Client, start_worker: StartWorker, amqp: AbstractRobustConnection, names: Names
) -> None:
    started, finished = asyncio.Event(), asyncio.Event()
    worker = Worker("drainer")

    @worker.on("sms.sent")
    async def slow(event: Event) -> None:
        started.set()
        await asyncio.sleep(0.5)
        finished.set()

    running = await start_worker(worker)
    await post(ingress, example_body("sms.sent"))
    await asyncio.wait_for(started.wait(), 10)

    running.stop.set()  # SIGTERM while the handler runs
    await asyncio.wait_for(running.task, 10)
    assert finished.is_set()
    assert await depth(amqp, names.app_queue("drainer")) == 0


async def test_a_handler_past_the_shutdown_deadline_is_redelivered_later(
    ingress: Client, start_worker: StartWorker, amqp: AbstractRobustConnection, names: Names
) -> None:
    worker = Worker("stubborn")
    started = asyncio.Event()

    @worker.on("sms.sent")
    async def forever(event: Event) -> None:
        started.set()
        await asyncio.sleep(60)

    running = await start_worker(worker, shutdown_timeout=0.3)
    await post(ingress, example_body("sms.sent"))
    await asyncio.wait_for(started.wait(), 10)
    running.stop.set()
    await asyncio.wait_for(running.task, 15)
    # not acked: back in the queue for the next worker
    async with asyncio.timeout(10):
        while await depth(amqp, names.app_queue("stubborn")) != 1:
            await asyncio.sleep(0.05)


async def test_a_handler_running_when_the_connection_is_lost_runs_to_its_end(
    ingress: Client,
    start_worker: StartWorker,
    amqp: AbstractRobustConnection,
    names: Names,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a worker whose handler waits for a gate, and the connections the worker makes
    connections: list[AbstractConnection] = []

    async def recording(*args: Any, **kwargs: Any) -> tuple[AbstractConnection, int]:
        connection, node = await connect_first(*args, **kwargs)
        connections.append(connection)
        return connection, node

    monkeypatch.setattr("consumers.runtime.runner.connect_first", recording)
    gate = asyncio.Event()
    runs: list[str] = []
    worker = Worker("steadfast", retry=FAST)

    @worker.on("sms.sent")
    async def held(event: Event) -> None:
        runs.append("started")
        try:
            await gate.wait()
        except asyncio.CancelledError:
            runs.append("cancelled")
            raise
        runs.append("finished")

    def outcomes(outcome: str) -> float:
        labels = {"app": "steadfast", "type": "sms.sent", "outcome": outcome}
        return worker.registry.get_sample_value("attentive_worker_events_total", labels) or 0.0

    running = await start_worker(worker)
    await post(ingress, example_body("sms.sent"))
    await until(lambda: runs == ["started"])

    # When its connection is lost while the handler runs (the event, unacked, comes back to
    # the worker's next connection, where it is deferred: the first run still holds its id)
    await connections[0].close()
    await until(lambda: len(connections) == 2 and outcomes("deferred") >= 1)
    gate.set()

    # Then the first run is not cancelled and runs to its end, the redelivery is not run
    # alongside it but skipped once it is done, and nothing is left
    await until(lambda: outcomes("skipped") == 1)
    running.stop.set()
    await asyncio.wait_for(running.task, 15)
    assert runs == ["started", "finished"]
    assert await depth(amqp, names.app_queue("steadfast")) == 0


async def test_a_worker_whose_claim_conflicts_refuses_to_start_naming_the_holder(
    admin: Client, start_worker: StartWorker
) -> None:
    await claim(admin, "sms-audit", "sms.*")
    worker = Worker("growth")

    @worker.on("sms.subscribed")
    async def handle(event: Event) -> None:
        raise AssertionError("never runs")

    with pytest.raises(ClaimRefused, match=r"'sms-audit' holds sms\.\*"):
        await start_worker(worker)


async def test_a_poison_event_is_stopped_by_the_delivery_limit_and_dead_lettered(
    amqp: AbstractRobustConnection, names: Names
) -> None:
    # Given an application queue (as the router declares it) holding one event
    channel = await amqp.channel()
    queue = await declare_app_queue(channel, names, "crashy")
    body = example_body("sms.sent")
    await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue.name)

    # When every worker that takes it dies before acking (here: returned, again and again)
    returns = 0
    async with asyncio.timeout(30):
        while (message := await queue.get(fail=False)) is not None:
            await message.nack(requeue=True)
            returns += 1
            assert returns <= APP_DELIVERY_LIMIT + 1

    # Then RabbitMQ itself dead-letters it into the application's DLQ, not redelivering forever
    (dead,) = await take(await channel.get_queue(names.app_dead_letter_queue("crashy")), 1)
    assert dead.body == body
    assert dead.headers["x-first-death-reason"] == "delivery_limit"
    assert returns == APP_DELIVERY_LIMIT + 1


async def test_when_a_retry_cannot_be_confirmed_the_event_is_returned_not_lost(
    ingress: Client, start_worker: StartWorker, amqp: AbstractRobustConnection, names: Names
) -> None:
    # Given a worker whose handler always fails, and whose retry tier has vanished
    # (its delay queue deleted: a publish there is returned by the broker, never confirmed)
    deliveries: list[int] = []
    worker = Worker("unlucky", retry=RetryPolicy(delays=(60.0,), max_attempts=5))

    @worker.on("sms.sent")
    async def handle(event: Event) -> None:
        deliveries.append(event.attempt)
        raise ConnectionError("down")

    await start_worker(worker)
    channel = await amqp.channel()
    await channel.queue_delete(names.app_retry_queue("unlucky", 60_000))

    # When an event arrives
    body = example_body("sms.sent")
    await post(ingress, body)

    # Then it is never acked without a confirmed move: it keeps coming back as attempt 1,
    # until the queue's delivery limit hands it to the dead-letter queue: nothing is lost
    dlq = await channel.get_queue(names.app_dead_letter_queue("unlucky"))
    (dead,) = await take(dlq, 1, timeout=30)
    assert dead.body == body
    assert dead.headers["x-first-death-reason"] == "delivery_limit"
    assert set(deliveries) == {1}
    assert len(deliveries) == APP_DELIVERY_LIMIT + 1


async def test_a_worker_keeps_asking_an_admin_api_that_is_not_up_yet(
    admin_settings: Settings, names: Names
) -> None:
    # Given a worker starting while the router (and so its admin API) is still down
    port = free_port()
    worker = Worker("patient")

    @worker.on("sms.sent")
    async def handle(event: Event) -> None:
        return None

    settings = WorkerSettings(
        amqp_url=AMQP_URL,
        admin_url=f"http://127.0.0.1:{port}",
        admin_token=TOKEN,
        namespace=names.prefix,
        claim_timeout=20,
    )
    stop = asyncio.Event()
    runner = WorkerRunner(worker, settings)
    task = asyncio.create_task(runner.run(stop))
    await asyncio.sleep(1.5)
    assert not task.done()

    # When the router comes up, the worker claims and consumes
    admin = Client(TestServer(create_admin_app(admin_settings), port=port))
    await admin.start_server()
    try:
        await until(runner.consuming.is_set, timeout=20)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await admin.close()


async def test_a_worker_gives_up_on_an_admin_api_that_never_answers(names: Names) -> None:
    worker = Worker("impatient")

    @worker.on("sms.sent")
    async def handle(event: Event) -> None:
        return None

    settings = WorkerSettings(
        admin_url=f"http://127.0.0.1:{free_port()}", admin_token=TOKEN, claim_timeout=1.0
    )
    with pytest.raises(AdminUnreachable):
        await WorkerRunner(worker, settings).run(asyncio.Event())
