"""Nothing parked is lost, and no job runs twice, when the broker restarts under the keeper or
a router dies mid-replay: against a RabbitMQ node of the test's own (the machine's broker is
never stopped), the machine's RabbitMQ for the replay, SQLite and a PostgreSQL database of the
test's own on the machine's server.

- The broker restarts (its app stopped and started, or the node SIGKILLed and started again)
  while a keeper drains 10,000 dead letters, at the worst moment: a batch committed, not yet
  acked. Each dead letter ends in the store exactly once, and the DLQ is empty.
- Two ``attentive-router keeper`` processes on one store and namespace: a replay job created
  once (``dlq replay --detach``) is run by one of them at a time (its lease); when the one
  running it is SIGKILLed half-way, the other resumes it and finishes. Every entry is marked
  replayed once, every event arrives, and no more than the in-flight window arrives twice.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import aio_pika
import asyncpg
import orjson
import pytest
from aio_pika.abc import AbstractQueue, AbstractRobustConnection

from router.contract.names import Names
from router.parked.jobs import AuditAction, Job, JobState
from router.parked.model import State
from router.parked.postgres import PostgresParkedStore
from router.parked.query import Query
from router.parked.replay import DEFAULT_WINDOW
from router.parked.sqlite import SqliteParkedStore
from router.parked.store import ParkedStore
from router.settings import Settings
from tests.conftest import AMQP_URL, depth, take
from tests.parked_stores import POSTGRES_URL, TIMEOUT
from tests.rabbit_cluster import Node
from tests.test_keeper import (
    APP,
    claims_for,
    count,
    dead_letter,
    distinct_message_ids,
    keeping,
    sample,
    until,
)
from tests.test_keeper_faults import HeldStore, _prepared
from tests.test_replay_jobs import app_queue, park
from tests.wire import free_port

pytestmark = [pytest.mark.broker, pytest.mark.slow]
__all__ = ["app_queue"]  # fixtures, used by name

ROOT = str(Path(__file__).resolve().parent.parent)


# -- the broker restarted mid-drain ----------------------------------------------------------


@pytest.fixture
def node() -> Iterator[Node]:
    """A RabbitMQ node of the test's own, on free ports, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="attentive-parked-faults-"))
    shutil.chown(root, "rabbitmq", "rabbitmq")
    amqp_port = free_port()
    dist_port = free_port()
    while dist_port == amqp_port:
        dist_port = free_port()
    own = Node(f"parked-{uuid.uuid4().hex[:8]}@localhost", amqp_port, dist_port, root / "node")
    try:
        own.start()
        own.wait_up()
        yield own
    finally:
        own.stop()
        own.kill()
        if not os.environ.get("KEEP_CLUSTER_FILES"):  # keep the node's logs to look into
            shutil.rmtree(root, ignore_errors=True)


async def held_by(node: Node, queue: str) -> int:
    """Messages ``node`` holds in ``queue``, ready or unacked (its statistics lag up to 5 s
    for a quorum queue: wait :func:`until` they say what is expected)."""
    listed = await asyncio.to_thread(
        node.ctl, "-q", "list_queues", "name", "messages", "--no-table-headers"
    )
    for line in listed.splitlines():
        name, _, messages = line.partition("\t")
        if name == queue:
            return int(messages)
    raise AssertionError(f"no queue {queue} on {node.name}")


async def down(node: Node, how: str) -> None:
    """Take ``node`` down: its app stopped, or its VM SIGKILLed."""
    if how == "stop_app":
        await asyncio.to_thread(node.ctl, "stop_app")
    else:
        await asyncio.to_thread(node.kill)
        await until(lambda: asyncio.to_thread(lambda: not node.running()))


async def up(node: Node, how: str) -> None:
    """Bring ``node`` back: its app started, or the node started again."""
    if how == "stop_app":
        await asyncio.to_thread(node.ctl, "start_app")
        await asyncio.to_thread(node.ctl, "await_startup", "--timeout", "120")
    else:
        await asyncio.to_thread(node.start)
        await asyncio.to_thread(node.wait_up)


@pytest.mark.parametrize("how", ["stop_app", "sigkill"])
async def test_a_broker_restart_mid_drain_of_10000_leaves_each_stored_once(
    how: str, node: Node, settings: Settings, tmp_path: Path
) -> None:
    # Given 10,000 dead letters of a claimed application, in its DLQ on a node of our own
    on_node = replace(settings, amqp_url=node.url)
    names = on_node.names
    dlq = names.app_dead_letter_queue(APP)
    filler = await aio_pika.connect_robust(node.url)
    async with filler:
        await _prepared(on_node, filler)
        ids = await dead_letter(filler, names, APP, 10_000)
    path = tmp_path / "router.db"
    held = HeldStore(SqliteParkedStore(path))
    store = cast(ParkedStore, held)

    # And a keeper draining them, stopped by the test at a batch it has committed, not acked
    async with keeping(on_node, store, await claims_for(path, APP)) as keeper:
        await until(lambda: _at_least(store, 2_000))
        held.held.set()
        await until(held.waiting.is_set)
        committed = await count(store)
        assert committed < len(ids)

        # When the broker restarts meanwhile, and the commit then returns
        await down(node, how)
        await until(lambda: not keeper.ready.is_set())
        await up(node, how)
        held.held.clear()
        held.release.set()

        # Then the keeper connects again, the deliveries it had not acked come back, and
        # every dead letter is stored exactly once: nothing lost, nothing twice, DLQ empty
        await until(keeper.ready.is_set)
        await until(lambda: _at_least(store, len(ids)))
        await until(lambda: _is(held_by(node, dlq), 0))
        assert await count(store) == len(ids)
        assert distinct_message_ids(held.inner) == len(ids)
        # (the committed batch came back, and was counted, not stored again)
        duplicates = "attentive_router_keeper_duplicates_skipped_total"
        await until(lambda: sample(keeper, duplicates) > 0)
        skipped = sample(keeper, duplicates)
    print(f"\n{how}: committed before the restart={committed} stored={len(ids)} {skipped=}")


async def _at_least(store: ParkedStore, expected: int) -> bool:
    return await count(store) >= expected


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


# -- two routers' keepers on one replay job --------------------------------------------------

#: Published and not yet marked replayed at most (four windows: router/parked/replay.py):
#: what a runner killed at any moment leaves to be published twice.
IN_FLIGHT = 4 * DEFAULT_WINDOW
#: How long a job waits for a runner after its runner died: the lease (30 s), and the run.
RESUME_TIMEOUT = 120.0
ENTRIES = 3_000


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """A PostgreSQL database of the test's own on the machine's server, dropped afterwards
    (the keeper processes use the store's default tables)."""
    name = f"parked_faults_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
        yield f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
        await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await connection.close()


class Routers:
    """``attentive-router keeper`` processes on one store and namespace."""

    def __init__(self, names: Names, database_url: str, logs: Path) -> None:
        self.env = {
            **os.environ,
            "ROUTER_AMQP_URL": AMQP_URL,
            "ROUTER_NAMESPACE": names.prefix,
            "ROUTER_DATABASE_URL": database_url,
            # (a dead keeper's job is resumed after 5 s, not the default 30)
            "ROUTER_KEEPER_JOB_LEASE": "5",
        }
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = self.logs / f"keeper-{len(self.processes)}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "router", "keeper", "--log-format", "json"],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
        )
        self.processes.append(process)
        return process

    def running(self, owner: str | None) -> subprocess.Popen[bytes]:
        """The process whose job runner is ``owner`` (``host:pid:random``)."""
        assert owner is not None
        pid = int(owner.split(":")[-2])
        (process,) = [p for p in self.processes if p.pid == pid]
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def routers(names: Names, database_url: str, tmp_path: Path) -> Iterator[Routers]:
    started = Routers(names, database_url, tmp_path)
    try:
        yield started
    finally:
        started.stop()


async def detached_replay(names: Names, database_url: str, event: str, *options: str) -> int:
    """``attentive-router dlq replay --detach``: the job it created, for a keeper to run."""
    command = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "router", "dlq", "replay", "--app", APP, "--type", event),
        *("--detach", "--json", "--database-url", database_url, "--namespace", names.prefix),
        *options,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(command.communicate(), TIMEOUT)
    assert command.returncode == 0, err.decode()
    job = orjson.loads(out)
    assert (job["state"], job["matched"]) == ("queued", ENTRIES)
    return int(job["id"])


class Watch:
    """The runners a job had, in turn, as its record said while it ran."""

    def __init__(self, store: ParkedStore, job_id: int) -> None:
        self.store, self.job_id = store, job_id
        self.owners: list[str] = []

    async def look(self) -> Job:
        job = await self.store.job(self.job_id)
        owner = job.lease_owner
        if job.state is JobState.RUNNING and owner and owner not in self.owners[-1:]:
            self.owners.append(owner)
        return job

    async def until_done(self, done: int) -> Job:
        """Look until the job recorded ``done`` entries (or ended)."""
        async with asyncio.timeout(TIMEOUT):
            while (job := await self.look()).done < done and not job.state.finished:
                await asyncio.sleep(0.02)
        return job

    async def until_ended(self, timeout: float = TIMEOUT) -> Job:
        """Look until the job ended (done, cancelled or failed)."""
        async with asyncio.timeout(timeout):
            while not (job := await self.look()).state.finished:
                await asyncio.sleep(0.02)
        return job


async def replayed_once(
    store: ParkedStore,
    job_id: int,
    event: str,
    queue: AbstractQueue,
    amqp: AbstractRobustConnection,
) -> int:
    """Check the job ended done with every entry of ``event`` marked replayed once, and every
    event arrived in ``queue`` (emptied); how many arrived twice."""
    job = await store.job(job_id)
    assert (job.state, job.matched, job.done, job.failed) == (JobState.DONE, ENTRIES, ENTRIES, 0)
    replayed = Query.build(app=APP, event=event, state=State.REPLAYED)
    assert await store.count(replayed) == await store.count(replace(replayed, state=None))
    assert await store.count(replayed) == ENTRIES
    assert [r.action for r in await store.audit(job_id=job_id)] == [AuditAction.REPLAY]
    arrived = await depth(amqp, queue.name)
    ids = Counter(m.message_id for m in await take(queue, arrived, timeout=TIMEOUT))
    assert len(ids) == ENTRIES and all(i and i.startswith(event) for i in ids)
    return arrived - ENTRIES


@pytest.mark.database
async def test_two_routers_run_one_replay_job_once_and_the_survivor_finishes_it(
    routers: Routers,
    database_url: str,
    names: Names,
    app_queue: AbstractQueue,
    amqp: AbstractRobustConnection,
) -> None:
    # Given two routers' keepers on one PostgreSQL store and namespace, and 3,000 dead
    # letters of an application parked there
    store = PostgresParkedStore(database_url)
    await store.open()
    try:
        await store.upgrade()
        await park(store, ENTRIES, "sms.subscribed")
        routers.start()
        routers.start()

        # When ops replay them once (the command leaves the job to a keeper)
        first = Watch(store, await detached_replay(names, database_url, "sms.subscribed"))

        # Then one keeper runs it, start to end, and every entry is replayed once: no event
        # arrives twice
        await first.until_ended()
        assert len(first.owners) == 1, first.owners
        assert await replayed_once(store, first.job_id, "sms.subscribed", app_queue, amqp) == 0
        assert all(p.poll() is None for p in routers.processes)

        # When 3,000 more are replayed at 300 a second, and the keeper running that job is
        # SIGKILLed half-way
        await park(store, ENTRIES, "sms.sent")
        second = Watch(
            store, await detached_replay(names, database_url, "sms.sent", "--rate", "300")
        )
        at_half = await second.until_done(ENTRIES // 2)
        assert at_half.state is JobState.RUNNING and at_half.done < ENTRIES
        doomed = routers.running(at_half.lease_owner)
        doomed.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(doomed.wait, 30) == -signal.SIGKILL
        killed_at = (await store.job(second.job_id)).done

        # Then the other keeper resumes it once the dead one's lease has expired, and
        # finishes it: every entry replayed once in the store, every event arrived, and at
        # most the in-flight window twice
        ended = await second.until_ended(RESUME_TIMEOUT)
        assert ended.state is JobState.DONE, ended
        assert len(second.owners) == 2, second.owners
        (survivor,) = [p for p in routers.processes if p is not doomed]
        assert routers.running(second.owners[0]) is doomed
        assert routers.running(second.owners[1]) is survivor
        twice = await replayed_once(store, second.job_id, "sms.sent", app_queue, amqp)
        assert 0 <= twice <= IN_FLIGHT
        print(f"\nkilled at done={killed_at} of {ENTRIES}; arrived twice={twice} (<= {IN_FLIGHT})")
    finally:
        await store.close()
