"""The promise, under faults: every event Attentive was told we accepted is handled by its
owner, once after deduplication by message id, whatever fails in between.

A RabbitMQ node of the test's own (its own name, ports and data directory: the machine's
broker is left alone) carries a stream of signed events of all 11 types for four companies,
each type claimed by one of three worker processes, while in turn: the node's app is stopped
and started, its connections are force-closed, the node is killed with SIGKILL and started
again, a worker is killed with SIGKILL mid-handler and restarted, and the router is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis

from router.contract.events import EVENT_TYPES, message_id
from router.contract.examples import example_body
from router.contract.names import Names
from tests.conftest import SIGNING_KEY, TOKEN, signed
from tests.fault_workers import APPS
from tests.rabbit_cluster import LocalCluster, Node
from tests.streams import Stream
from tests.wire import free_port

pytestmark = [pytest.mark.broker, pytest.mark.slow]

COMPANIES = ("MDc6Q29tcGFueTU", "acme.co", "globex", "initech")
OWNER = {
    t: next(a for a, p in APPS.items() if t.startswith(p.removesuffix("*"))) for t in EVENT_TYPES
}
WORKER_TARGETS = {
    "faults-sms": "tests.fault_workers:sms",
    "faults-email": "tests.fault_workers:email",
    "faults-attrs": "tests.fault_workers:attrs",
}


@pytest.fixture
def node() -> Iterator[Node]:
    cluster = LocalCluster(size=1, base_port=5780)
    try:
        cluster.start()
        yield cluster.nodes[0]
    finally:
        cluster.stop()


class System:
    """The router and the three workers as processes, restartable one by one."""

    def __init__(self, node: Node, root: Path) -> None:
        self.node, self.root = node, root
        self.port, self.admin_port = free_port(), free_port()
        self.internal_port = free_port()  # /readyz
        self.namespace = f"faults-{os.getpid()}-{self.port}"
        self.router: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ROUTER_AMQP_URL": self.node.url,
            "ROUTER_SIGNING_KEYS": SIGNING_KEY,
            "ROUTER_ADMIN_TOKEN": TOKEN,
            "ROUTER_HOST": "127.0.0.1",
            "ROUTER_PORT": str(self.port),
            "ROUTER_ADMIN_PORT": str(self.admin_port),
            "ROUTER_INTERNAL_PORT": str(self.internal_port),
            "ROUTER_ADMIN_URL": f"http://127.0.0.1:{self.admin_port}",
            "ROUTER_NAMESPACE": self.namespace,
            "ROUTER_DATABASE_URL": f"sqlite:///{self.root / 'claims.db'}",
            "ROUTER_CONFIRM_TIMEOUT": "2",
            "ROUTER_LOG_FORMAT": "json",
            "WORKER_IDEMPOTENCY_URL": "redis://127.0.0.1:6379/0",
            # (a worker SIGKILLed mid-handler holds its ids until the lease ends)
            "WORKER_IDEMPOTENCY_LEASE": "5",
            "WORKER_SHUTDOWN_TIMEOUT": "5",
            "FAULT_LOG_DIR": str(self.root),
        }

    def start_router(self) -> None:
        self.router = subprocess.Popen(
            [sys.executable, "-m", "router", "serve"],
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "router.log").open("ab"),
        )

    def start_worker(self, app: str) -> None:
        self.workers[app] = subprocess.Popen(
            [sys.executable, "-m", "router", "worker", WORKER_TARGETS[app]],
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=(self.root / f"{app}.log").open("ab"),
        )

    def stop(self) -> None:
        for process in [*self.workers.values(), self.router]:
            if process is not None and process.poll() is None:
                process.terminate()
        for process in [*self.workers.values(), self.router]:
            if process is not None:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)

    def handled(self) -> dict[str, Counter[str]]:
        """Per application: how many times each message id was handled."""
        counts: dict[str, Counter[str]] = {}
        for app in APPS:
            path = self.root / f"{app}.handled"
            lines = path.read_text().split() if path.exists() else []
            counts[app] = Counter(lines)
        return counts

    def skipped(self) -> int:
        """Duplicates the workers skipped by message id (from their logs)."""
        total = 0
        for app in APPS:
            for line in (self.root / f"{app}.log").read_bytes().splitlines():
                with contextlib.suppress(orjson.JSONDecodeError):
                    total += orjson.loads(line).get("event") == "event_skipped"
        return total


@pytest.fixture
def system(node: Node, tmp_path: Path) -> Iterator[System]:
    running = System(node, tmp_path)
    try:
        yield running
    finally:
        running.stop()
        client = redis.Redis()
        for app in APPS:
            keys = list(client.scan_iter(f"attentive:handled:{app}:*"))
            if keys:
                client.delete(*keys)
        client.close()


def any_type(n: int) -> bytes:
    """The n-th event: the 11 types and 4 companies in turn."""
    return example_body(
        EVENT_TYPES[n % len(EVENT_TYPES)], COMPANIES[n % len(COMPANIES)], external_id=n
    )


async def wait_until(check: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(check):
            await asyncio.sleep(0.2)


async def test_no_event_answered_2xx_is_lost_through_broker_worker_and_router_faults(
    system: System, node: Node
) -> None:
    # Given the router and three workers, each owning its channel's types
    system.start_router()
    await wait_until(lambda: ready(system.internal_port), 60)
    for app in APPS:
        system.start_worker(app)
    # (a claim is listed a moment before its binding exists: events in between are unrouted)
    await wait_until(lambda: bound_apps(node, system.namespace) == set(APPS), 60)

    url = f"http://127.0.0.1:{system.port}/webhooks/attentive"
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def post(body: bytes) -> int:
            async with session.post(url, data=body, headers=signed(body)) as response:
                return response.status

        stream = Stream(post, any_type)
        await _break_things_while_streaming(stream, system, node)
    await _check_every_accepted_event_was_handled(stream, system, node)


async def _break_things_while_streaming(stream: Stream, system: System, node: Node) -> None:
    async with stream.running():
        await stream.more(200, 300)

        # RabbitMQ's app stopped and started
        await asyncio.to_thread(node.ctl, "stop_app")
        await asyncio.sleep(2)
        await asyncio.to_thread(node.ctl, "start_app")
        await stream.more(200, 300)

        # its connections force-closed
        await asyncio.to_thread(node.ctl, "close_all_connections", "fault test")
        await stream.more(200, 300)

        # the node killed with SIGKILL and started again
        await asyncio.to_thread(node.kill)
        await asyncio.sleep(1)
        await asyncio.to_thread(node.start)
        await asyncio.to_thread(node.wait_up)
        await stream.more(200, 300)

        # a worker killed with SIGKILL mid-handler, and restarted
        system.workers["faults-sms"].send_signal(signal.SIGKILL)
        await asyncio.to_thread(system.workers["faults-sms"].wait, 10)
        system.start_worker("faults-sms")
        await stream.more(200, 300)

        # the router restarted
        assert system.router is not None
        system.router.terminate()
        await asyncio.to_thread(system.router.wait, 30)
        system.start_router()
        await wait_until(lambda: ready(system.internal_port), 60)
        await stream.more(200, 300)


async def _check_every_accepted_event_was_handled(
    stream: Stream, system: System, node: Node
) -> None:
    """Every event answered 2xx was handled by its owner, and only by its owner."""
    accepted = {message_id(b): OWNER[orjson.loads(b)["type"]] for b in stream.accepted()}

    def all_handled() -> bool:
        handled = system.handled()
        return all(mid in handled[app] for mid, app in accepted.items())

    with contextlib.suppress(TimeoutError):
        await wait_until(all_handled, 120)
    handled = system.handled()
    missing = [mid for mid, app in accepted.items() if mid not in handled[app]]
    strays = [
        mid
        for mid, app in accepted.items()
        for other in APPS
        if other != app and mid in handled[other]
    ]
    handled_twice = sum(n - 1 for counts in handled.values() for n in counts.values() if n > 1)
    print(
        f"\nsent={len(stream.answers)} 2xx={stream.count(200)} 5xx={stream.count(503)} "
        f"no-answer={stream.count(0)} handled={sum(len(c) for c in handled.values())} "
        f"handled-twice={handled_twice} duplicates-skipped={system.skipped()} "
        f"missing={len(missing)}"
    )
    if missing:  # say where they are, to tell a lost event from a stuck one
        per_app = Counter(accepted[mid] for mid in missing)
        alive = {app: p.poll() is None for app, p in system.workers.items()}
        queues = await asyncio.to_thread(node.ctl, "list_queues", "name", "messages", "-q")
        print(f"missing per app={dict(per_app)} workers alive={alive}\n{queues}")
    assert set(stream.answers.values()) <= {200, 503, 0}
    assert not strays, "an event reached an application that does not own its type"
    assert not missing, f"{len(missing)} events answered 2xx were never handled"


def ready(port: int) -> bool:
    """Whether the ingress whose internal listener is on ``port`` answers /readyz with 200."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def claimed_apps(admin_port: int) -> int:
    """How many applications hold claims (0 while the admin API does not answer). A claim is
    listed a moment before its binding exists; :func:`bound_apps` says when it does."""
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{admin_port}/admin/claims",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return len({c["app"] for c in orjson.loads(response.read())["claims"]})
    except OSError:
        return 0


def bound_apps(node: Node, namespace: str) -> set[str]:
    """The applications whose queue the node has bound to the events exchange."""
    names = Names(namespace)
    listed = node.ctl("list_bindings", "source_name", "destination_name", "-q", check=False)
    pairs = {tuple(line.split("\t")[:2]) for line in listed.splitlines()}
    return {app for app in APPS if (names.events_exchange, names.app_queue(app)) in pairs}
