"""Parked events against the real RabbitMQ: an application's DLQ, ``unrouted`` and ``invalid``
listed, shown, replayed and purged through the library, the CLI and the admin API, without
losing or duplicating an event (and where a killed replay duplicates one, workers skip it)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime

import aio_pika
import orjson
import pytest
import structlog
from aio_pika.abc import AbstractRobustConnection
from aiohttp.test_utils import TestServer

from consumers import Event, Worker
from consumers.runtime.runner import WorkerRunner
from consumers.runtime.settings import WorkerSettings
from router.admin.app import create_admin_app
from router.amqp import topology
from router.cli.main import main
from router.cli.output import ProgressReporter
from router.contract.examples import example_body
from router.contract.names import (
    ATTEMPT_HEADER,
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTERED_AT_HEADER,
    ERROR_HEADER,
    INVALID_REASON_HEADER,
    REPLAY_COUNT_HEADER,
    ROUTING_KEY_HEADER,
    WEBHOOK_PATH,
    Names,
    routing_key,
)
from router.deadletters import DeadLetters, Filter, Kind
from router.errors import RouterError
from router.settings import Settings
from tests.conftest import AMQP_URL, AUTH, TOKEN, Client, depth, signed, take

pytestmark = pytest.mark.broker

WEBHOOK = WEBHOOK_PATH
COMPANY = "acme"
#: Attentive's timestamp of every generated event (distinct bodies come from external_id).
OCCURRED_MS = 1_764_147_600_000
TIMEOUT_ERROR = "TimeoutError: crm"
VALUE_ERROR = "ValueError: bad"


@pytest.fixture(autouse=True)
def _no_router_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads ROUTER_*; whatever the shell running pytest has must not count."""
    for name in list(os.environ):
        if name.startswith("ROUTER_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def apps(amqp: AbstractRobustConnection, names: Names) -> AsyncIterator[Callable[[str], str]]:
    """Application names used by the test; their queues are deleted afterwards."""
    made: list[str] = []

    def use(app: str) -> str:
        made.append(app)
        return app

    yield use
    channel = await amqp.channel()
    for app in made:
        await topology.delete_app(channel, names, app)
    await channel.close()


@pytest.fixture
def dead(names: Names) -> DeadLetters:
    return DeadLetters(AMQP_URL, names)


def dead_body(i: int, event_type: str = "sms.sent") -> bytes:
    return example_body(event_type, COMPANY, timestamp_ms=OCCURRED_MS, external_id=i)


def error_of(i: int) -> str:
    return TIMEOUT_ERROR if i % 2 == 0 else VALUE_ERROR


async def fill_dlq(amqp: AbstractRobustConnection, names: Names, app: str, count: int) -> list[str]:
    """Dead-letter ``count`` events the way a worker does (through the app's dead-letter
    exchange, with its headers, persistent, confirmed); their message ids, in order."""
    channel = await amqp.channel(publisher_confirms=True)
    await topology.declare_app_queue(channel, names, app)
    exchange = await channel.get_exchange(names.app_dead_letter_exchange(app))
    key = routing_key("sms.sent", COMPANY)
    parked_at = datetime.now(tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    ids: list[str] = []
    for i in range(count):
        body = dead_body(i)
        message_id = hashlib.sha256(body).hexdigest()
        message = aio_pika.Message(
            body,
            message_id=message_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={
                ERROR_HEADER: error_of(i),
                DEAD_LETTERED_AT_HEADER: parked_at,
                ATTEMPT_HEADER: 5,
                ROUTING_KEY_HEADER: key,
                DEAD_LETTER_REASON_HEADER: "exhausted",
            },
        )
        await exchange.publish(message, routing_key=key, timeout=10)
        ids.append(message_id)
    await channel.close()
    return ids


async def until(predicate: Callable[[], bool], timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def until_depth(
    amqp: AbstractRobustConnection, queue: str, count: int, timeout: float = 15
) -> None:
    async with asyncio.timeout(timeout):
        while await depth(amqp, queue) != count:
            await asyncio.sleep(0.02)


async def cli(capsys: pytest.CaptureFixture[str], names: Names, *argv: str) -> tuple[int, str, str]:
    """Run ``attentive-router ARGV --namespace <test's> --amqp-url <local>`` in-process."""
    args = [*argv, "--namespace", names.prefix, "--amqp-url", AMQP_URL]

    def run() -> int:
        try:
            return main(args)
        except SystemExit as exited:
            return int(exited.code or 0)

    capsys.readouterr()  # what the in-process ingress and admin API logged before
    code = await asyncio.to_thread(run)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(text: str) -> str:
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)
    return text.rstrip("\n")


# -- the DLQ of an application ---------------------------------------------------------------


async def test_a_thousand_dead_letters_stay_in_order_and_exactly_the_matching_half_replays(
    amqp: AbstractRobustConnection, names: Names, dead: DeadLetters, apps: Callable[[str], str]
) -> None:
    # Given 1,000 events a worker dead-lettered, half after a TimeoutError, half a ValueError
    app = apps("crm-sync")
    ids = await fill_dlq(amqp, names, app, 1000)
    parked = dead.parked(Kind.DLQ, app)

    # When ops list the DLQ twice
    first = await dead.list(parked)
    second = await dead.list(parked)

    # Then all 1,000 are listed, in the order they were parked, and all of them are still there
    listed_first = [entry.message_id for entry in first.entries]
    listed_second = [entry.message_id for entry in second.entries]
    assert (first.total, first.matched, second.total, second.matched) == (1000, 1000, 1000, 1000)
    assert listed_first == ids
    assert listed_second == listed_first
    assert await depth(amqp, names.app_dead_letter_queue(app)) == 1000
    entry = first.entries[0]
    assert (entry.event_type, entry.company_id, entry.attempts) == ("sms.sent", COMPANY, 5)
    assert (entry.error, entry.reason, entry.replays) == (TIMEOUT_ERROR, "exhausted", 0)
    assert entry.routing_key == "sms.sent.acme"
    assert entry.parked_at is not None

    # When the TimeoutError half is replayed
    summary = await dead.replay(parked, Filter.build(error="timeouterror"))

    # Then exactly those 500 are in the application queue, once each, in order, as fresh events
    assert (summary.total, summary.matched, summary.replayed, summary.left, summary.failed) == (
        1000,
        500,
        500,
        500,
        0,
    )
    channel = await amqp.channel()
    app_queue = await channel.get_queue(names.app_queue(app))
    replayed = await take(app_queue, 500, timeout=20)
    assert await depth(amqp, names.app_queue(app)) == 0
    replayed_ids = [message.message_id for message in replayed]
    assert replayed_ids == ids[0::2]
    for message in replayed:
        assert message.headers[REPLAY_COUNT_HEADER] == 1
        assert ATTEMPT_HEADER not in message.headers
        assert ERROR_HEADER not in message.headers
        assert message.headers[ROUTING_KEY_HEADER] == "sms.sent.acme"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert hashlib.sha256(message.body).hexdigest() == message.message_id

    # And the other 500 are still parked, in order: none lost, none duplicated
    left = await dead.list(parked)
    left_ids = [entry.message_id for entry in left.entries]
    assert left_ids == ids[1::2]
    assert {e.error for e in left.entries} == {VALUE_ERROR}
    assert len(set(replayed_ids)) == len(replayed_ids) == 500
    assert len(set(left_ids)) == len(left_ids) == 500
    assert set(replayed_ids) | set(left_ids) == set(ids)
    assert not set(replayed_ids) & set(left_ids)
    print(
        f"\n1000-event DLQ: listed {len(listed_first)} then {len(listed_second)} in order; "
        f"replay {summary.to_json()}; app queue got {len(replayed_ids)}, DLQ kept {len(left_ids)}"
    )


async def test_a_replay_killed_midway_loses_nothing_and_workers_skip_the_duplicates(
    amqp: AbstractRobustConnection,
    names: Names,
    dead: DeadLetters,
    admin: Client,
    apps: Callable[[str], str],
) -> None:
    # Given 300 parked events, and a replay at 200 events/s killed (SIGKILL) around the middle
    app = apps("billing")
    ids = await fill_dlq(amqp, names, app, 300)
    dlq, app_queue = names.app_dead_letter_queue(app), names.app_queue(app)
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "router", "dlq", "replay", "--app", app, "--rate", "200"),
        *("--namespace", names.prefix, "--amqp-url", AMQP_URL),
        env={k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(20):
            while await depth(amqp, app_queue) < 120:
                assert process.returncode is None, "the replay ended before it could be killed"
                await asyncio.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)  # midway (or the test already failed)
        await asyncio.wait_for(process.wait(), 10)
    assert process.returncode == -signal.SIGKILL

    # Then RabbitMQ returns what the killed walk held: every event is in the DLQ or the app queue
    settled: list[tuple[int, int]] = []
    async with asyncio.timeout(15):
        while len(settled) < 3 or len(set(settled[-3:])) > 1 or sum(settled[-1]) < 300:
            settled.append((await depth(amqp, dlq), await depth(amqp, app_queue)))
            await asyncio.sleep(0.1)
    in_app = settled[-1][1]
    parked = dead.parked(Kind.DLQ, app)
    still_parked = [e.message_id for e in (await dead.list(parked)).entries]
    assert 120 <= in_app < 300, "killed midway"
    assert len(set(still_parked)) == len(still_parked)

    # (a kill between RabbitMQ's confirm of a copy and the ack of the original leaves the event
    # in both queues: the first still parked one, if at all; make sure this run has at least one
    # such duplicate, of the last parked event, which the walk had not reached)
    channel = await amqp.channel(publisher_confirms=True)
    requeue = await channel.get_exchange(names.app_requeue_exchange(app))
    injected = still_parked[-1]
    await requeue.publish(
        aio_pika.Message(dead_body(ids.index(injected)), message_id=injected), "sms.sent.acme"
    )
    in_app += 1

    # When the application's worker consumes its queue (counting calls per message id)
    calls: Counter[str] = Counter()
    worker = Worker(app)

    @worker.on("sms.*")
    async def handle(event: Event) -> None:
        calls[event.message_id] += 1

    stop = asyncio.Event()
    runner = WorkerRunner(
        worker,
        WorkerSettings(
            amqp_url=AMQP_URL,
            admin_url=str(admin.make_url("")).rstrip("/"),
            admin_token=TOKEN,
            namespace=names.prefix,
        ),
    )
    task = asyncio.create_task(runner.run(stop))
    try:
        await until(lambda: sum(calls.values()) >= in_app or task.done())
        first_pass = set(calls)
        # every event was in one queue or the other (the union is all of them)
        assert len(first_pass) == in_app
        assert first_pass | set(still_parked) == set(ids)
        duplicates = first_pass & set(still_parked)
        assert injected in duplicates

        # And the rest is replayed to it
        summary = await dead.replay(parked)
        assert (summary.replayed, summary.failed, summary.left) == (len(still_parked), 0, 0)

        # Then every event was handled exactly once: the duplicates were skipped
        def skipped() -> float:
            value = worker.registry.get_sample_value(
                "attentive_worker_events_total",
                {"app": app, "type": "sms.sent", "outcome": "skipped"},
            )
            return value or 0.0

        await until(lambda: set(calls) == set(ids) and skipped() == len(duplicates))
        await until_depth(amqp, app_queue, 0)
        assert sorted(calls.values()) == [1] * 300
        assert await depth(amqp, dlq) == 0
        print(
            f"\nkilled replay: {in_app - 1} replayed before SIGKILL, {len(still_parked)} parked, "
            f"{len(duplicates) - 1} natural duplicate(s) + 1 injected; handled {len(calls)} "
            f"once each, skipped {skipped():.0f}"
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_show_masks_contacts_unless_revealed_and_purge_needs_yes(
    amqp: AbstractRobustConnection,
    names: Names,
    apps: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = apps("profiles")
    ids = await fill_dlq(amqp, names, app, 6)
    dlq = names.app_dead_letter_queue(app)

    # show: masked by default, --reveal shows the subscriber's phone and email
    code, out, _ = await cli(capsys, names, "dlq", "show", ids[1], "--app", app, "--json")
    assert code == 0
    masked = orjson.loads(out)
    assert masked["message_id"] == ids[1]
    assert masked["payload"]["subscriber"]["phone"] == "+1******5555"
    assert masked["payload"]["subscriber"]["email"] == "t***@gmail.com"
    assert masked["headers"][ERROR_HEADER] == VALUE_ERROR
    code, out, _ = await cli(
        capsys, names, "dlq", "show", ids[1], "--app", app, "--json", "--reveal"
    )
    revealed = orjson.loads(out)
    assert revealed["payload"]["subscriber"]["phone"] == "+15555555555"
    assert revealed["payload"]["subscriber"]["email"] == "test@gmail.com"
    code, out, _ = await cli(capsys, names, "dlq", "show", ids[1], "--app", app)
    assert code == 0
    assert "headers:" in out and "payload:" in out and f'"{ERROR_HEADER}"' in out
    assert "+1******5555" in out and "+15555555555" not in out and "test@gmail.com" not in out

    # purge without --yes: a dry run that says what it would delete
    code, out, _ = await cli(capsys, names, "dlq", "purge", "--app", app, "--error", "ValueError")
    assert (code, one_line(out)) == (0, "would purge 3 of 6 (add --yes)")
    assert await depth(amqp, dlq) == 6

    # with --yes: only the matching events go
    code, out, _ = await cli(
        capsys, names, "dlq", "purge", "--app", app, "--error", "ValueError", "--yes"
    )
    assert (code, one_line(out)) == (0, f"purged 3 of 6 from {dlq}")
    code, out, _ = await cli(capsys, names, "dlq", "list", "--app", app, "--json")
    listed = orjson.loads(out)
    assert [e["message_id"] for e in listed["entries"]] == ids[0::2]
    assert (listed["total"], listed["matched"], listed["queue"]) == (3, 3, dlq)


async def test_the_cli_lists_replays_and_answers_with_exit_codes(
    amqp: AbstractRobustConnection,
    names: Names,
    apps: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = apps("loyalty")
    ids = await fill_dlq(amqp, names, app, 5)

    # list: a headline, a table with short ids; --json with full ids, progress on stderr
    code, out, _ = await cli(capsys, names, "dlq", "list", "--app", app, "--error", "timeout")
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == f"3 of 5 events match in {names.app_dead_letter_queue(app)}"
    assert lines[1].startswith("MESSAGE ID")
    assert [line.split()[0] for line in lines[2:]] == [i[:12] for i in ids[0::2]]
    assert all("sms.sent" in line and TIMEOUT_ERROR in line for line in lines[2:])
    code, out, err = await cli(
        capsys, names, "dlq", "list", "--app", app, "--message-id", ids[3], "--json"
    )
    answer = orjson.loads(out)
    assert (answer["total"], answer["matched"]) == (5, 1)
    assert answer["entries"][0]["message_id"] == ids[3]
    progress = [orjson.loads(line) for line in err.splitlines()]
    assert progress[-1] | {"timestamp": None} == {
        "event": "progress",
        "operation": "dlq.list",
        "done": 5,
        "total": 5,
        "level": "info",
        "timestamp": None,
    }

    # replay --dry-run moves nothing; a limited replay moves that many
    code, out, _ = await cli(capsys, names, "dlq", "replay", "--app", app, "--dry-run", "--json")
    assert (code, orjson.loads(out)["matched"], orjson.loads(out)["dry_run"]) == (0, 5, True)
    assert await depth(amqp, names.app_queue(app)) == 0
    code, out, _ = await cli(
        capsys, names, "dlq", "replay", "--app", app, "--type", "sms.*", "--limit", "2"
    )
    assert (code, one_line(out)) == (0, "matched 2, replayed 2, left 3, failed 0")
    assert await depth(amqp, names.app_queue(app)) == 2

    # wrong usage and bad input: 2; an operation that fails: 1; one line on stderr each
    code, out, err = await cli(capsys, names, "dlq", "list")
    assert (code, out) == (2, "")
    assert "--app" in one_line(err)
    code, out, err = await cli(capsys, names, "dlq", "list", "--app", app, "--since", "yesterday")
    assert (code, out) == (2, "")
    assert one_line(err).startswith("attentive-router: --since must be an ISO 8601 time")
    code, out, err = await cli(capsys, names, "dlq", "list", "--app", app, "--type", "sms")
    assert (code, out) == (2, "")
    assert "invalid event pattern" in one_line(err)
    code, out, err = await cli(capsys, names, "dlq", "show", "f" * 64, "--app", app)
    assert (code, out) == (1, "")
    assert one_line(err) == f"attentive-router: no event {'f' * 64} in {names.prefix}.app.{app}.dlq"
    code, out, err = await cli(capsys, names, "dlq", "list", "--app", "never-ran")
    assert (code, out) == (1, "")
    assert "does not exist" in one_line(err)
    code, out, err = await cli(capsys, names, "dlq", "replay", "--app", app, "--rate", "-3")
    assert code == 2 and "--rate" in one_line(err)


async def test_a_replay_whose_destination_is_gone_stops_and_loses_nothing(
    admin: Client,
    amqp: AbstractRobustConnection,
    names: Names,
    apps: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = apps("gone")
    ids = await fill_dlq(amqp, names, app, 3)
    channel = await amqp.channel()
    await channel.exchange_delete(names.app_requeue_exchange(app))

    code, out, err = await cli(capsys, names, "dlq", "replay", "--app", app)
    assert (code, out) == (1, "")
    assert err.splitlines()[-1].startswith("attentive-router: stopped after")
    response = await admin.post(f"/admin/dlq/{app}/replay", headers=AUTH)
    assert response.status == 503
    assert "stays parked" in (await response.json())["error"]
    code, out, _ = await cli(capsys, names, "dlq", "list", "--app", app, "--json")
    assert [e["message_id"] for e in orjson.loads(out)["entries"]] == ids


# -- unrouted and invalid --------------------------------------------------------------------


async def test_an_unrouted_replay_goes_to_whoever_owns_the_type_now(
    ingress: Client,
    admin: Client,
    amqp: AbstractRobustConnection,
    names: Names,
    dead: DeadLetters,
    apps: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given SMS and email events posted while no application claimed them
    sms = [dead_body(i, "sms.sent") for i in range(3)]
    emails = [dead_body(i, "email.opened") for i in range(2)]
    for body in (sms[0], emails[0], sms[1], emails[1], sms[2]):
        response = await ingress.post(WEBHOOK, data=body, headers=signed(body))
        assert response.status == 200
    await until_depth(amqp, names.unrouted_queue, 5)
    parked = dead.parked(Kind.UNROUTED)
    code, out, _ = await cli(capsys, names, "unrouted", "list", "--type", "email.*")
    assert code == 0 and out.startswith(f"2 of 5 events match in {names.unrouted_queue}\n")

    # When an application claims sms.* and ops replay the unrouted SMS events
    app = apps("texts")
    response = await admin.post(
        "/admin/claims", json={"app": app, "events": ["sms.*"]}, headers=AUTH
    )
    assert response.status == 201
    summary = await dead.replay(parked, Filter.build(event="sms.*"))

    # Then they are in that application's queue, and only they
    assert (summary.total, summary.matched, summary.replayed, summary.failed) == (5, 3, 3, 0)
    channel = await amqp.channel()
    delivered = await take(await channel.get_queue(names.app_queue(app)), 3)
    assert [m.message_id for m in delivered] == [hashlib.sha256(b).hexdigest() for b in sms]
    assert all(m.routing_key == "sms.sent.acme" for m in delivered)
    assert all(m.headers[REPLAY_COUNT_HEADER] == 1 for m in delivered)

    # When the rest is replayed, nobody owns it yet: it comes back to unrouted, counted
    rest = await dead.replay(parked)
    assert (rest.total, rest.matched, rest.replayed, rest.failed) == (2, 2, 2, 0)
    await until_depth(amqp, names.unrouted_queue, 2)
    back = await dead.list(parked)
    assert [e.message_id for e in back.entries] == [hashlib.sha256(b).hexdigest() for b in emails]
    assert [e.replays for e in back.entries] == [1, 1]
    assert await depth(amqp, names.app_queue(app)) == 0


async def test_invalid_webhooks_are_listed_shown_and_purged_but_never_replayed(
    ingress: Client,
    admin: Client,
    amqp: AbstractRobustConnection,
    names: Names,
    dead: DeadLetters,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bodies = [b"call me at +15555555555, not JSON", b'{"no": "type"}', b"[1, 2]"]
    for body in bodies:
        response = await ingress.post(WEBHOOK, data=body, headers=signed(body))
        assert response.status == 202
    await until_depth(amqp, names.invalid_queue, 3)
    ids = [hashlib.sha256(b).hexdigest() for b in bodies]
    parked = dead.parked(Kind.INVALID)

    listed = await dead.list(parked)
    assert [e.message_id for e in listed.entries] == ids
    assert [e.error for e in listed.entries] == [
        "body is not valid JSON",
        "no 'type'",
        "body is not a JSON object",
    ]
    assert all(e.parked_at is not None for e in listed.entries)

    code, out, _ = await cli(capsys, names, "invalid", "show", ids[0], "--json")
    shown = orjson.loads(out)
    assert shown["headers"][INVALID_REASON_HEADER] == "body is not valid JSON"
    assert shown["payload"] == "call me at +1******5555, not JSON"
    code, out, _ = await cli(capsys, names, "invalid", "show", ids[0], "--json", "--reveal")
    assert orjson.loads(out)["payload"] == bodies[0].decode()

    # replay is refused everywhere
    with pytest.raises(RouterError, match="cannot be replayed"):
        await dead.replay(parked)
    code, _, err = await cli(capsys, names, "invalid", "replay")
    assert code == 2 and "invalid choice" in one_line(err)
    response = await admin.post("/admin/invalid/replay", json={}, headers=AUTH)
    assert response.status == 400
    assert "cannot be replayed" in (await response.json())["error"]

    # purge: a dry run first, then only the chosen one
    code, out, _ = await cli(capsys, names, "invalid", "purge", "--message-id", ids[1])
    assert (code, one_line(out)) == (0, "would purge 1 of 3 (add --yes)")
    assert await depth(amqp, names.invalid_queue) == 3
    code, out, _ = await cli(capsys, names, "invalid", "purge", "--message-id", ids[1], "--yes")
    assert (code, one_line(out)) == (0, f"purged 1 of 3 from {names.invalid_queue}")
    assert [e.message_id for e in (await dead.list(parked)).entries] == [ids[0], ids[2]]


# -- the admin API ---------------------------------------------------------------------------


async def test_the_admin_api_lists_shows_replays_and_purges_behind_the_token(
    admin: Client,
    amqp: AbstractRobustConnection,
    names: Names,
    apps: Callable[[str], str],
) -> None:
    app = apps("webhooks-out")
    ids = await fill_dlq(amqp, names, app, 4)
    base = f"/admin/dlq/{app}"

    # without the token: 401, whatever the path
    for method, path in (("GET", base), ("POST", base + "/replay"), ("POST", base + "/purge")):
        response = await admin.request(method, path)
        assert response.status == 401
    assert await depth(amqp, names.app_dead_letter_queue(app)) == 4

    # list with filters
    response = await admin.get(base, params={"error": "ValueError"}, headers=AUTH)
    answer = await response.json()
    assert response.status == 200
    assert (answer["total"], answer["matched"]) == (4, 2)
    assert [e["message_id"] for e in answer["entries"]] == ids[1::2]
    assert answer["entries"][0]["error"] == VALUE_ERROR
    response = await admin.get(
        base, params=[("message_id", ids[0]), ("message_id", ids[3])], headers=AUTH
    )
    assert [e["message_id"] for e in (await response.json())["entries"]] == [ids[0], ids[3]]

    # show: masked, ?reveal=1 reveals, unknown: 404
    response = await admin.get(f"{base}/{ids[0]}", headers=AUTH)
    assert (await response.json())["payload"]["subscriber"]["phone"] == "+1******5555"
    response = await admin.get(f"{base}/{ids[0]}", params={"reveal": "1"}, headers=AUTH)
    assert (await response.json())["payload"]["subscriber"]["phone"] == "+15555555555"
    response = await admin.get(f"{base}/{'0' * 64}", headers=AUTH)
    assert response.status == 404

    # bad input: 400 with the reason
    for params in ({"since": "yesterday"}, {"type": "sms"}, {"colour": "blue"}):
        response = await admin.get(base, params=params, headers=AUTH)
        assert response.status == 400, params
        assert (await response.json())["error"]
    for body in ({"limit": 0}, {"rate": "fast"}, {"filter": {"type": 3}}, {"dry": True}):
        response = await admin.post(base + "/replay", json=body, headers=AUTH)
        assert response.status == 400, body
    response = await admin.get("/admin/dlq/Not_An_App", headers=AUTH)
    assert response.status == 400
    response = await admin.get("/admin/dlq/nobody", headers=AUTH)
    assert response.status == 404

    # replay: dry run, then for real with a filter and a limit
    response = await admin.post(
        base + "/replay",
        json={"filter": {"error": "TimeoutError"}, "dry_run": True},
        headers=AUTH,
    )
    assert (await response.json()) | {"queue": None} == {
        "queue": None,
        "total": 4,
        "matched": 2,
        "replayed": 0,
        "purged": 0,
        "failed": 0,
        "left": 4,
        "dry_run": True,
    }
    response = await admin.post(
        base + "/replay",
        json={"filter": {"type": "sms.*", "error": "TimeoutError"}, "limit": 1, "rate": 50},
        headers=AUTH,
    )
    replayed = await response.json()
    assert (replayed["matched"], replayed["replayed"], replayed["left"]) == (1, 1, 3)
    channel = await amqp.channel()
    (message,) = await take(await channel.get_queue(names.app_queue(app)), 1)
    assert message.message_id == ids[0]

    # purge: without confirm only counts; with confirm deletes the matches
    purge = {"filter": {"error": "ValueError"}}
    response = await admin.post(base + "/purge", json=purge, headers=AUTH)
    counted = await response.json()
    assert (counted["matched"], counted["purged"], counted["dry_run"]) == (2, 0, True)
    response = await admin.post(base + "/purge", json=purge | {"confirm": True}, headers=AUTH)
    purged = await response.json()
    assert (purged["matched"], purged["purged"], purged["left"]) == (2, 2, 1)
    response = await admin.get(base, headers=AUTH)
    assert [e["message_id"] for e in (await response.json())["entries"]] == [ids[2]]

    # unrouted and invalid answer too (empty here)
    channel = await amqp.channel()
    await topology.declare(channel, names)
    for path in ("/admin/unrouted", "/admin/invalid"):
        response = await admin.get(path, headers=AUTH)
        assert (response.status, (await response.json())["total"]) == (200, 0)


async def test_the_admin_api_answers_503_when_rabbitmq_is_unreachable(
    admin_settings: Settings,
) -> None:
    unreachable = replace(admin_settings, amqp_url="amqp://guest:guest@127.0.0.1:9/")
    client = Client(TestServer(create_admin_app(unreachable)))
    await client.start_server()
    try:
        response = await client.get("/admin/dlq/anyone", headers=AUTH)
        assert response.status == 503
        assert "no RabbitMQ node answered" in (await response.json())["error"]
        response = await client.post("/admin/unrouted/purge", json={}, headers=AUTH)
        assert response.status == 503
    finally:
        await client.close()


# -- progress ---------------------------------------------------------------------------------


def test_progress_off_a_terminal_logs_every_tenth() -> None:
    ticks = [0.0]
    reporter = ProgressReporter("dlq.replay", tty=False, clock=lambda: ticks[0])
    with structlog.testing.capture_logs() as logs:
        for done in range(1, 1001):
            ticks[0] += 0.001
            reporter(done, 1000)
        reporter.finish()
    assert [e["done"] for e in logs] == list(range(100, 1001, 100))
    assert all(
        (e["event"], e["operation"], e["total"], e["log_level"])
        == ("progress", "dlq.replay", 1000, "info")
        for e in logs
    )


def test_progress_off_a_terminal_logs_every_two_seconds_when_slow() -> None:
    ticks = [0.0]
    reporter = ProgressReporter("unrouted.list", tty=False, clock=lambda: ticks[0])
    with structlog.testing.capture_logs() as logs:
        for done in range(1, 21):
            ticks[0] += 0.5
            reporter(done, 1000)
    assert [e["done"] for e in logs] == [4, 8, 12, 16, 20]


def test_progress_on_a_terminal_redraws_one_bar_at_most_ten_times_a_second() -> None:
    stream = io.StringIO()
    ticks = [0]
    reporter = ProgressReporter(
        "dlq.replay", stream=stream, tty=True, clock=lambda: ticks[0] / 1000
    )
    with structlog.testing.capture_logs() as logs:
        for done in range(1, 1001):
            ticks[0] += 10  # 100 events a second: 10 s in all
            reporter(done, 1000)
        reporter.finish()  # already ended: no second newline
    text = stream.getvalue()
    frames = text.split("\r")[1:]
    assert logs == []
    assert text.startswith("\r[") and text.endswith("\n") and text.count("\n") == 1
    assert frames[0] == "[" + "." * 30 + "] 1/1000"
    assert frames[-1] == "[" + "#" * 30 + "] 1000/1000\n"
    assert frames[len(frames) // 2].startswith("[" + "#" * 14)
    assert 95 <= len(frames) <= 102  # ~10 a second over 10 s, plus the first and the last


def test_progress_bar_ends_its_line_when_a_walk_stops_short() -> None:
    stream = io.StringIO()
    reporter = ProgressReporter("dlq.list", stream=stream, tty=True)
    reporter(1, 3)
    reporter.finish()
    reporter.finish()
    assert stream.getvalue() == "\r[" + "#" * 10 + "." * 20 + "] 1/3\n"
