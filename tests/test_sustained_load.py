"""Sustained load: a minute (``SOAK_SECONDS``) at 70 % of the ingress's measured maximum, a
worker draining.

The maximum is measured first with wrk (64 connections, 10 s); the load is then held with
hey (rate-limited workers). The test reports the RSS of the ingress and the worker at the
start and the end, and the queue depth over time, and fails on any error answer, on memory
that grows, or on a queue that keeps growing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pytest

from router.contract.examples import example_body
from router.contract.names import Names
from router.contract.signing import sign
from tests.conftest import AMQP_URL, SIGNING_KEY, TOKEN
from tests.test_no_loss_under_faults import claimed_apps, ready
from tests.wire import free_port

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SECONDS = int(os.environ.get("SOAK_SECONDS", "60"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class Soak:
    router: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    port: int
    admin_port: int
    internal_port: int


@pytest.fixture
def soak(names: Names, tmp_path: Path) -> Iterator[Soak]:
    port, admin_port, internal_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "ROUTER_AMQP_URL": AMQP_URL,
        "ROUTER_SIGNING_KEYS": SIGNING_KEY,
        "ROUTER_ADMIN_TOKEN": TOKEN,
        "ROUTER_HOST": "127.0.0.1",
        "ROUTER_PORT": str(port),
        "ROUTER_ADMIN_PORT": str(admin_port),
        "ROUTER_INTERNAL_PORT": str(internal_port),
        "ROUTER_ADMIN_URL": f"http://127.0.0.1:{admin_port}",
        "ROUTER_NAMESPACE": names.prefix,
        "ROUTER_DATABASE_URL": f"sqlite:///{tmp_path / 'claims.db'}",
        "ROUTER_LOG_FORMAT": "json",
        "ROUTER_LOG_LEVEL": "warning",  # the point is the load, not 10^5 log lines
    }
    router = subprocess.Popen(
        [sys.executable, "-m", "router", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "router.log").open("wb"),
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "router", "worker", "tests.soak_worker:worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "worker.log").open("wb"),
    )
    try:
        yield Soak(router, worker, port, admin_port, internal_port)
    finally:
        for process in (worker, router):
            process.terminate()
        for process in (worker, router):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.mark.skipif(not (shutil.which("wrk") and shutil.which("hey")), reason="needs wrk and hey")
async def test_a_minute_at_70_percent_of_the_maximum_without_errors_or_growth(
    soak: Soak, names: Names, tmp_path: Path
) -> None:
    router, worker, port = soak.router, soak.worker, soak.port

    def up() -> bool:
        return ready(soak.internal_port) and claimed_apps(soak.admin_port) == 1

    async with asyncio.timeout(60):
        while not await asyncio.to_thread(up):
            await asyncio.sleep(0.2)
    url = f"http://127.0.0.1:{port}/webhooks/attentive"
    body = example_body("sms.sent")
    (tmp_path / "body.json").write_bytes(body)
    (tmp_path / "post.lua").write_text(
        f'wrk.method = "POST"\nwrk.body = [==[{body.decode()}]==]\n'
        f'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["x-attentive-hmac-sha256"] = "{sign(body, SIGNING_KEY)}"\n'
    )

    # The maximum, measured here and now
    out = await asyncio.to_thread(
        subprocess.run,
        ["wrk", "-t1", "-c64", "-d10s", "-s", str(tmp_path / "post.lua"), url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    assert found, out.stdout
    maximum = float(found.group(1))
    rate = int(maximum * 0.7)
    await asyncio.sleep(5)  # let the worker drain what the measurement left
    start_rss = (rss_mb(router.pid), rss_mb(worker.pid))

    # Two minutes at 70 % of it, the queue depth sampled as it goes
    connections = 32
    hey = await asyncio.create_subprocess_exec(
        "hey",
        "-z",
        f"{SECONDS}s",
        "-c",
        str(connections),
        "-q",
        str(max(1, rate // connections)),
        "-m",
        "POST",
        "-T",
        "application/json",
        "-D",
        str(tmp_path / "body.json"),
        "-H",
        f"x-attentive-hmac-sha256: {sign(body, SIGNING_KEY)}",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    depths: list[int] = []
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue_name = names.app_queue("soak")
        async with asyncio.timeout(SECONDS + 60):
            while hey.returncode is None:
                queue = await channel.declare_queue(queue_name, passive=True)
                depths.append(queue.declaration_result.message_count or 0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(hey.wait(), timeout=5)
        stdout, _ = await hey.communicate()
        end_rss = (rss_mb(router.pid), rss_mb(worker.pid))
        async with asyncio.timeout(60):  # and the worker catches up
            while (
                await channel.declare_queue(queue_name, passive=True)
            ).declaration_result.message_count:
                await asyncio.sleep(0.5)
    report = stdout.decode()
    statuses = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", report))
    errors = re.search(r"Error distribution:\n((?:.+\n)*)", report)
    found = re.search(r"Requests/sec:\s+([\d.]+)", report)
    achieved = found.group(1) if found else "?"
    print(
        f"\nmaximum={maximum:.0f}/s target={rate}/s achieved={achieved}/s "
        f"statuses={statuses} ingress RSS {start_rss[0]:.1f}->{end_rss[0]:.1f} MB, "
        f"worker RSS {start_rss[1]:.1f}->{end_rss[1]:.1f} MB, queue depth max={max(depths)} "
        f"last={depths[-1]} samples={depths}"
    )
    assert set(statuses) == {"200"}, statuses
    assert not (errors and errors.group(1).strip()), errors.group(1) if errors else ""
    assert end_rss[0] <= start_rss[0] * 1.25 + 10, "the ingress's memory grew"
    assert end_rss[1] <= start_rss[1] * 1.25 + 10, "the worker's memory grew"
    assert max(depths) < rate * 10, "the queue kept growing: the worker did not keep up"
