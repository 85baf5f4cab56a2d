"""``attentive-router serve`` and ``send-test`` as a user runs them: real processes, real ports."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from router.cli.main import main
from router.contract.events import EVENT_TYPES
from router.contract.examples import example_body
from router.contract.names import Names
from tests.conftest import AMQP_URL, AUTH, SIGNING_KEY, TOKEN, TapFactory, signed
from tests.wire import free_port

pytestmark = pytest.mark.broker


@dataclass
class Router:
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    #: /metrics, /readyz (and /healthz) are there.
    internal_port: int
    log: Path


StartRouter = Callable[..., Router]


@pytest.fixture
def start_router(names: Names, tmp_path: Path) -> Iterator[StartRouter]:
    """Start ``python -m router serve`` on free ports with this test's namespace."""
    started: list[Router] = []

    def start(**env: str) -> Router:
        port, admin_port, internal_port = free_port(), free_port(), free_port()
        log = tmp_path / f"router-{len(started)}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--log-format", "json"],
            env={
                **os.environ,
                "ROUTER_AMQP_URL": AMQP_URL,
                "ROUTER_SIGNING_KEYS": SIGNING_KEY,
                "ROUTER_HOST": "127.0.0.1",
                "ROUTER_PORT": str(port),
                "ROUTER_ADMIN_PORT": str(admin_port),
                "ROUTER_INTERNAL_PORT": str(internal_port),
                "ROUTER_NAMESPACE": names.prefix,
                "ROUTER_DATABASE_URL": f"sqlite:///{tmp_path / 'claims.db'}",
                **env,
            },
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        router = Router(process, port, admin_port, internal_port, log)
        started.append(router)
        return router

    yield start
    for router in started:
        if router.process.poll() is None:
            router.process.terminate()  # SIGTERM reaches its ingress processes too
            try:
                router.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                router.process.kill()
                router.process.wait(timeout=10)


async def wait_ready(session: aiohttp.ClientSession, port: int) -> None:
    async with asyncio.timeout(20):
        while True:
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


async def test_serve_runs_until_sigterm_and_keeps_the_admin_api_off_without_a_token(
    start_router: StartRouter, tap_factory: TapFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the router started as a user would, without an admin token
    router = start_router()
    tap = await tap_factory("#")
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, router.internal_port)

        # Then send-test --all gets 200 for each of the 11 types, all published
        url = f"http://127.0.0.1:{router.port}/webhooks/attentive"
        argv = ["send-test", "--all", "--url", url, "--signing-key", SIGNING_KEY]
        assert await asyncio.to_thread(main, argv) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [line.split()[:2] for line in lines] == [[t, "200"] for t in EVENT_TYPES]
        assert len(await tap.take(11)) == 11

        # And the admin API is not listening
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{router.admin_port}/admin/claims")

    # When SIGTERM arrives, it stops cleanly
    router.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(router.process.wait, 20) == 0
    assert b"admin_api_disabled" in router.log.read_bytes()


async def test_serve_with_a_token_opens_the_admin_api_on_its_own_port_before_it_is_ready(
    start_router: StartRouter,
) -> None:
    router = start_router(ROUTER_ADMIN_TOKEN=TOKEN)
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, router.internal_port)
        # once /readyz says 200, the admin API answers at once (a script may use it straight away)
        admin = f"http://127.0.0.1:{router.admin_port}/admin/claims"
        async with session.get(admin, headers=AUTH) as r:
            assert r.status == 200
        # the admin API is not on the public port
        async with session.get(
            f"http://127.0.0.1:{router.port}/admin/claims",
            headers=AUTH,
        ) as r:
            assert r.status == 404
    router.process.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(router.process.wait, 20) == 0


def test_serve_refuses_to_start_without_a_signing_key() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    done = subprocess.run(
        [sys.executable, "-m", "router", "serve"], env=env, capture_output=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stderr.decode().strip().count("\n") == 0
    assert b"ROUTER_SIGNING_KEYS" in done.stderr


def _ingress_children(pid: int) -> list[int]:
    """The parent's ingress processes (not multiprocessing's resource tracker)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    children = [int(p) for p in path.read_text().split()] if path.exists() else []
    return [c for c in children if b"spawn_main" in _cmdline(c)]


async def _wait_for_children(router: Router, count: int) -> list[int]:
    """The parent's ingress processes, once there are ``count`` of them."""
    async with asyncio.timeout(20):
        while len(children := _ingress_children(router.process.pid)) < count:
            await asyncio.sleep(0.1)
    return children


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _gone(pid: int) -> bool:
    try:
        return b"zombie" in Path(f"/proc/{pid}/status").read_bytes().lower()
    except OSError:
        return True


async def test_serve_with_workers_runs_that_many_processes_on_one_port_and_stops_them_all(
    start_router: StartRouter, tap_factory: TapFactory
) -> None:
    # Given the router started with two ingress processes
    router = start_router(ROUTER_WORKERS="2")
    tap = await tap_factory("#")
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, router.internal_port)

        # Then two children serve the one port, and events go through
        children = await _wait_for_children(router, 2)
        assert len(children) == 2
        url = f"http://127.0.0.1:{router.port}/webhooks/attentive"
        for event_type in EVENT_TYPES:
            body = example_body(event_type)
            async with session.post(url, data=body, headers=signed(body)) as response:
                assert response.status == 200
        assert len(await tap.take(11)) == 11

    # When the parent gets SIGTERM, every process stops
    router.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(router.process.wait, 30) == 0
    assert all(_gone(child) for child in children)
    # And the directory of the second one's internal socket is gone with them
    (socket,) = re.findall(rb'"address": ?"([^"]+\.sock)"', router.log.read_bytes())
    assert Path(socket.decode()).parent.name.startswith("attentive-router-")
    assert not Path(socket.decode()).parent.exists()


async def test_with_workers_the_internal_listener_answers_for_every_process(
    start_router: StartRouter, tap_factory: TapFactory
) -> None:
    # Given the router with two ingress processes, ready: each of them, says /readyz
    router = start_router(ROUTER_WORKERS="2")
    tap = await tap_factory("#")
    internal = f"http://127.0.0.1:{router.internal_port}"
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, router.internal_port)
        async with session.get(f"{internal}/readyz") as response:
            ready = await response.json()
        assert set(ready["processes"]) == {"0", "1"}
        assert [p["status"] for p in ready["processes"].values()] == ["ready", "ready"]

        # When 20 events come, each on a connection of its own (the kernel spreads them)
        url = f"http://127.0.0.1:{router.port}/webhooks/attentive"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as new:
            for n in range(20):
                body = example_body("sms.sent", external_id=n)
                async with new.post(url, data=body, headers=signed(body)) as response:
                    assert response.status == 200
        assert len(await tap.take(20)) == 20

        # Then one scrape of the internal listener counts them all, each process's series
        # under its own process label
        async with session.get(f"{internal}/metrics") as response:
            page = await response.text()
        accepted = re.findall(
            r'^attentive_router_requests_total\{outcome="accepted",process="(\d)"\} (\S+)$',
            page,
            re.MULTILINE,
        )
        assert sorted(process for process, _ in accepted) == ["0", "1"]
        assert sum(float(count) for _, count in accepted) == 20
        for process in ("0", "1"):
            assert f'attentive_router_process_up{{process="{process}"}} 1.0' in page

        # And the webhook port has neither page
        for path in ("/metrics", "/readyz"):
            async with session.get(f"http://127.0.0.1:{router.port}{path}") as response:
                assert response.status == 404, path


async def test_ingress_processes_stop_when_their_parent_is_killed(
    start_router: StartRouter,
) -> None:
    router = start_router(ROUTER_WORKERS="2")
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, router.internal_port)
    children = await _wait_for_children(router, 2)

    router.process.kill()  # SIGKILL: the parent cannot forward anything
    await asyncio.to_thread(router.process.wait, 10)

    async with asyncio.timeout(15):
        while not all(_gone(child) for child in children):
            await asyncio.sleep(0.2)
