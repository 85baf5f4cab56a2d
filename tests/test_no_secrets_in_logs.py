"""No secret and no subscriber's contact detail in anything the router, a worker or the CLI
logs, even when an unforeseen bug fails in them.

The ingress, the admin API, a worker and the CLI run as processes, each with a bug planted
(tests/failing_parts.py) that raises in a frame holding the webhook's body or the event, with a
message that quotes every settings object the process built. Every secret they are configured
with is one of their own (a RabbitMQ user made for the test, a database of its own reached with
a password, two signing keys, an admin token, an Attentive token), so that finding any of them,
or the subscriber's phone or email, in their output means it leaked.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from router.contract.examples import example_payload
from router.contract.names import SIGNATURE_HEADER, WEBHOOK_PATH, Names
from router.contract.signing import sign
from tests.conftest import rabbitmqctl
from tests.failing_parts import FAILING_EVENTS, FAILURE
from tests.wire import free_port

pytestmark = [pytest.mark.broker, pytest.mark.database]

POSTGRES = os.environ.get("ROUTER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PHONE, EMAIL = "+14155550123", "jane.doe@example.com"
#: The subscriber, as any of it would show: the number with or without its +, the address and
#: its local part.
CONTACT = (PHONE, PHONE[1:], EMAIL, "jane.doe")


def secret(label: str) -> str:
    return f"{label}-{secrets.token_hex(16)}"


@pytest.fixture
def broker_user() -> Iterator[tuple[str, str]]:
    """A RabbitMQ user of the test's own with a password of its own: (user, password)."""
    user, password = f"leak-test-{uuid.uuid4().hex[:8]}", secret("broker")
    rabbitmqctl("add_user", user, password)
    try:
        rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        yield user, password
    finally:
        rabbitmqctl("delete_user", user)


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A PostgreSQL database of the test's own (the local server trusts any password)."""
    name = f"leak_test_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(POSTGRES)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
        yield name
        await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def launch(argv: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``attentive-router ARGV`` with its planted bugs; stdout and stderr both go to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.failing_parts", *argv],
            env={**os.environ, **env},
            stdout=out,
            stderr=out,
        )


def wait_for(log: Path, marker: bytes, process: subprocess.Popen[bytes]) -> None:
    """Until ``marker`` is in ``log`` (30 s at most; failing at once if the process ended)."""
    deadline = time.monotonic() + 30
    while marker not in log.read_bytes():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {marker!r} in: {log.read_text()[-3000:]}"
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def webhook(event_type: str, key: str) -> tuple[bytes, dict[str, str]]:
    """An event about our subscriber, signed with ``key``: (body, headers)."""
    payload = example_payload(event_type, "acme")
    payload["subscriber"] = {**payload["subscriber"], "phone": PHONE, "email": EMAIL}
    body = orjson.dumps(payload)
    return body, {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, key)}


async def post_until_answered(url: str, body: bytes, headers: dict[str, str]) -> int:
    """The status of the webhook, sent again while the router is not ready (503)."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(30):
        while True:
            async with session.post(url, data=body, headers=headers) as response:
                if response.status != 503:
                    return response.status
            await asyncio.sleep(0.2)


async def test_nothing_secret_or_personal_reaches_a_log_when_every_part_fails_unexpectedly(
    names: Names, tmp_path: Path, broker_user: tuple[str, str], database: str
) -> None:
    # Given a router, a worker and the CLI, each with secrets of its own
    user, broker_password = broker_user
    keys = (secret("signing-new"), secret("signing-old"))
    admin_token, attentive_token = secret("admin-token"), secret("attentive")
    database_password, store_password = secret("database"), secret("store")
    port, admin_port = free_port(), free_port()
    amqp_url = f"amqp://{user}:{broker_password}@127.0.0.1:5672/"
    shared = {
        "ROUTER_AMQP_URL": amqp_url,
        "ROUTER_SIGNING_KEYS": ",".join(keys),
        "ROUTER_DATABASE_URL": f"postgresql://postgres:{database_password}@127.0.0.1/{database}",
        "ROUTER_ADMIN_TOKEN": admin_token,
        "ROUTER_ADMIN_URL": f"http://127.0.0.1:{admin_port}",
        "ATTENTIVE_API_TOKEN": attentive_token,
        "ATTENTIVE_API_URL": f"http://127.0.0.1:{free_port()}",
        "ROUTER_NAMESPACE": names.prefix,
        "ROUTER_LOG_FORMAT": "json",
    }
    hidden = (
        *keys,
        broker_password,
        admin_token,
        attentive_token,
        database_password,
        store_password,
    )
    logs = {part: tmp_path / f"{part}.log" for part in ("router", "worker", "cli")}
    router = launch(
        ["serve"],
        {
            **shared,
            "ROUTER_HOST": "127.0.0.1",
            "ROUTER_PORT": str(port),
            "ROUTER_ADMIN_PORT": str(admin_port),
            "ROUTER_INTERNAL_PORT": str(free_port()),
        },
        logs["router"],
    )
    worker = None
    try:
        await asyncio.to_thread(wait_for, logs["router"], b'"listener":"admin"', router)
        worker = launch(
            ["worker", "tests.failing_parts:worker"],
            {
                **shared,
                "FAILING_APP": f"leaky-{uuid.uuid4().hex[:6]}",
                "WORKER_IDEMPOTENCY_URL": (
                    f"postgresql://postgres:{store_password}@127.0.0.1:5432/{database}"
                ),
            },
            logs["worker"],
        )
        await asyncio.to_thread(wait_for, logs["worker"], b"worker_consuming", worker)

        # When the ingress takes an event about the subscriber and fails to publish another
        url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
        assert await post_until_answered(url, *webhook("sms.subscribed", keys[1])) == 200
        assert await post_until_answered(url, *webhook(f"{FAILING_EVENTS}opened", keys[0])) == 500

        # and the admin API fails to list the claims
        async with aiohttp.ClientSession() as session:
            admin = f"http://127.0.0.1:{admin_port}/admin/claims"
            headers = {"Authorization": f"Bearer {admin_token}"}
            async with session.get(admin, headers=headers) as response:
                assert response.status == 500

        # and the worker's handler fails until the event is dead-lettered
        await asyncio.to_thread(wait_for, logs["worker"], b"event_dead_lettered", worker)

        # and the CLI fails in the middle of an audit
        cli = launch(["attentive", "audit"], shared, logs["cli"])
        assert await asyncio.to_thread(cli.wait, 60) == 1
    finally:
        for process in (worker, router):
            if process is not None:
                await asyncio.to_thread(stop, process)

    # Then each part logged its failure, quoting its settings
    written = {part: log.read_bytes() for part, log in logs.items()}
    assert b'"unhandled_error"' in written["router"]
    assert b'"admin_unhandled_error"' in written["router"]
    assert b'"event_retry"' in written["worker"]
    assert b"Traceback (most recent call last)" in written["cli"]
    for part, text in written.items():
        assert FAILURE.encode() in text and b"Settings(" in text, part
        assert b"SecretUrl('amqp://" + user.encode() + b":***@127.0.0.1:5672/')" in text, part

    # But not one secret, and nothing of the subscriber, in any byte of it
    for part, text in written.items():
        for value in (*hidden, *CONTACT):
            assert value.encode() not in text, f"{part} logged {value}"
