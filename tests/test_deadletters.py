"""Parked events through the commands and the admin API, on the parked-event store: listed a
page at a time newest first, counted by facets, shown masked unless revealed (and the reveal
audited), replayed and purged as jobs against the real RabbitMQ, behind named tokens."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import orjson
import pytest
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aiohttp.test_utils import TestServer
from pamqp.commands import Basic

from router.admin.app import create_admin_app
from router.amqp import topology
from router.claims.bindings import Bindings
from router.claims.open import store_from_url
from router.claims.service import ClaimsService
from router.cli.main import main
from router.cli.output import ProgressReporter
from router.contract import envelope
from router.contract.examples import example_body
from router.contract.names import (
    ATTEMPT_HEADER,
    ERROR_HEADER,
    REPLAY_COUNT_HEADER,
    ROUTING_KEY_HEADER,
    WEBHOOK_PATH,
    Names,
    routing_key,
)
from router.parked.model import ParkedEvent, Place, State, parked_event
from router.parked.open import parked_store_from_url
from router.parked.query import Query
from router.parked.runner import JobRunner
from router.parked.store import ParkedStore
from router.settings import Settings
from tests.conftest import AMQP_URL, AUTH, Client, depth, signed, take
from tests.environment import no_router_environment
from tests.parked_stores import POSTGRES_URL, Backend
from tests.steps import claim

#: ``no_router_environment``, autouse: no ROUTER_* variable of the shell counts.
__all__ = ["no_router_environment"]

pytestmark = pytest.mark.broker

COMPANY = "acme"
#: Attentive's timestamp of every generated event (distinct bodies come from external_id).
OCCURRED_MS = 1_764_147_600_000
#: When the first generated entry was parked; each next one a millisecond later.
PARKED = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
TIMEOUT_ERROR = "TimeoutError: crm"
VALUE_ERROR = "ValueError: bad +15555555555"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'router.db'}"


@asynccontextmanager
async def opened_store(url: str) -> AsyncIterator[ParkedStore]:
    """The parked-event store at ``url``, upgraded, as the keeper fills it; closed after."""
    opened = parked_store_from_url(url)
    await opened.open()
    await opened.upgrade()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[ParkedStore]:
    """The test's parked-event store (a SQLite file)."""
    async with opened_store(database_url) as opened:
        yield opened


Cli = Callable[..., Awaitable[tuple[int, str, str]]]


def command_line(capsys: pytest.CaptureFixture[str], names: Names, database_url: str) -> Cli:
    """``attentive-router ARGV`` run in-process on a store, a namespace and the local broker:
    its exit code, stdout and stderr."""

    async def run(*argv: str) -> tuple[int, str, str]:
        args = [*argv, "--namespace", names.prefix, "--amqp-url", AMQP_URL]
        if "--database-url" not in argv:
            args += ["--database-url", database_url]

        def call() -> int:
            try:
                return main(args)
            except SystemExit as exited:
                return int(exited.code or 0)

        capsys.readouterr()  # what the in-process ingress and admin API logged before
        code = await asyncio.to_thread(call)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], names: Names, database_url: str) -> Cli:
    """The command on the test's store, namespace and broker."""
    return command_line(capsys, names, database_url)


def dead_body(i: int, event_type: str = "sms.sent") -> bytes:
    return example_body(event_type, COMPANY, timestamp_ms=OCCURRED_MS, external_id=i)


def message_id(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def error_of(i: int) -> str:
    return TIMEOUT_ERROR if i % 2 == 0 else VALUE_ERROR


def dead_letters(app: str, count: int, event_type: str = "sms.sent") -> list[ParkedEvent]:
    """``count`` events a worker of ``app`` dead-lettered a millisecond apart (half after a
    TimeoutError, half a ValueError), as the keeper stores them from the DLQ."""
    entries = []
    key = routing_key(event_type, COMPANY)
    for i in range(count):
        body = dead_body(i, event_type)
        at = PARKED + timedelta(milliseconds=i)
        stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        headers = envelope.dead_lettered(
            {},
            key,
            attempt=5,
            error=error_of(i),
            traceback=f"Traceback (most recent call last):\n{error_of(i)}\n",
            reason="exhausted",
            app=app,
            now=stamp,
        )
        properties = Basic.Properties(
            content_type="application/json",
            delivery_mode=2,
            message_id=message_id(body),
            headers=headers,
        )
        entries.append(
            parked_event(body, properties, place="dlq", app=app, routing_key=key, seen_at=at)
        )
    return entries


async def drain_into(store: ParkedStore, queue: aio_pika.abc.AbstractQueue, place: Place) -> int:
    """Move what waits in ``queue`` into the store as the keeper does (commit, then ack)."""
    taken: list[AbstractIncomingMessage] = []
    while (message := await queue.get(no_ack=False, fail=False, timeout=10)) is not None:
        taken.append(message)
    now = datetime.now(UTC)
    await store.add_many(
        [
            parked_event(
                m.body,
                m.properties,
                place=place,
                app=None,
                routing_key=m.routing_key or "",
                seen_at=now,
            )
            for m in taken
        ]
    )
    for message in taken:
        await message.ack()
    return len(taken)


async def until_depth(
    amqp: AbstractRobustConnection, queue: str, count: int, timeout: float = 15
) -> None:
    async with asyncio.timeout(timeout):
        while await depth(amqp, queue) != count:
            await asyncio.sleep(0.02)


def one_line(text: str) -> str:
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)
    return text.rstrip("\n")


async def parked_ids(store: ParkedStore, query: Query) -> list[str | None]:
    """The message ids of every entry of ``query``, newest first, all pages."""
    ids: list[str | None] = []
    cursor = None
    while True:
        page = await store.page(query, 1000, cursor)
        ids += [entry.message_id for entry in page.entries]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


# -- the DLQ of an application ---------------------------------------------------------------


async def test_a_thousand_dead_letters_page_newest_first_and_exactly_the_matching_half_replays(
    amqp: AbstractRobustConnection, names: Names, store: ParkedStore, cli: Cli
) -> None:
    # Given 1,000 dead letters of crm-sync in the store, half after a TimeoutError
    app = "crm-sync"
    entries = dead_letters(app, 1000)
    ids = [e.message_id for e in entries]
    assert await store.add_many(entries) == 1000
    channel = await amqp.channel()
    await topology.declare_app_queue(channel, names, app)

    # When ops page through the list, 300 at a time
    seen: list[str] = []
    cursor: list[str] = []
    while True:
        code, out, _ = await cli("dlq", "list", "--app", app, "--limit", "300", "--json", *cursor)
        assert code == 0
        page = orjson.loads(out)
        assert page["matched"] == 1000
        seen += [entry["message_id"] for entry in page["entries"]]
        if page["next_cursor"] is None:
            break
        cursor = ["--cursor", page["next_cursor"]]

    # Then every entry shows once, newest first
    assert seen == ids[::-1]
    code, out, _ = await cli("dlq", "list", "--app", app, "--limit", "2")
    lines = out.splitlines()
    assert lines[0] == f"1000 events match in the dlq of {app}, newest first"
    assert lines[1].split() == [
        "ID",
        "MESSAGE",
        "ID",
        "TYPE",
        "COMPANY",
        "ATTEMPTS",
        "LAST",
        "ERROR",
        "PARKED",
        "AT",
    ]
    assert ids[999] is not None and lines[2].split()[1] == ids[999][:12]
    assert "+15555555555" not in out and "+1******5555" in out
    assert lines[-1].startswith("next page: --cursor ")

    # And the facets count them by error kind
    code, out, _ = await cli("dlq", "facets", "--app", app, "--json")
    facets = orjson.loads(out)
    assert (code, facets["total"]) == (0, 1000)
    assert facets["errors"] == [
        {"value": "TimeoutError", "count": 500},
        {"value": "ValueError", "count": 500},
    ]
    assert facets["types"] == [{"value": "sms.sent", "count": 1000}]

    # When the TimeoutError half is replayed
    code, out, err = await cli("dlq", "replay", "--app", app, "--error", "timeouterror")

    # Then the job did exactly those 500, and they are in the application queue, once each
    assert (code, one_line(out).split(":", 1)[1]) == (
        0,
        " matched 500, replayed 500, failed 0",
    )
    assert "replay of 500 events in the dlq of crm-sync" in err
    replayed = await take(await channel.get_queue(names.app_queue(app)), 500, timeout=30)
    assert await depth(amqp, names.app_queue(app)) == 0
    assert sorted(m.message_id or "" for m in replayed) == sorted(str(i) for i in ids[0::2])
    for message in replayed:
        assert message.headers[REPLAY_COUNT_HEADER] == 1
        assert ATTEMPT_HEADER not in message.headers
        assert ERROR_HEADER not in message.headers
        assert message.headers[ROUTING_KEY_HEADER] == "sms.sent.acme"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message_id(message.body) == message.message_id

    # And the other 500 are still parked; the replayed ones are marked so, by the command's user
    parked = Query(place=Place.DLQ, app=app)
    assert await parked_ids(store, parked) == ids[1::2][::-1]
    done = await store.page(replace(parked, state=State.REPLAYED), 1000)
    assert sorted(e.message_id or "" for e in done.entries) == sorted(str(i) for i in ids[0::2])
    assert all((e.state_by or "").startswith("cli") for e in done.entries)


async def test_show_masks_contacts_unless_revealed_and_purge_needs_yes(
    store: ParkedStore, cli: Cli
) -> None:
    # Given six dead letters of profiles
    app = "profiles"
    entries = dead_letters(app, 6)
    ids = [str(e.message_id) for e in entries]
    await store.add_many(entries)

    # When ops show one: masked by default, by message id or by entry id
    code, out, _ = await cli("dlq", "show", ids[1], "--app", app, "--json")
    masked = orjson.loads(out)
    assert (code, masked["message_id"], masked["state"]) == (0, ids[1], "parked")
    assert masked["payload"]["subscriber"]["phone"] == "+1******5555"
    assert masked["payload"]["subscriber"]["email"] == "t***@gmail.com"
    assert masked["headers"][ERROR_HEADER] == "ValueError: bad +1******5555"
    assert masked["error"] == "ValueError: bad +1******5555"
    code, out, _ = await cli("dlq", "show", str(masked["id"]), "--app", app, "--json")
    assert (code, orjson.loads(out)["message_id"]) == (0, ids[1])
    assert await store.audit() == []

    # Then --reveal shows the subscriber's phone and email, and the reveal is audited
    code, out, err = await cli("dlq", "show", ids[1], "--app", app, "--json", "--reveal")
    revealed = orjson.loads(out)
    assert revealed["payload"]["subscriber"]["phone"] == "+15555555555"
    assert revealed["payload"]["subscriber"]["email"] == "test@gmail.com"
    assert revealed["error"] == VALUE_ERROR
    assert "parked_entry_revealed" in err
    (record,) = await store.audit()
    assert (record.action.value, record.who[:3]) == ("reveal", "cli")
    assert record.filter == {
        "entry_id": masked["id"],
        "message_id": ids[1],
        "place": "dlq",
        "app": app,
    }
    code, out, _ = await cli("dlq", "show", ids[1], "--app", app)
    assert code == 0
    assert "headers:" in out and "payload:" in out and f'"{ERROR_HEADER}"' in out
    assert "+1******5555" in out and "+15555555555" not in out and "test@gmail.com" not in out

    # When ops purge without --yes: a dry run that says what it would purge
    code, out, _ = await cli("dlq", "purge", "--app", app, "--error", "ValueError")
    assert (code, one_line(out)) == (0, f"would purge 3 in the dlq of {app} (add --yes)")
    assert await store.count(Query(place=Place.DLQ, app=app)) == 6

    # And with --yes: only the matching entries go, and they are listed no more
    code, out, _ = await cli("dlq", "purge", "--app", app, "--error", "ValueError", "--yes")
    assert code == 0 and one_line(out).endswith(": matched 3, purged 3, failed 0")
    code, out, _ = await cli("dlq", "list", "--app", app, "--json")
    assert [e["message_id"] for e in orjson.loads(out)["entries"]] == ids[0::2][::-1]
    code, out, _ = await cli("dlq", "show", ids[1], "--app", app, "--json")
    assert (code, orjson.loads(out)["state"]) == (0, "purged")
    actions = [r.action.value for r in await store.audit()]
    assert actions.count("purge") == 2 and actions.count("reveal") == 1


async def test_exit_codes_dry_runs_limits_and_wrong_usage(
    amqp: AbstractRobustConnection, names: Names, store: ParkedStore, cli: Cli, tmp_path: Path
) -> None:
    app = "exit-codes"
    entries = dead_letters(app, 5)
    await store.add_many(entries)
    channel = await amqp.channel()
    await topology.declare_app_queue(channel, names, app)

    # replay --dry-run moves nothing; a limited replay moves that many
    code, out, _ = await cli("dlq", "replay", "--app", app, "--dry-run", "--json")
    job = orjson.loads(out)
    assert (code, job["matched"], job["dry_run"], job["state"]) == (0, 5, True, "done")
    assert await depth(amqp, names.app_queue(app)) == 0
    code, out, _ = await cli("dlq", "replay", "--app", app, "--type", "sms.*", "--limit", "2")
    assert code == 0 and one_line(out).endswith(": matched 2, replayed 2, failed 0")
    await until_depth(amqp, names.app_queue(app), 2)

    # --detach creates the job and leaves it for a keeper
    code, out, _ = await cli("dlq", "purge", "--app", app, "--yes", "--detach", "--json")
    detached = orjson.loads(out)
    assert (code, detached["state"], detached["matched"]) == (0, "queued", 3)
    assert await store.count(Query(place=Place.DLQ, app=app)) == 3

    # wrong usage and bad input: 2; what fails or is not there: 1; one line on stderr each
    code, out, err = await cli("dlq", "list")
    assert (code, out) == (2, "")
    assert "--app" in one_line(err)
    code, out, err = await cli("dlq", "list", "--app", app, "--since", "yesterday")
    assert (code, out) == (2, "")
    assert one_line(err).startswith("attentive-router: --since must be an ISO 8601 time")
    code, out, err = await cli("dlq", "list", "--app", app, "--type", "sms")
    assert (code, out) == (2, "")
    assert "invalid event pattern" in one_line(err)
    code, out, err = await cli("dlq", "list", "--app", app, "--cursor", "nonsense")
    assert (code, out) == (2, "")
    assert one_line(err).startswith("attentive-router: --cursor is not a cursor")
    code, out, err = await cli("dlq", "replay", "--app", app, "--rate", "-3")
    assert code == 2 and "--rate" in one_line(err)
    code, out, err = await cli("dlq", "show", "f" * 64, "--app", app)
    assert (code, out) == (1, "")
    assert one_line(err) == f"attentive-router: no event {'f' * 64} in the dlq of {app}"
    code, out, err = await cli("dlq", "list", "--app", "never-ran", "--json")
    assert (code, orjson.loads(out)["matched"]) == (0, 0)
    unreachable = f"sqlite:///{tmp_path / 'nowhere.db'}"
    code, out, err = await cli("dlq", "list", "--app", app, "--database-url", unreachable)
    assert (code, out) == (1, "")
    assert "upgrade the database first" in one_line(err)


async def test_a_replay_whose_destination_is_gone_fails_and_leaves_the_entries_parked(
    amqp: AbstractRobustConnection, names: Names, store: ParkedStore, cli: Cli
) -> None:
    # Given three dead letters of an application whose queues are gone
    app = "gone"
    await store.add_many(dead_letters(app, 3))

    # When ops replay them
    code, out, _ = await cli("dlq", "replay", "--app", app, "--json")

    # Then the job failed them (exit 1), and they are still parked
    job = orjson.loads(out)
    assert (code, job["matched"], job["done"], job["failed"]) == (1, 3, 0, 3)
    assert await store.count(Query(place=Place.DLQ, app=app)) == 3


async def test_ctrl_c_detaches_from_a_replay_which_a_keeper_then_finishes(
    amqp: AbstractRobustConnection, names: Names, store: ParkedStore, database_url: str
) -> None:
    # Given 200 dead letters, and a replay of them at 40 a second running in a real process
    app = "detached"
    entries = dead_letters(app, 200)
    await store.add_many(entries)
    await topology.declare_app_queue(await amqp.channel(), names, app)
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "router", "dlq", "replay", "--app", app, "--rate", "40"),
        *("--namespace", names.prefix, "--amqp-url", AMQP_URL, "--database-url", database_url),
        env={k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        while not (jobs := await store.jobs()) or jobs[0].done < 20:
            assert process.returncode is None, "the replay ended before it could be interrupted"
            await asyncio.sleep(0.05)

    # When ops press Ctrl-C
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), 30)

    # Then the command detaches, saying so with the job's id, and the job is not cancelled
    (job,) = await store.jobs()
    assert process.returncode == 130
    assert err.decode().splitlines()[-1] == (
        f"note: detached from job {job.id}: it goes on in a keeper (attentive-router jobs show "
        f"{job.id}; attentive-router jobs cancel {job.id} stops it)"
    )
    assert job.state.value == "running" and job.lease_owner is None
    assert 20 <= job.done < 200

    # And a keeper finishes it: every entry replayed once in the store, every event delivered
    await run_jobs(store, names)
    finished = await store.job(job.id)
    assert (finished.state.value, finished.done, finished.failed) == ("done", 200, 0)
    assert await store.count(Query(place=Place.DLQ, app=app)) == 0
    queue = await (await amqp.channel()).get_queue(names.app_queue(app))
    arrived = await take(queue, await depth(amqp, names.app_queue(app)))
    assert {m.message_id for m in arrived} == {e.message_id for e in entries}
    assert len(arrived) - 200 <= 256  # at most the in-flight window twice


# -- unrouted and invalid --------------------------------------------------------------------


async def test_an_unrouted_replay_goes_to_whoever_owns_the_type_now(
    ingress: Client,
    admin: Client,
    amqp: AbstractRobustConnection,
    names: Names,
    store: ParkedStore,
    cli: Cli,
) -> None:
    # Given SMS and email events posted while no application claimed them, in the store
    sms = [dead_body(i, "sms.sent") for i in range(3)]
    emails = [dead_body(i, "email.opened") for i in range(2)]
    for body in (sms[0], emails[0], sms[1], emails[1], sms[2]):
        response = await ingress.post(WEBHOOK_PATH, data=body, headers=signed(body))
        assert response.status == 200
    await until_depth(amqp, names.unrouted_queue, 5)
    channel = await amqp.channel()
    unrouted = await channel.get_queue(names.unrouted_queue)
    assert await drain_into(store, unrouted, Place.UNROUTED) == 5
    code, out, _ = await cli("unrouted", "list", "--type", "email.*")
    assert code == 0 and out.startswith("2 events match in unrouted, newest first\n")

    # When an application claims sms.* and ops replay the unrouted SMS events
    app = "texts"
    await claim(admin, app, "sms.*")
    code, out, _ = await cli("unrouted", "replay", "--type", "sms.*")
    assert code == 0 and one_line(out).endswith(": matched 3, replayed 3, failed 0")

    # Then they are in that application's queue, and only they
    delivered = await take(await channel.get_queue(names.app_queue(app)), 3)
    assert sorted(str(m.message_id) for m in delivered) == sorted(message_id(b) for b in sms)
    assert all(m.routing_key == "sms.sent.acme" for m in delivered)
    assert all(m.headers[REPLAY_COUNT_HEADER] == 1 for m in delivered)

    # When the rest is replayed, nobody owns it yet: it comes back to unrouted, counted
    code, out, _ = await cli("unrouted", "replay")
    assert code == 0 and one_line(out).endswith(": matched 2, replayed 2, failed 0")
    await until_depth(amqp, names.unrouted_queue, 2)
    back = await take(unrouted, 2)
    assert sorted(str(m.message_id) for m in back) == sorted(message_id(b) for b in emails)
    assert [m.headers[REPLAY_COUNT_HEADER] for m in back] == [1, 1]
    assert await depth(amqp, names.app_queue(app)) == 0
    assert await store.count(Query(place=Place.UNROUTED)) == 0


async def test_invalid_webhooks_are_listed_shown_and_purged_but_never_replayed(
    ingress: Client,
    admin: Client,
    amqp: AbstractRobustConnection,
    names: Names,
    store: ParkedStore,
    cli: Cli,
) -> None:
    # Given three authentic webhooks that could not be parsed, in the store
    bodies = [b"call me at +15555555555, not JSON", b'{"no": "type"}', b"[1, 2]"]
    for body in bodies:
        response = await ingress.post(WEBHOOK_PATH, data=body, headers=signed(body))
        assert response.status == 202
    await until_depth(amqp, names.invalid_queue, 3)
    channel = await amqp.channel()
    assert await drain_into(store, await channel.get_queue(names.invalid_queue), Place.INVALID)
    ids = [message_id(b) for b in bodies]

    # Then they are listed with why, and shown masked unless revealed
    code, out, _ = await cli("invalid", "list", "--json")
    listed = orjson.loads(out)["entries"]
    assert sorted(e["message_id"] for e in listed) == sorted(ids)
    assert sorted(e["error"] for e in listed) == [
        "body is not a JSON object",
        "body is not valid JSON",
        "no 'type'",
    ]
    code, out, _ = await cli("invalid", "show", ids[0], "--json")
    assert orjson.loads(out)["payload"] == "call me at +1******5555, not JSON"
    code, out, _ = await cli("invalid", "show", ids[0], "--json", "--reveal")
    assert orjson.loads(out)["payload"] == bodies[0].decode()

    # And replay is refused everywhere
    code, _, err = await cli("invalid", "replay")
    assert code == 2 and "invalid choice" in one_line(err)
    response = await admin.post("/admin/invalid/replay", json={}, headers=AUTH)
    assert response.status == 400
    assert "cannot be replayed" in (await response.json())["error"]

    # And a purge is a dry run first, then purges only the chosen one
    code, out, _ = await cli("invalid", "purge", "--message-id", ids[1])
    assert (code, one_line(out)) == (0, "would purge 1 in invalid (add --yes)")
    code, out, _ = await cli("invalid", "purge", "--message-id", ids[1], "--yes")
    assert code == 0 and one_line(out).endswith(": matched 1, purged 1, failed 0")
    left = await parked_ids(store, Query(place=Place.INVALID))
    assert sorted(str(i) for i in left) == sorted([ids[0], ids[2]])


# -- the admin API ---------------------------------------------------------------------------


@pytest.fixture
async def parked_admin(
    admin_settings: Settings, backend: Backend
) -> AsyncIterator[tuple[Client, ParkedStore]]:
    """The admin API on a parked-event store of each backend (SQLite, the real PostgreSQL),
    and the test's own handle on that store."""
    store = await backend.opened()
    client = Client(TestServer(create_admin_app(admin_settings, store=backend.make())))
    await client.start_server()
    yield client, store
    await client.close()
    await store.close()


async def test_the_admin_api_lists_counts_shows_and_makes_jobs_behind_the_token(
    parked_admin: tuple[Client, ParkedStore], amqp: AbstractRobustConnection, names: Names
) -> None:
    admin, store = parked_admin
    app = "webhooks-out"
    entries = dead_letters(app, 4)
    ids = [str(e.message_id) for e in entries]
    await store.add_many(entries)
    await topology.declare_app_queue(await amqp.channel(), names, app)
    base = f"/admin/dlq/{app}"

    # Without the token: 401, whatever the path
    for method, path in (("GET", base), ("POST", base + "/replay"), ("GET", "/admin/jobs")):
        response = await admin.request(method, path)
        assert response.status == 401

    # A list with filters, newest first, a page at a time
    response = await admin.get(base, params={"error": "ValueError"}, headers=AUTH)
    answer = await response.json()
    assert (response.status, answer["matched"], answer["next_cursor"]) == (200, 2, None)
    assert [e["message_id"] for e in answer["entries"]] == [ids[3], ids[1]]
    assert answer["entries"][0]["error"] == "ValueError: bad +1******5555"
    response = await admin.get(base, params={"limit": "3"}, headers=AUTH)
    first = await response.json()
    response = await admin.get(
        base, params={"limit": "3", "cursor": first["next_cursor"]}, headers=AUTH
    )
    second = await response.json()
    assert [e["message_id"] for e in first["entries"] + second["entries"]] == ids[::-1]
    assert second["next_cursor"] is None
    response = await admin.get(
        base, params=[("message_id", ids[0]), ("message_id", ids[3])], headers=AUTH
    )
    assert [e["message_id"] for e in (await response.json())["entries"]] == [ids[3], ids[0]]

    # Facets
    response = await admin.get(base + "/facets", params={"reason": "exhausted"}, headers=AUTH)
    facets = await response.json()
    assert (facets["total"], facets["reasons"]) == (4, [{"value": "exhausted", "count": 4}])
    assert facets["days"] == [{"value": "2026-11-26", "count": 4}]

    # Show: masked, ?reveal=1 reveals (audited with the token's name), unknown: 404
    response = await admin.get(f"{base}/{ids[1]}", headers=AUTH)
    assert (await response.json())["payload"]["subscriber"]["phone"] == "+1******5555"
    response = await admin.get(f"{base}/{ids[1]}", params={"reveal": "1"}, headers=AUTH)
    assert (await response.json())["payload"]["subscriber"]["phone"] == "+15555555555"
    assert [(r.action.value, r.who) for r in await store.audit()] == [("reveal", "admin")]
    response = await admin.get(f"{base}/{'0' * 64}", headers=AUTH)
    assert response.status == 404

    # Bad input: 400 with the reason
    for params in ({"since": "yesterday"}, {"type": "sms"}, {"colour": "blue"}, {"limit": "x"}):
        response = await admin.get(base, params=params, headers=AUTH)
        assert response.status == 400, params
        assert (await response.json())["error"]
    for body in ({"limit": 0}, {"rate": "fast"}, {"filter": {"type": 3}}, {"dry": True}):
        response = await admin.post(base + "/replay", json=body, headers=AUTH)
        assert response.status == 400, body
    response = await admin.get("/admin/dlq/Not_An_App", headers=AUTH)
    assert response.status == 400

    # A replay: 202 and the job, which a keeper runs; then it is done
    response = await admin.post(
        base + "/replay",
        json={"filter": {"error": "TimeoutError"}, "limit": 1, "rate": 50},
        headers=AUTH,
    )
    assert response.status == 202
    job = await response.json()
    assert (job["kind"], job["state"], job["matched"], job["requested_by"]) == (
        "replay",
        "queued",
        1,
        "admin",
    )
    assert response.headers["Location"] == f"/admin/jobs/{job['id']}"
    await run_jobs(store, names)
    response = await admin.get(f"/admin/jobs/{job['id']}", headers=AUTH)
    ran = await response.json()
    assert (ran["state"], ran["done"], ran["failed"]) == ("done", 1, 0)
    (message,) = await take(await (await amqp.channel()).get_queue(names.app_queue(app)), 1)
    assert message.message_id == ids[0]

    # A purge: without confirm only counts; with it, purges the matches
    purge = {"filter": {"error": "ValueError"}}
    response = await admin.post(base + "/purge", json=purge, headers=AUTH)
    counted = await response.json()
    assert (response.status, counted["matched"], counted["dry_run"]) == (202, 2, True)
    response = await admin.post(base + "/purge", json=purge | {"confirm": True}, headers=AUTH)
    purging = await response.json()
    assert (purging["matched"], purging["dry_run"]) == (2, False)
    await run_jobs(store, names)
    response = await admin.get(base, headers=AUTH)
    assert [e["message_id"] for e in (await response.json())["entries"]] == [ids[2]]

    # The jobs, newest first; a finished one cannot be cancelled
    response = await admin.get("/admin/jobs", headers=AUTH)
    listed = [(j["id"], j["kind"], j["state"]) for j in (await response.json())["jobs"]]
    assert listed == [
        (purging["id"], "purge", "done"),
        (counted["id"], "purge", "done"),
        (job["id"], "replay", "done"),
    ]
    response = await admin.get("/admin/jobs", params={"state": "queued"}, headers=AUTH)
    assert (await response.json())["jobs"] == []
    response = await admin.post(f"/admin/jobs/{job['id']}/cancel", headers=AUTH)
    assert response.status == 409
    for path, status in (
        ("/admin/jobs/999", 404),
        ("/admin/jobs/99999999999999999999999", 404),
        ("/admin/jobs/first", 400),
        ("/admin/jobs?state=asleep", 400),
        ("/admin/jobs?before=yesterday", 400),
    ):
        response = await admin.get(path, headers=AUTH)
        assert response.status == status, path
    response = await admin.get("/admin/jobs", params={"before": purging["id"]}, headers=AUTH)
    assert [j["id"] for j in (await response.json())["jobs"]] == [counted["id"], job["id"]]

    # Unrouted and invalid answer too (empty here)
    for path in ("/admin/unrouted", "/admin/invalid"):
        response = await admin.get(path, headers=AUTH)
        assert (response.status, (await response.json())["matched"]) == (200, 0)


async def test_the_admin_api_answers_503_while_the_database_is_unreachable(
    admin_settings: Settings, cli: Cli
) -> None:
    # Given an admin API whose parked-event database does not answer
    unreachable = POSTGRES_URL.replace(":5432", ":9")
    claims = ClaimsService(
        store_from_url(admin_settings.database_url.reveal()),
        Bindings(AMQP_URL, admin_settings.names),
    )
    app = create_admin_app(
        admin_settings, claims, store=parked_store_from_url(unreachable, timeout=2)
    )
    client = Client(TestServer(app))
    await client.start_server()
    try:
        # When ops ask it anything about parked events, Then it answers 503, saying no more
        for method, path in (
            ("GET", "/admin/dlq/anyone"),
            ("GET", "/admin/unrouted/facets"),
            ("GET", "/admin/invalid/1"),
            ("POST", "/admin/unrouted/purge"),
            ("GET", "/admin/jobs"),
        ):
            response = await client.request(method, path, headers=AUTH)
            assert response.status == 503, path
            assert await response.json() == {"error": "the parked-event database is unavailable"}
            assert response.headers["Retry-After"]
        # And the claims still answer
        response = await client.get("/admin/claims", headers=AUTH)
        assert response.status == 200
    finally:
        await client.close()

    # And the command says so in one line, exit 1
    code, out, err = await cli("unrouted", "list", "--database-url", unreachable)
    assert (code, out) == (1, "")
    assert one_line(err).startswith("attentive-router: cannot connect to the parked-event")


# -- progress ---------------------------------------------------------------------------------


def test_progress_off_a_terminal_logs_every_tenth() -> None:
    ticks = [0.0]
    reporter = ProgressReporter("replay.1", tty=False, clock=lambda: ticks[0])
    with structlog.testing.capture_logs() as logs:
        for done in range(1, 1001):
            ticks[0] += 0.001
            reporter(done, 1000)
        reporter.finish()
    assert [e["done"] for e in logs] == list(range(100, 1001, 100))
    assert all(
        (e["event"], e["operation"], e["total"], e["log_level"])
        == ("progress", "replay.1", 1000, "info")
        for e in logs
    )


def test_progress_off_a_terminal_logs_every_two_seconds_when_slow() -> None:
    ticks = [0.0]
    reporter = ProgressReporter("purge.2", tty=False, clock=lambda: ticks[0])
    with structlog.testing.capture_logs() as logs:
        for done in range(1, 21):
            ticks[0] += 0.5
            reporter(done, 1000, rate=2.0, eta=(1000 - done) / 2)
    assert [e["done"] for e in logs] == [4, 8, 12, 16, 20]
    assert (logs[-1]["rate"], logs[-1]["eta_seconds"]) == (2.0, 490.0)


def test_progress_on_a_terminal_redraws_one_bar_at_most_ten_times_a_second() -> None:
    stream = io.StringIO()
    ticks = [0]
    reporter = ProgressReporter("replay.1", stream=stream, tty=True, clock=lambda: ticks[0] / 1000)
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


def test_progress_on_a_terminal_shows_the_rate_and_eta_and_blanks_what_a_longer_line_left() -> None:
    stream = io.StringIO()
    reporter = ProgressReporter("replay.1", stream=stream, tty=True, redraw=0)
    reporter(500, 2000, rate=250.0, eta=3725.0)
    reporter(600, 2000)
    reporter.finish()
    first, second = stream.getvalue().split("\r")[1:]
    assert first == "[" + "#" * 7 + "." * 23 + "] 500/2000  250/s  ETA 1:02:05"
    assert second.rstrip("\n") == "[" + "#" * 9 + "." * 21 + "] 600/2000" + " " * 20


def test_progress_bar_ends_its_line_when_a_job_stops_short() -> None:
    stream = io.StringIO()
    reporter = ProgressReporter("replay.1", stream=stream, tty=True)
    reporter(1, 3)
    reporter.finish()
    reporter.finish()
    assert stream.getvalue() == "\r[" + "#" * 10 + "." * 20 + "] 1/3\n"


async def run_jobs(store: ParkedStore, names: Names) -> None:
    """Run every runnable job to its end, as a keeper would."""
    runner = JobRunner(store, AMQP_URL, names)
    try:
        async with asyncio.timeout(60):
            while await runner.run_job() is not None:
                pass
    finally:
        await runner.close()
