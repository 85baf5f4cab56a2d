"""A real 3-node RabbitMQ cluster on local ports: the node the ingress (and a worker) is
connected to stops mid-stream; every event answered 2xx still reaches its owner.

Slow (the nodes take a while to start), still part of ``make test``; the nodes are removed
afterwards, and the machine's own broker is not touched.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from consumers import Event, Worker
from consumers.runtime.runner import WorkerRunner
from consumers.runtime.settings import WorkerSettings
from router.admin.app import create_admin_app
from router.contract.events import message_id
from router.contract.names import WEBHOOK_PATH, Names
from router.settings import Settings
from tests.conftest import TOKEN, Client, MakeIngress, served_ingress
from tests.probes import internal
from tests.rabbit_cluster import LocalCluster
from tests.steps import claim
from tests.streams import Stream
from tests.test_broker_faults import posting

pytestmark = [pytest.mark.broker, pytest.mark.slow]

WEBHOOK = WEBHOOK_PATH


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    nodes = LocalCluster(size=3)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def cluster_settings(settings: Settings, cluster: LocalCluster, tmp_path: Path) -> Settings:
    return replace(
        settings,
        amqp_url=cluster.urls,
        admin_token=TOKEN,
        database_url=f"sqlite:///{tmp_path / 'claims.db'}",
        confirm_timeout=2.0,
    )


@pytest.fixture
async def cluster_admin(cluster_settings: Settings) -> AsyncIterator[Client]:
    client = Client(TestServer(create_admin_app(cluster_settings)))
    await client.start_server()
    yield client
    await client.close()


async def test_the_ingress_and_a_worker_move_to_another_node_and_nothing_answered_2xx_is_lost(
    cluster: LocalCluster,
    cluster_settings: Settings,
    cluster_admin: Client,
    make_ingress: MakeIngress,
    names: Names,
) -> None:
    # Given an application owning sms.* on a 3-node cluster (its quorum queue replicated)
    await claim(cluster_admin, "sms-audit", "sms.*")
    handled: Counter[str] = Counter()
    worker = Worker("sms-audit", prefetch=64)

    @worker.on("sms.*")
    async def record(event: Event) -> None:
        handled[event.message_id] += 1

    runner = WorkerRunner(
        worker,
        WorkerSettings(amqp_url=cluster.urls, namespace=names.prefix, shutdown_timeout=5),
    )
    stop_worker = asyncio.Event()
    worker_task = asyncio.create_task(runner.run(stop_worker, claim=False))
    ingress = await make_ingress(cluster_settings)
    broker = served_ingress(ingress).broker
    # (ready, says the internal listener the kubelet probes; the webhook port has no /readyz)
    assert (await internal(ingress, "/readyz")).status == 200
    assert (await ingress.get("/readyz")).status == 404

    # And events streaming through the ingress
    stream = Stream(posting(ingress))
    async with stream.running():
        await stream.until(200, at_least=200)

        # When the node the ingress is connected to stops mid-stream
        victim = cluster.nodes[broker.node]
        await asyncio.to_thread(victim.stop)

        # Then the ingress moves to another node and accepts again
        accepted_before = stream.count(200)
        await stream.until(200, at_least=accepted_before + 200, timeout=90)
        assert cluster.nodes[broker.node] is not victim
        # And its probe and its metrics say it is ready, connected to that node
        ready = await internal(ingress, "/readyz")
        assert ready.status == 200, await ready.text()
        assert await ready.json() == {"status": "ready", "connected": True, "blocked": False}
        page = await (await internal(ingress, "/metrics")).text()
        assert "attentive_router_broker_ready 1.0" in page

    # And every event answered 200 was handled by its owner (duplicates allowed, none lost)
    accepted = {message_id(body) for body in stream.accepted()}
    try:
        async with asyncio.timeout(60):
            while not accepted <= handled.keys():
                await asyncio.sleep(0.1)
    finally:
        stop_worker.set()
        await asyncio.wait_for(worker_task, 30)
    statuses = Counter(stream.answers.values())
    duplicates = sum(n - 1 for n in handled.values() if n > 1)
    print(
        f"\nsent={len(stream.answers)} 200={statuses[200]} 503={statuses[503]} "
        f"other={len(stream.answers) - statuses[200] - statuses[503]} "
        f"handled={len(handled)} duplicates={duplicates} "
        f"missing={len(accepted - handled.keys())}"
    )
    # while it could not publish: 503 (or no answer at all), never a 2xx
    assert set(statuses) <= {200, 503, 0}, statuses
