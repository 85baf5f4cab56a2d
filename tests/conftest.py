"""Fixtures shared by the tests that talk to the real RabbitMQ on this machine.

Every test gets its own namespace (``t-<uuid>``), so its exchanges and queues are its own;
the fixture that made them deletes them. Connections are named after the test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient, TestServer
from aiohttp.web_runner import BaseRunner
from yarl import URL

from consumers import Worker
from consumers.runtime.runner import WorkerRunner
from consumers.runtime.settings import WorkerSettings
from router.admin.app import create_admin_app
from router.amqp import topology
from router.amqp.topology import QUORUM_QUEUE_ARGUMENTS
from router.contract.names import SIGNATURE_HEADER, Names
from router.contract.signing import sign
from router.ingress.service import Ingress
from router.parked.open import parked_store_from_url
from router.settings import Settings

AMQP_URL = os.environ.get("ROUTER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
SIGNING_KEY = "test-signing-key"
OLD_SIGNING_KEY = "old-signing-key"

#: tests.wire: serve_settings, the ingress served as `serve` serves it; tests.parked_stores:
#: backend and store, a parked-event store of each backend on a place of the test's own;
#: tests.browser: chromium and browser_page, Debian's Chromium through Playwright;
#: tests.console_steps: console, the admin app and its console with an operator and a viewer.
pytest_plugins = ["tests.wire", "tests.parked_stores", "tests.browser", "tests.console_steps"]


@pytest.fixture
def test_id(request: pytest.FixtureRequest) -> str:
    return str(request.node.nodeid)


_NAMESPACES: set[str] = set()


class _Sweeper:
    """Deletes, in a thread of its own, the queues that finished tests' namespaces left.

    A test deletes the topology it knows it made, but not the application queues a claim
    granted in it created. Those are quorum queues, and RabbitMQ 3.x reserves three file
    handles for each one alive: left to the session's end, some hundred of them exhausted this
    machine's node (a ``nofile`` limit of 1,024) and it stopped answering new connections near
    the end of the suite. So every ``BATCH`` finished namespaces are swept while the tests go on.
    """

    BATCH = 20

    def __init__(self) -> None:
        self.finished: list[str] = []
        self.thread: threading.Thread | None = None

    def finish(self, prefix: str) -> None:
        self.finished.append(prefix)
        if len(self.finished) >= self.BATCH and not self.busy():
            batch, self.finished = self.finished, []
            self.thread = threading.Thread(target=self._sweep, args=(batch,), daemon=True)
            self.thread.start()

    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def _sweep(self, batch: list[str]) -> None:
        sweep(tuple(f"{prefix}." for prefix in batch), kinds=("queues",))

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join(timeout=120)


_SWEEPER = _Sweeper()


@pytest.fixture(scope="session", autouse=True)
def _sweep_namespaces() -> Iterator[None]:
    """After the session, delete whatever any test's namespace left at the broker.

    Tests clean up what they know they made; this catches the rest (an application queue a
    claim created, a test that failed half-way), so the broker does not fill with leftovers.
    """
    yield
    _SWEEPER.join()
    if _NAMESPACES:
        sweep(tuple(f"{prefix}." for prefix in _NAMESPACES))


def rabbitmqctl(*args: str) -> str:
    """What ``rabbitmqctl ARGS`` prints about the machine's node (it must succeed)."""
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


def sweep(prefixes: tuple[str, ...], kinds: tuple[str, ...] = ("queues", "exchanges")) -> None:
    """Delete every queue and exchange whose name starts with one of ``prefixes``."""
    listed: dict[str, list[str]] = {"queues": [], "exchanges": []}
    listed |= {
        kind: subprocess.run(
            ["rabbitmqctl", "-q", f"list_{kind}", "name", "--no-table-headers"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout.split()
        for kind in kinds
    }

    async def delete() -> None:
        connection = await aio_pika.connect(
            AMQP_URL, client_properties={"connection_name": "test-sweep"}
        )
        async with connection:
            channel = await connection.channel()
            for queue in listed["queues"]:
                if queue.startswith(prefixes):
                    try:
                        await channel.queue_delete(queue)
                    except aiormq.exceptions.ChannelClosed:  # (exclusive to a live connection)
                        channel = await connection.channel()
            for exchange in listed["exchanges"]:
                if exchange.startswith(prefixes):
                    await channel.exchange_delete(exchange)

    asyncio.run(delete())


@pytest.fixture
async def names(test_id: str) -> AsyncIterator[Names]:
    """A namespace of this test's own; its topology is deleted afterwards."""
    ns = Names(prefix=f"t-{uuid.uuid4().hex[:12]}")
    _NAMESPACES.add(ns.prefix)
    yield ns
    connection = await aio_pika.connect(AMQP_URL, client_properties={"connection_name": test_id})
    async with connection:
        await topology.delete(await connection.channel(), ns)
    _SWEEPER.finish(ns.prefix)


@pytest.fixture
def settings(names: Names) -> Settings:
    """The test's router settings. The archive stream is off unless a test is about it (see
    ``archive_on``): one stream made and deleted per test, hundreds in a run, came with this
    machine's RabbitMQ 3.10 ceasing to answer twice (the cause not proven); the archive's own
    tests, ``serve`` and the demo keep it on."""
    return Settings(
        amqp_url=AMQP_URL,
        signing_keys=(SIGNING_KEY, OLD_SIGNING_KEY),
        namespace=names.prefix,
        confirm_timeout=2.0,
        retry_after=3,
        archive=False,
    )


def archive_on(settings: Settings) -> Settings:
    """``settings`` with the archive stream on, as the router runs by default."""
    return replace(settings, archive=True)


@pytest.fixture
async def amqp(test_id: str) -> AsyncIterator[AbstractRobustConnection]:
    """A connection of the test's own, to look into queues."""
    connection = await aio_pika.connect_robust(
        AMQP_URL, client_properties={"connection_name": test_id}
    )
    async with connection:
        yield connection


#: A test client of the admin app or of an ingress (whose ``app`` is None: it has none).
Client = TestClient[web.Request, Any]
MakeIngress = Callable[..., Awaitable[Client]]


class IngressTestServer(BaseTestServer):
    """An :class:`~router.ingress.service.Ingress`, for aiohttp's test client to talk to: its
    start and stop are the ingress's own, as ``attentive-router serve`` runs them."""

    def __init__(self, ingress: Ingress) -> None:
        super().__init__(host=ingress.settings.host)
        self.ingress = ingress
        self.stopped = False

    async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **_: Any) -> None:
        await self.ingress.start()
        self.port = self.ingress.port

    def make_url(self, path: str | URL) -> URL:
        url = URL(path)
        assert not url.absolute
        return URL.build(scheme="http", host=self.host, port=self.port).join(url)

    async def close(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.ingress.stop()

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        raise AssertionError("an ingress is no aiohttp app: start_server starts it")


def served_ingress(client: Client) -> Ingress:
    """The ingress a client that ``make_ingress`` started talks to."""
    server = client.server
    assert isinstance(server, IngressTestServer)
    return server.ingress


@pytest.fixture
async def make_ingress(test_id: str) -> AsyncIterator[MakeIngress]:
    """Start an ingress for some settings, on a port of its own on 127.0.0.1; ``wait_ready``
    waits for its broker connection."""
    clients: list[Client] = []

    async def start(settings: Settings, *, wait_ready: bool = True) -> Client:
        local = replace(settings, host="127.0.0.1", port=0, internal_port=0)
        ingress = Ingress(local, connection_name=test_id)
        client: Client = TestClient(IngressTestServer(ingress))
        await client.start_server()
        clients.append(client)
        if wait_ready:
            await ingress.broker.wait_ready(timeout=15)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def ingress(make_ingress: MakeIngress, settings: Settings) -> Client:
    """The ingress under test, connected to the local RabbitMQ with this test's namespace."""
    return await make_ingress(settings)


TOKEN = "test-admin-token-of-32-characters-at-least"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MakeAdmin = Callable[[], Awaitable[Client]]


@pytest.fixture
def admin_settings(settings: Settings, tmp_path: Path) -> Settings:
    """The test's settings with an admin token and a claims database of its own."""
    return replace(settings, admin_token=TOKEN, database_url=f"sqlite:///{tmp_path / 'claims.db'}")


@pytest.fixture
async def make_admin(admin_settings: Settings) -> AsyncIterator[MakeAdmin]:
    """Start an admin API on the test's database (again, to simulate a router restart)."""
    clients: list[Client] = []

    store = parked_store_from_url(admin_settings.database_url.reveal())
    await store.open()
    try:
        await store.upgrade()  # serve (or the keeper) does this at start
    finally:
        await store.close()

    async def start() -> Client:
        client = Client(TestServer(create_admin_app(admin_settings)))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def admin(make_admin: MakeAdmin) -> Client:
    """The admin API under test (claims in a fresh SQLite file)."""
    return await make_admin()


@dataclass
class Running:
    """A worker running in the test's process."""

    runner: WorkerRunner
    stop: asyncio.Event
    task: asyncio.Task[None]


StartWorker = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_worker(admin: Client, names: Names) -> AsyncIterator[StartWorker]:
    """Run a worker in this process against the test's router and namespace."""
    running: list[Running] = []

    async def start(worker: Worker, **overrides: object) -> Running:
        settings = WorkerSettings(
            amqp_url=AMQP_URL,
            admin_url=str(admin.make_url("")).rstrip("/"),
            admin_token=TOKEN,
            namespace=names.prefix,
            **overrides,  # type: ignore[arg-type]
        )
        stop = asyncio.Event()
        runner = WorkerRunner(worker, settings)
        task = asyncio.create_task(runner.run(stop))
        async with asyncio.timeout(15):
            while not runner.consuming.is_set():
                if task.done():
                    task.result()  # raises what stopped it
                await asyncio.sleep(0.02)
        handle = Running(runner, stop, task)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        handle.stop.set()
        await asyncio.wait_for(asyncio.shield(handle.task), 30)


@dataclass
class Tap:
    """A queue of the test's own bound to the events exchange: what a consumer would see."""

    queue: AbstractQueue

    async def take(self, count: int, timeout: float = 10.0) -> list[AbstractIncomingMessage]:
        """Get (and ack) ``count`` messages, waiting up to ``timeout`` for them."""
        return await take(self.queue, count, timeout)


async def take(
    queue: AbstractQueue, count: int, timeout: float = 10.0
) -> list[AbstractIncomingMessage]:
    messages: list[AbstractIncomingMessage] = []
    async with asyncio.timeout(timeout):
        while len(messages) < count:
            message = await queue.get(fail=False, no_ack=True)
            if message is None:
                await asyncio.sleep(0.02)
            else:
                messages.append(message)
    return messages


async def depth(connection: AbstractRobustConnection, queue_name: str) -> int:
    """How many messages wait in ``queue_name`` (a passive declare: nothing is consumed)."""
    channel = await connection.channel()
    queue = await channel.declare_queue(queue_name, passive=True)
    await channel.close()
    count = queue.declaration_result.message_count
    assert count is not None
    return count


TapFactory = Callable[[str], Awaitable[Tap]]


@pytest.fixture
async def tap_factory(amqp: AbstractRobustConnection, names: Names) -> AsyncIterator[TapFactory]:
    """Bind a quorum queue of the test's own to ``attentive.events`` with a binding key."""
    channel = await amqp.channel()
    await topology.declare(channel, names)
    made: list[AbstractQueue] = []

    async def bind(binding_key: str) -> Tap:
        queue = await channel.declare_queue(
            f"{names.prefix}.tap.{len(made)}", durable=True, arguments=QUORUM_QUEUE_ARGUMENTS
        )
        await queue.bind(names.events_exchange, binding_key)
        made.append(queue)
        return Tap(queue)

    yield bind
    for queue in made:
        await queue.delete(if_unused=False, if_empty=False)


@pytest.fixture
async def tap(tap_factory: TapFactory) -> Tap:
    """A queue of the test's own bound to every event published to ``attentive.events``."""
    return await tap_factory("#")


def signed(body: bytes, key: str = SIGNING_KEY) -> dict[str, str]:
    """Headers Attentive sends with ``body``."""
    return {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, key)}


__all__ = [
    "AUTH",
    "OLD_SIGNING_KEY",
    "SIGNING_KEY",
    "TOKEN",
    "Client",
    "MakeAdmin",
    "MakeIngress",
    "Running",
    "StartWorker",
    "Tap",
    "TapFactory",
    "depth",
    "served_ingress",
    "signed",
    "take",
]
