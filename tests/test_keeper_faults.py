"""Nothing parked is lost when the keeper is killed, its database goes down or its broker
connection is closed, against the real RabbitMQ, SQLite and a PostgreSQL of the test's own
(the machine's shared PostgreSQL is never stopped): each dead letter ends in the store
exactly once, and none is acked before it was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import cast

import aiohttp
import asyncpg
import pytest
import structlog
from aio_pika.abc import AbstractRobustConnection
from prometheus_client.parser import text_string_to_metric_families

from router.amqp import topology
from router.claims.model import ClaimSpec
from router.claims.open import store_from_url
from router.parked.model import ParkedEvent
from router.parked.postgres import DEFAULT_TABLE
from router.parked.sqlite import SqliteParkedStore
from router.parked.store import ParkedStore, ParkedStoreError
from router.settings import Settings
from tests.conftest import AMQP_URL, rabbitmqctl
from tests.parked_stores import TIMEOUT
from tests.test_keeper import (
    APP,
    FAST,
    claims_for,
    count,
    dead_letter,
    distinct_message_ids,
    keeping,
    queue_messages,
    sample,
    until,
)
from tests.wire import free_port

pytestmark = [pytest.mark.broker, pytest.mark.database]


async def _prepared(settings: Settings, amqp: AbstractRobustConnection) -> None:
    """The application's queues, as the router declares them when a claim is granted."""
    channel = await amqp.channel()
    await topology.declare(channel, settings.names)
    await topology.declare_app_queue(channel, settings.names, APP)
    await channel.close()


# -- SIGKILL mid-drain ---------------------------------------------------------------------


def _keeper_process(
    settings: Settings, database: Path, log: Path, *options: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "router", "keeper", "--log-format", "json", *options],
        env={
            **os.environ,
            "ROUTER_AMQP_URL": AMQP_URL,
            "ROUTER_NAMESPACE": settings.namespace,
            "ROUTER_DATABASE_URL": f"sqlite:///{database}",
            "ROUTER_KEEPER_BATCH_SIZE": "200",
            "ROUTER_KEEPER_APPS_INTERVAL": "0.3",
        },
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


async def test_a_keeper_killed_mid_drain_of_10000_leaves_each_stored_once_after_a_restart(
    settings: Settings, amqp: AbstractRobustConnection, tmp_path: Path
) -> None:
    # Given 10,000 dead letters of a claimed application
    await _prepared(settings, amqp)
    database = tmp_path / "router.db"
    await claims_for(database, APP)
    ids = await dead_letter(amqp, settings.names, APP, 10_000)
    store = SqliteParkedStore(database)
    await store.open()

    async def stored() -> int:
        try:
            return await count(store)
        except ParkedStoreError:  # (the keeper has not made the schema yet)
            return 0

    # When `attentive-router keeper` is SIGKILLed once it has stored some, not all
    log = tmp_path / "keeper.log"
    killed = _keeper_process(settings, database, log)
    try:
        await until(lambda: _between(stored(), 1, len(ids) - 1))
    finally:
        killed.send_signal(signal.SIGKILL)
        await asyncio.to_thread(killed.wait, 30)
    at_kill = await stored()
    assert at_kill < len(ids)

    # And started again (serving its metrics)
    port = free_port()
    restarted = _keeper_process(settings, database, log, "--metrics-port", str(port))
    try:
        # Then all 10,000 are stored, each once, and the DLQ is empty
        await until(lambda: _equals(stored(), len(ids)))
        await until(lambda: queue_messages(settings.names.app_dead_letter_queue(APP)) == 0)
        assert distinct_message_ids(store) == len(ids)

        # And its metrics count what it stored
        url = f"http://127.0.0.1:{port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            page = await response.text()
        families = {f.name: f for f in text_string_to_metric_families(page)}
        stored_now = families["attentive_router_keeper_entries_stored"].samples[0].value
        assert stored_now == len(ids) - at_kill
    finally:
        restarted.terminate()
        assert await asyncio.to_thread(restarted.wait, 30) == 0


async def _between(value: object, low: int, high: int) -> bool:
    found = await value  # type: ignore[misc]
    return bool(low <= found <= high)


async def _equals(value: object, expected: int) -> bool:
    return bool(await value == expected)  # type: ignore[misc]


# -- the database down ---------------------------------------------------------------------


class OwnPostgres:
    """A PostgreSQL server of the test's own (initdb + pg_ctl), on a free port."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="keeper-pg-"))
        self.port = free_port()
        self.bin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        self.data = self.root / "data"
        if os.geteuid() == 0:  # (PostgreSQL refuses to run as root: its own user runs it)
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*prefix, f"{self.bin}/{command[0]}", *command[1:]],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url_with_password(self, password: str) -> str:
        return f"postgresql://postgres:{password}@127.0.0.1:{self.port}/postgres"

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # (not running)
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        pytest.skip("no PostgreSQL server binaries to run one of the test's own")
    server = OwnPostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


async def test_dead_letters_wait_in_the_queue_while_postgres_is_down_then_are_caught_up(
    settings: Settings,
    amqp: AbstractRobustConnection,
    own_postgres: OwnPostgres,
) -> None:
    # Given a keeper whose store and claims are in PostgreSQL (its URL with a password), and
    # which has stored the first 1,000 dead letters
    await _prepared(settings, amqp)
    dlq = settings.names.app_dead_letter_queue(APP)
    url = own_postgres.url_with_password(PASSWORD)
    registry = store_from_url(url)
    await registry.open()
    await registry.grant([ClaimSpec.parse(APP, "sms.subscribed")])
    await registry.close()
    with structlog.testing.capture_logs() as logs:
        async with keeping(replace(settings, database_url=url), None, None) as keeper:
            first = await dead_letter(amqp, settings.names, APP, 1000)
            await until(lambda: _stored_is(url, len(first)))
            await until(lambda: queue_messages(dlq) == 0)

            # When PostgreSQL stops and 2,000 more arrive
            await asyncio.to_thread(own_postgres.stop)
            more = await dead_letter(amqp, settings.names, APP, 2000, start=len(first))

            # Then the keeper fails to commit, retries, and acks none of them: all 2,000 are
            # still held by the broker, most of them waiting in the queue (the prefetch
            # bounds what the keeper holds)
            failures = "attentive_router_keeper_store_failures_total"
            await until(lambda: sample(keeper, failures) >= 3)
            await until(lambda: queue_messages(dlq) == len(more))
            ready = await _ready(amqp, dlq)
            assert ready >= len(more) - FAST.prefetch and ready > 0

            # When PostgreSQL is back
            await asyncio.to_thread(own_postgres.start)

            # Then the keeper catches up: every dead letter stored once, the queue empty
            await until(lambda: _stored_is(url, len(first) + len(more)))
            await until(lambda: queue_messages(dlq) == 0)
    assert await _stored(url, "count(DISTINCT message_id)") == len(first) + len(more)

    # And the outage was logged once as it began and once as it ended, without the password
    events = [line["event"] for line in logs]
    assert events.count("parked_store_unavailable") == 1
    assert events.count("parked_store_available") == 1
    assert PASSWORD not in repr(logs)


#: The own PostgreSQL trusts every login: any password does, and none may be logged.
PASSWORD = "the-database-password"


async def _stored(url: str, what: str = "count(*)") -> int:
    """Read from the store's table directly (a connection of its own, for each look)."""
    conn = await asyncpg.connect(url, timeout=TIMEOUT)
    try:
        found: int = await conn.fetchval(f"SELECT {what} FROM {DEFAULT_TABLE}")
    finally:
        await conn.close()
    return found


async def _stored_is(url: str, expected: int) -> bool:
    return await _stored(url) == expected


async def _count_is(store: ParkedStore, expected: int) -> bool:
    return await count(store) == expected


async def _ready(amqp: AbstractRobustConnection, queue: str) -> int:
    channel = await amqp.channel()
    declared = await channel.declare_queue(queue, passive=True)
    await channel.close()
    return declared.declaration_result.message_count or 0


# -- the broker connection closed ----------------------------------------------------------


class HeldStore:
    """The real store, whose commits wait while :attr:`held` is set (the test's hand on the
    keeper between its commit and its ack)."""

    def __init__(self, store: ParkedStore) -> None:
        self.inner = store
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def add_many(self, entries: Sequence[ParkedEvent]) -> int:
        added = await self.inner.add_many(entries)
        if self.held.is_set():
            self.waiting.set()
            await self.release.wait()
        return added


def close_connection(name: str) -> None:
    listed = rabbitmqctl("-q", "list_connections", "pid", "client_properties", "--no-table-headers")
    pids = [line.split("\t")[0] for line in listed.splitlines() if f'"{name}"' in line]
    assert len(pids) == 1, f"no single connection named {name!r}"
    rabbitmqctl("close_connection", pids[0], "closed by the test")


async def test_a_closed_broker_connection_loses_nothing_and_duplicates_nothing(
    settings: Settings, amqp: AbstractRobustConnection, tmp_path: Path
) -> None:
    # Given a keeper that has committed a batch but not yet acked it
    await _prepared(settings, amqp)
    path = tmp_path / "router.db"
    held = HeldStore(SqliteParkedStore(path))
    store = cast(ParkedStore, held)
    name = f"test-keeper-{uuid.uuid4().hex}"
    dlq = settings.names.app_dead_letter_queue(APP)
    async with keeping(settings, store, await claims_for(path, APP), name=name) as keeper:
        held.held.set()
        ids = await dead_letter(amqp, settings.names, APP, 3000)
        await until(held.waiting.is_set)

        # When the broker closes its connection, and the commit returns
        await asyncio.to_thread(close_connection, name)
        await until(lambda: not keeper.ready.is_set())
        held.held.clear()
        held.release.set()

        # Then the keeper connects again, the deliveries it had not acked come back, and
        # every dead letter is stored once
        await until(keeper.ready.is_set)
        await until(lambda: _count_is(store, len(ids)))
        await until(lambda: queue_messages(dlq) == 0)
        assert distinct_message_ids(held.inner) == len(ids)
        # (the batch committed before the close came back, and was counted, not stored again)
        await until(lambda: sample(keeper, "attentive_router_keeper_duplicates_skipped_total") > 0)
