"""Each kind of error is answered the same way wherever it surfaces: one HTTP status from the
admin API, one exit code from the command line (router.errors.KINDS).

Every case is a real admin request or a real invocation of ``attentive-router``:

    kind             admin API   command line
    InvalidInput     400         2
    NotFound         404         1
    Conflict         409         1
    Unavailable      503         1
    UpstreamFailed   (none)      1    (no admin route calls another service)
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import replace

import pytest
from aiohttp.test_utils import TestServer

from router.admin.app import create_admin_app
from router.admin.claims import CLAIMS
from router.cli.main import main
from router.contract.names import Names
from router.settings import Settings
from tests.conftest import AMQP_URL, AUTH, TOKEN, Client
from tests.steps import claim

pytestmark = pytest.mark.broker

#: Port 9 (discard) is closed on the test machine: connecting to it is refused at once.
UNREACHABLE_AMQP = "amqp://guest:guest@127.0.0.1:9/"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``attentive-router ARGV`` in-process: the exit code and the one line on stderr."""
    capsys.readouterr()
    code = main(list(argv))
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    return code, err.rstrip("\n")


# -- the admin API ---------------------------------------------------------------------------


async def test_invalid_input_is_400_with_the_reason(admin: Client) -> None:
    response = await admin.post("/admin/claims", data=b"{not json", headers=AUTH)
    assert response.status == 400
    assert await response.json() == {"error": "the body is not JSON"}

    # an input error names its field as the library does, without any flag
    response = await admin.get("/admin/unrouted", params={"since": "monday"}, headers=AUTH)
    assert response.status == 400
    assert (await response.json())["error"].startswith("since must be an ISO 8601 time")


async def test_not_found_is_404(admin: Client) -> None:
    response = await admin.delete("/admin/claims/424242", headers=AUTH)
    assert response.status == 404
    assert await response.json() == {"error": "no claim 424242"}


async def test_a_conflicting_claim_is_409(admin: Client) -> None:
    first = await admin.post("/admin/claims", json={"app": "a1", "events": ["sms.*"]}, headers=AUTH)
    assert first.status == 201
    second = await admin.post("/admin/claims", json={"app": "a2", "events": ["*"]}, headers=AUTH)
    assert second.status == 409
    assert (await second.json())["error"] == "conflict"


async def test_unavailable_is_503_and_asks_to_come_back(admin_settings: Settings) -> None:
    unreachable = replace(admin_settings, amqp_url=UNREACHABLE_AMQP)
    client = Client(TestServer(create_admin_app(unreachable)))
    await client.start_server()
    try:
        wanted = {"app": "crm", "events": ["sms.*"]}
        response = await client.post("/admin/claims", json=wanted, headers=AUTH)
        assert response.status == 503
        assert response.headers["Retry-After"] == "5"
        assert "RabbitMQ could not be updated" in (await response.json())["error"]
    finally:
        await client.close()


async def test_an_unusable_claims_database_is_503_without_its_details(admin: Client) -> None:
    assert isinstance(admin.server, TestServer)
    await admin.server.app[CLAIMS].store.close()  # as if the database went away
    response = await admin.get("/admin/claims", headers=AUTH)
    assert response.status == 503
    assert await response.json() == {"error": "the claims database is unavailable"}


# -- the command line ------------------------------------------------------------------------


def test_invalid_input_exits_2_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code, line = run(
        capsys, "dlq", "list", "--app", "a1", "--until", "soon", "--amqp-url", UNREACHABLE_AMQP
    )
    assert code == 2
    assert line.startswith("attentive-router: --until must be an ISO 8601 time")


def test_not_found_exits_1(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    code, line = run(
        capsys, "queues", "--app", "never-ran", "--namespace", names.prefix, "--amqp-url", AMQP_URL
    )
    assert code == 1
    assert line == (
        f"attentive-router: queue {names.app_queue('never-ran')} does not exist: "
        "has the router run on this broker?"
    )


def test_unavailable_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, line = run(capsys, "queues", "--amqp-url", UNREACHABLE_AMQP)
    assert code == 1
    assert line.startswith("attentive-router: no RabbitMQ node answered")


async def test_an_upstream_refusal_exits_1(
    admin: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(admin.make_url("")).rstrip("/")
    code, line = await asyncio.to_thread(
        run, capsys, "claims", "list", "--admin-url", url, "--token", "not-the-token"
    )
    assert code == 1
    assert line == "attentive-router: admin API answered 401: unauthorized"


def worker_command(admin: Client, names: Names, **env: str) -> subprocess.CompletedProcess[bytes]:
    """``attentive-router worker tests.sample_worker:worker`` against the test's admin API."""
    return subprocess.run(
        [sys.executable, "-m", "router", "worker", "tests.sample_worker:worker"],
        env={
            **os.environ,
            "ROUTER_AMQP_URL": AMQP_URL,
            "ROUTER_ADMIN_URL": str(admin.make_url("")).rstrip("/"),
            "ROUTER_ADMIN_TOKEN": TOKEN,
            "ROUTER_NAMESPACE": names.prefix,
            **env,
        },
        capture_output=True,
        timeout=60,
    )


async def test_a_conflicting_claim_at_start_exits_1(admin: Client, names: Names) -> None:
    await claim(admin, "someone-else", "sms.sent")
    worker = await asyncio.to_thread(worker_command, admin, names)
    assert worker.returncode == 1
    assert "refusing to start" in worker.stderr.decode().splitlines()[-1]


async def test_an_idempotency_store_down_at_start_exits_1_in_one_line(
    admin: Client, names: Names
) -> None:
    worker = await asyncio.to_thread(
        worker_command, admin, names, WORKER_IDEMPOTENCY_URL="redis://127.0.0.1:9/0"
    )
    assert worker.returncode == 1
    last = worker.stderr.decode().splitlines()[-1]
    assert last.startswith("attentive-router: ") and "127.0.0.1:9" in last
    assert "Traceback" not in worker.stderr.decode()
