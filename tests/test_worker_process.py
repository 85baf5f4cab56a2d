"""``attentive-router worker`` as a process: killed with SIGKILL mid-handler, nothing is lost;
a refused claim or a bad target stops it with a clear message."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection

from router.contract.examples import example_body
from router.contract.names import WEBHOOK_PATH, Names
from tests.conftest import AMQP_URL, TOKEN, Client, depth, signed
from tests.steps import claim

pytestmark = pytest.mark.broker

StartWorker = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def start_worker_process(admin: Client, names: Names, tmp_path: Path) -> Iterator[StartWorker]:
    processes: list[subprocess.Popen[bytes]] = []

    log = tmp_path / "worker-process.log"

    def start(
        target: str = "tests.sample_worker:worker", *, capture: bool = False, **env: str
    ) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "router", "worker", target, "--log-format", "json"],
            env={
                **os.environ,
                "ROUTER_AMQP_URL": AMQP_URL,
                "ROUTER_ADMIN_URL": str(admin.make_url("")).rstrip("/"),
                "ROUTER_ADMIN_TOKEN": TOKEN,
                "ROUTER_NAMESPACE": names.prefix,
                "SAMPLE_WORKER_LOG": str(tmp_path / "worker.log"),
                **env,
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if capture else log.open("ab"),
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()


async def wait_for_line(path: Path, text: str, timeout: float = 20) -> None:
    def present() -> bool:
        return path.exists() and text in path.read_text()

    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(present):
            await asyncio.sleep(0.05)


async def test_a_worker_killed_mid_handler_loses_nothing(
    admin: Client,
    ingress: Client,
    start_worker_process: StartWorker,
    amqp: AbstractRobustConnection,
    names: Names,
    tmp_path: Path,
) -> None:
    # Given a worker whose handler hangs, holding an event
    hung = start_worker_process(SAMPLE_WORKER_HANG="1")
    log = tmp_path / "worker.log"
    body = example_body("sms.sent")
    await wait_for_line(tmp_path / "worker-process.log", "worker_consuming")
    response = await ingress.post(WEBHOOK_PATH, data=body, headers=signed(body))
    mid = (await response.json())["message_id"]
    await wait_for_line(log, f"start {mid}")

    # When it is killed with SIGKILL mid-handler
    hung.send_signal(signal.SIGKILL)
    await asyncio.to_thread(hung.wait, 10)

    # Then a new worker gets the event again and handles it, and the queue ends empty
    start_worker_process(SAMPLE_WORKER_HANG="0")
    await wait_for_line(log, f"done {mid}")
    async with asyncio.timeout(10):
        while await depth(amqp, names.app_queue("killable")) != 0:
            await asyncio.sleep(0.05)


async def test_the_worker_command_refuses_to_start_when_its_claim_conflicts(
    admin: Client, start_worker_process: StartWorker
) -> None:
    await claim(admin, "sms-audit", "sms.*")
    process = start_worker_process(capture=True)
    _, stderr = await asyncio.to_thread(process.communicate, None, 30)
    assert process.returncode == 1
    message = stderr.decode().strip().splitlines()[-1]
    assert "refusing to start" in message and "'sms-audit'" in message


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("tests.sample_worker", "expected MODULE:OBJECT"),
        ("tests.no_such_module:worker", "cannot import"),
        ("tests.sample_worker:handle", "is not a consumers.Worker"),
    ],
)
async def test_the_worker_command_says_what_is_wrong_with_its_target(
    start_worker_process: StartWorker, target: str, expected: str
) -> None:
    process = start_worker_process(target, capture=True)
    _, stderr = await asyncio.to_thread(process.communicate, None, 30)
    assert process.returncode == 2
    assert expected in stderr.decode()
