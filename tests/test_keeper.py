"""The keeper drains the landing zones (unrouted, invalid, every claimed application's DLQ)
into the parked-event store, against the real RabbitMQ and both stores (SQLite, PostgreSQL):
every field as the model says, a newly claimed application drained without a restart, two
keepers at once storing each message once, a classic DLQ of the previous release replaced by
a quorum one with nothing lost, and ``serve`` running a keeper unless ``ROUTER_KEEPER=off``.

The faults (SIGKILL, the database down, the broker connection closed) are in
tests/test_keeper_faults.py, which uses the helpers here.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from router.amqp import topology
from router.amqp.topology import CLASSIC_QUEUE_ARGUMENTS, QUORUM_QUEUE_ARGUMENTS
from router.claims.model import ClaimSpec
from router.claims.sqlite import SqliteClaimStore
from router.claims.store import ClaimStore
from router.cli.main import main
from router.contract import envelope
from router.contract.names import (
    COMPANY_HEADER,
    INVALID_REASON_HEADER,
    RECEIVED_AT_HEADER,
    Names,
)
from router.errors import ConfigError
from router.parked.jobs import JobRequest, JobState
from router.parked.keeper import Keeper
from router.parked.keeper_session import Inbox
from router.parked.metrics import KeeperMetrics
from router.parked.model import Place, State
from router.parked.query import Query
from router.parked.schema import LATEST_VERSION
from router.parked.settings import KeeperSettings
from router.parked.sqlite import SqliteParkedStore
from router.parked.store import ParkedStore, ParkedStoreError
from router.settings import Settings
from tests.conftest import TOKEN, depth, rabbitmqctl
from tests.parked_stores import EVERY_STATE, TIMEOUT, Backend, body_of
from tests.parked_stores import dead_letter as parked_dead_letter
from tests.test_serve import Router, StartRouter, start_router

pytestmark = [pytest.mark.broker, pytest.mark.database]
__all__ = ["start_router"]  # a fixture, used by name

#: Small batches and quick looks around, so that a test sees several of each.
FAST = KeeperSettings(
    batch_size=200,
    batch_wait=0.05,
    prefetch=400,
    apps_interval=0.3,
    stats_interval=0.3,
    parked_interval=0.3,
)
APP = "alerts"


# -- helpers the fault tests share -----------------------------------------------------------


async def claims_for(path: Path, *apps: str) -> ClaimStore:
    """A claims registry (SQLite) in which each of ``apps`` holds a claim."""
    claims = SqliteClaimStore(path)
    await claims.open()
    for index, app in enumerate(apps):
        await claims.grant([ClaimSpec.parse(app, "sms.subscribed", f"company-{index}")])
    return claims


@contextlib.asynccontextmanager
async def keeping(
    settings: Settings,
    store: ParkedStore | None,
    claims: ClaimStore | None,
    keeper: KeeperSettings = FAST,
    *,
    name: str = "",
) -> AsyncIterator[Keeper]:
    """A keeper running in this process until the block ends; ready (consuming) on entry.
    Its store and claims registry are those given, else those of the settings' database."""
    running = Keeper(
        settings,
        keeper,
        store=store,
        claims=claims,
        metrics=KeeperMetrics(),
        connection_name=name or f"test-keeper-{uuid.uuid4().hex}",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    try:
        await until(running.ready.is_set, task=task)
        yield running
    finally:
        stop.set()
        async with asyncio.timeout(TIMEOUT):
            await task


async def until(condition: Any, *, task: asyncio.Task[None] | None = None) -> None:
    """Wait (at most :data:`TIMEOUT`) until ``condition()`` (maybe a coroutine) is true."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            if task is not None and task.done():
                task.result()
                raise AssertionError("the keeper stopped")
            result = condition()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.05)


async def count(store: ParkedStore, **query: Any) -> int:
    """Entries of any state matching ``query``."""
    return await store.count(replace(EVERY_STATE, **query))


async def dead_letter(
    amqp: AbstractRobustConnection, names: Names, app: str, count: int, *, start: int = 0
) -> list[str]:
    """Publish ``count`` dead letters as a worker of ``app`` makes them (through the app's
    dead-letter exchange, confirmed); their message ids."""
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(names.app_dead_letter_exchange(app))
    ids = [f"m-{start + n}" for n in range(count)]
    for chunk in range(0, count, 500):
        await asyncio.gather(
            *(
                exchange.publish(_dead_letter_message(app, message_id), routing_key="")
                for message_id in ids[chunk : chunk + 500]
            )
        )
    await channel.close()
    return ids


def _dead_letter_message(app: str, message_id: str) -> aio_pika.Message:
    headers = envelope.dead_lettered(
        {COMPANY_HEADER: "c1"},
        "sms.subscribed.c1",
        attempt=3,
        error="ValueError: the CRM said no",
        traceback="Traceback (most recent call last):\nValueError: the CRM said no\n",
        reason="exhausted",
        app=app,
        now="2026-12-07T05:00:00.000Z",
    )
    return aio_pika.Message(
        body_of("sms.subscribed", "c1", id=message_id),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        headers=headers,
    )


def queue_messages(queue: str) -> int:
    """Messages in ``queue``, ready or unacked (what RabbitMQ still holds of it), as the
    broker's statistics last said: for a quorum queue they lag by up to its statistics
    interval (5 s), so wait :func:`until` they say what is expected."""
    listed = rabbitmqctl("-q", "list_queues", "name", "messages", "--no-table-headers")
    for line in listed.splitlines():
        name, _, messages = line.partition("\t")
        if name == queue:
            return int(messages)
    raise AssertionError(f"no queue {queue}")


def sample(keeper: Keeper, name: str, **labels: str) -> float:
    """A sample of the keeper's metrics (None as -1: not there)."""
    assert keeper.metrics is not None
    value = keeper.metrics.registry.get_sample_value(name, labels)
    return -1.0 if value is None else value


def distinct_message_ids(store: ParkedStore) -> int:
    """Distinct message ids in a SQLite store's table, read directly."""
    assert isinstance(store, SqliteParkedStore)
    with closing(sqlite3.connect(store.path)) as conn:
        found: int = conn.execute(
            f"SELECT count(DISTINCT message_id) FROM {store.table}"
        ).fetchone()[0]
    return found


# -- what is stored ---------------------------------------------------------------------------


async def test_unrouted_invalid_and_a_dead_letter_are_stored_with_every_field(
    settings: Settings, backend: Backend, amqp: AbstractRobustConnection, tmp_path: Path
) -> None:
    # Given an application's queues as the router declares them, and its claim
    channel = await amqp.channel(publisher_confirms=True)
    names = settings.names
    await topology.declare(channel, names)
    app_queue = await topology.declare_app_queue(channel, names, APP)
    store = await backend.opened()
    claims = await claims_for(tmp_path / "claims.db", APP)

    # And one event in each landing zone: no one's (unrouted), unusable (invalid), and one
    # the application's queue dead-letters (rejected: RabbitMQ's own x-death)
    sent_at = datetime(2026, 12, 7, 5, 0, 1, tzinfo=UTC)
    unrouted_body = body_of("email.opened", "c9")
    events = await channel.get_exchange(names.events_exchange)
    await events.publish(
        aio_pika.Message(unrouted_body, message_id="u-1", timestamp=sent_at, app_id="ingress"),
        routing_key="email.opened.c9",
    )
    invalid_body = b'{"not": "an event"'
    await channel.default_exchange.publish(
        aio_pika.Message(
            invalid_body,
            message_id="i-1",
            headers={INVALID_REASON_HEADER: "not JSON", RECEIVED_AT_HEADER: 1765083601000},
        ),
        routing_key=names.invalid_queue,
    )
    dead_body = body_of("sms.subscribed", "c1")
    await channel.default_exchange.publish(
        aio_pika.Message(dead_body, message_id="d-1", content_type="application/json"),
        routing_key=app_queue.name,
    )
    rejected = await app_queue.get(timeout=10)
    await rejected.reject(requeue=False)

    # When the keeper runs
    async with keeping(settings, store, claims) as keeper:
        await until(lambda: _count_is(store, 3))
        assert keeper.draining == {APP}

    # Then each is an entry of its place, byte-exact, with what ops filter on
    reopened = await backend.opened()
    (unrouted,) = (await reopened.page(Query(place=Place.UNROUTED))).entries
    (invalid,) = (await reopened.page(Query(place=Place.INVALID))).entries
    (dead,) = (await reopened.page(Query(place=Place.DLQ, app=APP))).entries
    await reopened.close()

    assert (unrouted.app, unrouted.body, unrouted.message_id) == (None, unrouted_body, "u-1")
    assert (unrouted.event_type, unrouted.company) == ("email.opened", "c9")
    assert unrouted.routing_key == "email.opened.c9"
    assert unrouted.parked_at == sent_at  # when the ingress published it
    assert unrouted.properties.app_id == "ingress"

    assert (invalid.app, invalid.body, invalid.error) == (None, invalid_body, "not JSON")
    assert invalid.event_type is None
    assert invalid.parked_at == datetime.fromtimestamp(1765083601, tz=UTC)

    assert (dead.app, dead.body, dead.message_id) == (APP, dead_body, "d-1")
    assert (dead.event_type, dead.company, dead.reason) == ("sms.subscribed", "c1", "rejected")
    assert dead.properties.content_type == "application/json"
    assert dead.headers["x-death"][0]["queue"] == app_queue.name
    for entry in (unrouted, invalid, dead):
        assert entry.id is not None and entry.state.value == "parked"

    # And the landing zones are empty
    for queue in (names.unrouted_queue, names.invalid_queue, names.app_dead_letter_queue(APP)):
        assert await depth(amqp, queue) == 0
    await store.close()


async def _count_is(store: ParkedStore, expected: int, **query: Any) -> bool:
    return await count(store, **query) == expected


async def _job_is(store: ParkedStore, job_id: int, state: JobState) -> bool:
    return (await store.job(job_id)).state is state


async def test_a_newly_claimed_applications_dlq_is_drained_without_a_restart(
    settings: Settings, amqp: AbstractRobustConnection, tmp_path: Path
) -> None:
    # Given a keeper running while no application has claimed anything
    store = SqliteParkedStore(tmp_path / "router.db")
    claims = await claims_for(tmp_path / "router.db")
    async with keeping(settings, store, claims) as keeper:
        assert keeper.draining == frozenset()

        # When an application claims events and events are dead-lettered for it
        await claims.grant([ClaimSpec.parse("billing", "email.*")])
        await until(lambda: keeper.draining == {"billing"})
        await dead_letter(amqp, settings.names, "billing", 50)

        # Then they reach the store, and the keeper's metrics count them
        await until(lambda: _count_is(store, 50))
        # (a batch is counted once its commit returned: just after the store shows it)
        await until(lambda: sample(keeper, "attentive_router_keeper_entries_stored_total") == 50)
        assert sample(keeper, "attentive_router_keeper_duplicates_skipped_total") == 0
        assert sample(keeper, "attentive_router_keeper_batches_committed_total") >= 1
        queue = settings.names.app_dead_letter_queue("billing")
        await until(
            lambda: sample(keeper, "attentive_router_keeper_lag_messages", queue=queue) == 0
        )
        await until(lambda: sample(keeper, "attentive_router_parked_store_entries") == 50)
        parked = "attentive_router_parked_entries"
        billing = {"place": "dlq", "app": "billing", "reason": "exhausted"}
        await until(lambda: sample(keeper, parked, **billing) == 50)
        assert sample(keeper, parked, place="unrouted", app="", reason="exhausted") == -1


async def test_two_keepers_at_once_store_each_message_once(
    settings: Settings, amqp: AbstractRobustConnection, tmp_path: Path
) -> None:
    # Given two keepers (two router replicas) on the same store and broker
    path = tmp_path / "router.db"
    claims = [await claims_for(path, APP), SqliteClaimStore(path)]
    first, second = SqliteParkedStore(path), SqliteParkedStore(path)
    async with (
        keeping(settings, first, claims[0]) as one,
        keeping(settings, second, claims[1]) as two,
    ):
        # When 4,000 dead letters arrive
        ids = await dead_letter(amqp, settings.names, APP, 4000)

        # Then each is stored once, and the two keepers shared the work
        await until(lambda: _count_is(first, 4000))
        await until(lambda: queue_messages(settings.names.app_dead_letter_queue(APP)) == 0)
        assert distinct_message_ids(first) == len(ids)

        def stored() -> list[float]:
            return [sample(k, "attentive_router_keeper_entries_stored_total") for k in (one, two)]

        # (a batch is counted once its commit returned: just after the store shows it)
        await until(lambda: sum(stored()) == 4000)
        assert min(stored()) > 0


async def test_a_keeper_runs_the_replay_jobs_ops_ask_for(
    settings: Settings, amqp: AbstractRobustConnection, tmp_path: Path
) -> None:
    # Given a keeper that has parked 30 dead letters of an application
    channel = await amqp.channel()
    await topology.declare(channel, settings.names)
    app_queue = await topology.declare_app_queue(channel, settings.names, APP)
    path = tmp_path / "router.db"
    store = SqliteParkedStore(path)
    async with keeping(settings, store, await claims_for(path, APP)):
        await dead_letter(amqp, settings.names, APP, 30)
        await until(lambda: _count_is(store, 30))

        # When ops ask for a replay of them (a job in the store)
        query = Query(place=Place.DLQ, app=APP)
        job = await store.create_job(JobRequest.build("replay", query, "ops"))

        # Then the keeper runs it: every event is back in the application's queue, its
        # entry marked replayed, and the job done (recorded after its last marks)
        await until(lambda: _depth_is(amqp, app_queue.name, 30))
        await until(lambda: _count_is(store, 30, state=State.REPLAYED))
        await until(lambda: _job_is(store, job.id, JobState.DONE))
        assert (await store.job(job.id)).done == 30


# -- the classic DLQ of the previous release -----------------------------------------------


async def declared(amqp: AbstractRobustConnection, names: Names) -> aio_pika.abc.AbstractChannel:
    """A channel with publisher confirms, on which the router's topology is declared."""
    channel = await amqp.channel(publisher_confirms=True)
    await topology.declare(channel, names)
    return channel


async def declare_previous_release(
    channel: aio_pika.abc.AbstractChannel, names: Names, app: str
) -> aio_pika.abc.AbstractQueue:
    """An application's queues exactly as the previous release declared them (758ae15:
    router/topology.py ``declare_app_queue``): a classic DLQ."""
    dead = await channel.declare_exchange(
        names.app_dead_letter_exchange(app), aio_pika.ExchangeType.FANOUT, durable=True
    )
    dlq = await channel.declare_queue(
        names.app_dead_letter_queue(app), durable=True, arguments=CLASSIC_QUEUE_ARGUMENTS
    )
    await dlq.bind(dead)
    queue = await channel.declare_queue(
        names.app_queue(app),
        durable=True,
        arguments={
            **QUORUM_QUEUE_ARGUMENTS,
            "x-delivery-limit": topology.APP_DELIVERY_LIMIT,
            "x-dead-letter-exchange": names.app_dead_letter_exchange(app),
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )
    requeue = await channel.declare_exchange(
        names.app_requeue_exchange(app), aio_pika.ExchangeType.FANOUT, durable=True
    )
    await queue.bind(requeue)
    return queue


def queue_type(queue: str) -> str:
    listed = rabbitmqctl("-q", "list_queues", "name", "type", "--no-table-headers")
    types = dict(line.split("\t", 1) for line in listed.splitlines() if "\t" in line)
    return types.get(queue, "absent").strip()


async def dead_lettered_by_previous_release(
    channel: aio_pika.abc.AbstractChannel, names: Names, app: str, count: int
) -> aio_pika.abc.AbstractQueue:
    """``app``'s queues as the previous release declared them, and ``count`` events (message
    ids ``old-<n>``) its queue dead-lettered into the classic DLQ, rejected by its worker;
    the application's queue."""
    app_queue = await declare_previous_release(channel, names, app)
    for n in range(count):
        await channel.default_exchange.publish(
            aio_pika.Message(body_of("sms.subscribed", "c1", n=n), message_id=f"old-{n}"),
            routing_key=app_queue.name,
        )
    for _ in range(count):
        await (await app_queue.get(timeout=10)).reject(requeue=False)
    return app_queue


async def test_a_classic_dlq_of_the_previous_release_becomes_quorum_with_nothing_lost(
    settings: Settings, amqp: AbstractRobustConnection, tmp_path: Path
) -> None:
    # Given an application's queues as the previous release made them, and 300 events its
    # queue dead-lettered into the classic DLQ (rejected by its worker)
    names = settings.names
    channel = await declared(amqp, names)
    app_queue = await dead_lettered_by_previous_release(channel, names, APP, 300)
    dlq = names.app_dead_letter_queue(APP)
    await until(lambda: queue_messages(dlq) == 300)
    assert queue_type(dlq) == "classic"

    # When two keepers start at once (two replicas of the new release)
    path = tmp_path / "router.db"
    claims = [await claims_for(path, APP), SqliteClaimStore(path)]
    store = SqliteParkedStore(path)
    async with (
        keeping(settings, store, claims[0]) as one,
        keeping(settings, SqliteParkedStore(path), claims[1]) as two,
    ):
        await until(lambda: one.draining == {APP} and two.draining == {APP})

        # Then every event is in the store once, the DLQ is quorum, the holding queue gone
        await until(lambda: _count_is(store, 300))
        assert distinct_message_ids(store) == 300
        assert queue_type(dlq) == "quorum"
        assert queue_type(names.app_dead_letter_holding_queue(APP)) == "absent"
        assert queue_type(names.app_dead_letter_migration_lock(APP)) == "absent"

        # And the application's queue dead-letters into the quorum DLQ, drained as before
        await channel.default_exchange.publish(
            aio_pika.Message(body_of("sms.subscribed", "c1"), message_id="new-1"),
            routing_key=app_queue.name,
        )
        message = await app_queue.get(timeout=10)
        await message.reject(requeue=False)
        await until(lambda: _count_is(store, 301))
    await until(lambda: queue_messages(dlq) == 0)

    # And the router's own declaration of the application's queues now agrees with the broker
    await topology.declare_app_queue(await amqp.channel(), names, APP)


async def test_serve_upgraded_over_the_previous_release_migrates_its_dlq_and_binds_its_claims(
    names: Names, amqp: AbstractRobustConnection, tmp_path: Path, start_router: StartRouter
) -> None:
    # Given the previous release's queues for a claimed application, 100 events in its
    # classic DLQ, and its claim in the registry
    channel = await declared(amqp, names)
    app_queue = await dead_lettered_by_previous_release(channel, names, APP, 100)
    await claims_for(tmp_path / "claims.db", APP)

    # When this release serves (its admin API syncs the claims' bindings at start)
    router = start_router(ROUTER_ADMIN_TOKEN=TOKEN)

    # Then the keeper replaces the classic DLQ, storing its events once, and the claims'
    # bindings, refused over the classic DLQ, are made once it is quorum
    store = SqliteParkedStore(tmp_path / "claims.db")
    await store.open()
    await until(lambda: _stored_dlq(store, 100))
    await until(lambda: queue_type(names.app_dead_letter_queue(APP)) == "quorum")
    await until(lambda: b'"claims_synced"' in router.log.read_bytes())
    events = await channel.get_exchange(names.events_exchange)
    await events.publish(
        aio_pika.Message(body_of("sms.subscribed", "company-0")), "sms.subscribed.company-0"
    )
    await until(lambda: _depth_is(amqp, app_queue.name, 1))


async def _stored_dlq(store: ParkedStore, expected: int) -> bool:
    try:
        return await count(store, place=Place.DLQ, app=APP) == expected
    except ParkedStoreError:
        return False  # (the schema is not there yet)


async def test_a_migration_left_half_done_is_finished_by_the_next_keeper(
    settings: Settings, amqp: AbstractRobustConnection, tmp_path: Path
) -> None:
    # Given a keeper that died after step 3: the quorum DLQ is there, and the holding queue
    # still bound to the dead-letter exchange, with dead letters in it
    names = settings.names
    channel = await declared(amqp, names)
    await topology.declare_app_queue(channel, names, APP)
    holding = await channel.declare_queue(
        names.app_dead_letter_holding_queue(APP), durable=True, arguments=QUORUM_QUEUE_ARGUMENTS
    )
    await holding.bind(names.app_dead_letter_exchange(APP))
    await dead_letter(amqp, names, APP, 40)  # (in both queues: the exchange is a fanout)

    # When a keeper starts
    path = tmp_path / "router.db"
    store = SqliteParkedStore(path)
    async with keeping(settings, store, await claims_for(path, APP)):
        # Then the dead letters are stored once, and the holding queue is gone
        await until(lambda: _count_is(store, 40))
        await until(lambda: queue_type(holding.name) == "absent")
        assert distinct_message_ids(store) == 40


# -- serve ------------------------------------------------------------------------------------


async def _metrics_page(port: int) -> str:
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as ready:
                    if ready.status == 200:
                        async with session.get(f"http://127.0.0.1:{port}/metrics") as page:
                            return await page.text()
            await asyncio.sleep(0.1)


async def _unrouted_waiting(amqp: AbstractRobustConnection, names: Names) -> None:
    """One event in the unrouted queue."""
    channel = await declared(amqp, names)
    await channel.default_exchange.publish(
        aio_pika.Message(body_of("sms.subscribed"), message_id="s-1"),
        routing_key=names.unrouted_queue,
    )
    await channel.close()


async def _one_unrouted(database: Path) -> bool:
    """The store serve's keeper writes (in ``database``) holds the one unrouted event."""
    store = SqliteParkedStore(database)
    await store.open()
    try:
        return await count(store, place=Place.UNROUTED) == 1
    except ParkedStoreError:
        return False  # (the schema is not there yet)


async def _serving_until_stored(
    start_router: StartRouter, tmp_path: Path, **environment: str
) -> Router:
    """The router served with ``environment``, once its keeper stored the unrouted event."""
    router = start_router(**environment)
    await until(lambda: _one_unrouted(tmp_path / "claims.db"))
    return router


async def test_serve_runs_a_keeper_by_default(
    names: Names, amqp: AbstractRobustConnection, tmp_path: Path, start_router: StartRouter
) -> None:
    # Given an unrouted event waiting
    await _unrouted_waiting(amqp, names)

    # When the router serves with its defaults
    # Then its keeper stores the event (in a schema serve made) and empties the queue
    router = await _serving_until_stored(start_router, tmp_path, ROUTER_KEEPER_STATS_INTERVAL="0.3")
    await until(lambda: _depth_is(amqp, names.unrouted_queue, 0))

    # And /metrics shows the keeper's families beside the ingress's
    page = await _metrics_page(router.internal_port)
    assert "attentive_router_keeper_batches_committed_total" in page
    assert f'attentive_router_keeper_lag_messages{{queue="{names.unrouted_queue}"}}' in page


async def _depth_is(amqp: AbstractRobustConnection, queue: str, expected: int) -> bool:
    return await depth(amqp, queue) == expected


async def test_serve_with_two_processes_runs_one_keeper_in_the_first(
    names: Names, amqp: AbstractRobustConnection, tmp_path: Path, start_router: StartRouter
) -> None:
    # Given an unrouted event waiting
    await _unrouted_waiting(amqp, names)

    # When the router serves with two ingress processes
    # Then the event is stored, by one keeper, in the first process
    router = await _serving_until_stored(start_router, tmp_path, ROUTER_WORKERS="2")
    page = await _metrics_page(router.internal_port)
    families = {f.name: f for f in text_string_to_metric_families(page)}
    batches = families["attentive_router_keeper_batches_committed"].samples
    assert {sample.labels["process"] for sample in batches} == {"0"}
    assert router.log.read_bytes().count(b'"keeper_connected"') == 1


async def test_serve_runs_no_keeper_with_router_keeper_off(
    names: Names, amqp: AbstractRobustConnection, start_router: StartRouter
) -> None:
    # Given an unrouted event waiting
    await _unrouted_waiting(amqp, names)

    # When the router serves with ROUTER_KEEPER=off
    router = start_router(ROUTER_KEEPER="off")
    page = await _metrics_page(router.internal_port)

    # Then it says so, shows no keeper metrics, and the event stays in its queue
    assert b"keeper_disabled" in router.log.read_bytes()
    assert "attentive_router_keeper" not in page
    assert await depth(amqp, names.unrouted_queue) == 1


# -- pure parts ---------------------------------------------------------------------------


def test_keeper_settings_are_read_from_the_environment_and_refused_by_name() -> None:
    read = KeeperSettings.from_env(
        {"ROUTER_KEEPER": "off", "ROUTER_KEEPER_BATCH_SIZE": "50", "ROUTER_DATABASE_UPGRADE": "no"}
    )
    assert (read.enabled, read.batch_size, read.upgrade) == (False, 50, False)
    assert KeeperSettings.from_env({}) == KeeperSettings()
    with pytest.raises(ConfigError, match="ROUTER_KEEPER_PREFETCH must be an integer"):
        KeeperSettings.from_env({"ROUTER_KEEPER_PREFETCH": "0"})
    with pytest.raises(ConfigError, match="ROUTER_KEEPER must be one of"):
        KeeperSettings.from_env({"ROUTER_KEEPER": "maybe"})


async def test_the_inbox_gives_batches_oldest_first_full_or_after_the_wait() -> None:
    inbox = Inbox(batch_size=3)
    entries: list[Any] = [object() for _ in range(4)]  # (the inbox does not look inside)
    for tag, entry in enumerate(entries, start=1):
        inbox.put(entry, tag)
    assert await inbox.take(wait=60) == list(zip(entries[:3], [1, 2, 3], strict=True))  # full
    assert await inbox.take(wait=0.01) == [(entries[3], 4)]  # after the wait
    assert len(inbox) == 0


async def test_a_delivery_that_could_not_be_taken_in_stops_the_batches_after_it() -> None:
    # Given a batch in the inbox, then a delivery whose entry could not be made
    inbox = Inbox(batch_size=3)
    inbox.put(object(), 1)  # type: ignore[arg-type]
    inbox.fail(ValueError("not an entry"))
    inbox.put(object(), 3)  # type: ignore[arg-type]

    # Then the next take raises, waiting for nothing: no ack can go past that delivery
    with pytest.raises(ValueError, match="not an entry"):
        await inbox.take(wait=60)


def test_db_upgrade_then_version_say_the_schema_is_current(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an empty SQLite database
    url = f"sqlite:///{tmp_path / 'router.db'}"
    assert main(["db", "version", "--database-url", url, "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["version"] == 0

    # When ops upgrade it (twice: the second changes nothing)
    assert main(["db", "upgrade", "--database-url", url]) == 0
    assert main(["db", "upgrade", "--database-url", url]) == 0
    capsys.readouterr()

    # Then its version is this router's
    assert main(["db", "version", "--database-url", url]) == 0
    assert capsys.readouterr().out.strip() == (
        f"schema version {LATEST_VERSION} of {LATEST_VERSION} (current)"
    )


def test_a_reason_no_longer_parked_shows_as_zero() -> None:
    # Given a DLQ with entries parked for two reasons
    metrics = KeeperMetrics(CollectorRegistry())
    metrics.show_parked("dlq", "billing", {"exhausted": 3, "rejected": 1})

    # When the rejected ones are replayed
    metrics.show_parked("dlq", "billing", {"exhausted": 2})

    # Then the gauge says 0 for that reason, not its last count
    def parked(reason: str) -> float | None:
        labels = {"place": "dlq", "app": "billing", "reason": reason}
        return metrics.registry.get_sample_value("attentive_router_parked_entries", labels)

    assert (parked("exhausted"), parked("rejected")) == (2, 0)


async def test_jobs_still_to_end_and_what_they_have_left_are_shown(tmp_path: Path) -> None:
    # Given a running replay of 3 entries with 1 done, a queued purge of 3, and a finished job
    store = SqliteParkedStore(tmp_path / "router.db")
    await store.open()
    await store.upgrade()
    await store.add_many(
        [parked_dead_letter(body_of("sms.sent", n=n), message_id=f"m{n}") for n in range(3)]
    )
    query = Query.build(place="dlq", app="alerts")
    replay = await store.create_job(JobRequest.build("replay", query, "ops"))
    assert await store.claim_job("runner", timedelta(seconds=30), replay.id) is not None
    purge = await store.create_job(JobRequest.build("purge", query, "ops"))
    finished = await store.create_job(JobRequest.build("replay", query, "ops", dry_run=True))
    assert await store.claim_job("runner", timedelta(seconds=30), finished.id) is not None
    assert await store.finish_job(finished.id, "runner", JobState.DONE) is not None
    jobs = [await store.job(job.id) for job in (replay, purge, finished)]
    jobs[0] = replace(jobs[0], done=1)
    await store.close()

    # When the keeper shows them
    metrics = KeeperMetrics(CollectorRegistry())
    metrics.show_jobs(jobs)

    # Then the running and the queued one count, with what they have left
    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert value("attentive_router_parked_jobs", state="running") == 1
    assert value("attentive_router_parked_jobs", state="queued") == 1
    left = "attentive_router_parked_job_entries_remaining"
    assert (value(left, kind="replay"), value(left, kind="purge")) == (2, 3)
