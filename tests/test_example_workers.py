"""The three example workers, each through WorkerHarness (no broker), and sms-audit once
through the real RabbitMQ: what each makes of the events it claims."""

from __future__ import annotations

import asyncio
import io
import re
import socket
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import generate_latest

from consumers import Worker
from consumers.attribute_forwarder import build_worker as build_forwarder
from consumers.attribute_forwarder.forwarder import ForwardFailed
from consumers.email_engagement import build_worker as build_engagement
from consumers.runtime.cli import load_worker
from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.retry import RetryPolicy
from consumers.sms_audit import build_worker as build_audit
from consumers.sms_audit.query import AuditRow, main, query
from consumers.testing import DeadLetter, Handled, RetryLater, Skipped, WorkerHarness
from router.contract.events import message_id
from router.contract.examples import example_body, example_payload
from router.contract.masking import mask_phone
from router.contract.names import WEBHOOK_PATH
from tests.conftest import Client, StartWorker, signed

SMS_TYPES = (
    "sms.subscribed",
    "sms.unsubscribed",
    "sms.sent",
    "sms.message_link_click",
    "sms.inbound_message",
)
PHONE = "+15555555555"  # the examples' subscriber
EMAIL = "test@gmail.com"
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
HOUR = 3_600_000


@asynccontextmanager
async def started(worker: Worker) -> AsyncIterator[WorkerHarness]:
    """The worker's start-up hooks run, a harness on it, then its shutdown hooks."""
    for hook in worker.on_startup:
        await hook()
    try:
        yield WorkerHarness(worker)
    finally:
        for hook in worker.on_shutdown:
            await hook()


def sms(
    event_type: str, *, at: int = T0, phone: str = PHONE, external_id: int = 16467358
) -> dict[str, Any]:
    payload = example_payload(event_type, "acme", timestamp_ms=at, external_id=external_id)
    payload["subscriber"]["phone"] = phone
    return payload


# --- sms-audit ------------------------------------------------------------------------------


@pytest.fixture
def audit_db(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


async def test_each_sms_event_becomes_one_audit_row(audit_db: Path) -> None:
    async with started(build_audit({"SMS_AUDIT_DB": str(audit_db)})) as harness:
        outcomes = [await harness.deliver(sms(t, at=T0 + i)) for i, t in enumerate(SMS_TYPES)]

    rows = query(audit_db)
    assert outcomes == [Handled()] * 5
    assert [r.activity for r in rows] == [
        "subscribed",
        "unsubscribed",
        "sent",
        "clicked",
        "inbound",
    ]
    assert [r.event_type for r in rows] == list(SMS_TYPES)
    assert {(r.company_id, r.subscriber_id, r.phone) for r in rows} == {
        ("acme", "16467358", "+1******5555")
    }
    assert rows[0].occurred_at == "2023-11-14T22:13:20.000Z"
    assert rows[3].detail == "https://hudsonandivy.example/sale?utm_source=attentive"
    assert rows[4].detail == "STOP"
    with sqlite3.connect(audit_db) as conn:  # stored as given; only the query masks
        assert conn.execute("SELECT DISTINCT phone FROM sms_audit").fetchall() == [(PHONE,)]


async def test_a_redelivery_never_doubles_a_row_even_after_a_restart(audit_db: Path) -> None:
    env = {"SMS_AUDIT_DB": str(audit_db)}
    event = sms("sms.sent")
    async with started(build_audit(env)) as harness:
        first = await harness.deliver(event)
        again = await harness.deliver(event)  # skipped by the worker's idempotency window
    async with started(build_audit(env)) as restarted:  # a new process remembers nothing
        after_restart = await restarted.deliver(event)

    assert (first, again, after_restart) == (Handled(), Skipped("duplicate"), Handled())
    assert len(query(audit_db)) == 1  # INSERT OR IGNORE on the message id


async def test_an_sms_type_attentive_adds_later_is_recorded_as_other(audit_db: Path) -> None:
    event = sms("sms.sent")
    event["type"] = "sms.delivered"
    del event["timestamp"]
    async with started(build_audit({"SMS_AUDIT_DB": str(audit_db)})) as harness:
        assert await harness.deliver(event) == Handled()

    (row,) = query(audit_db)
    assert (row.event_type, row.activity) == ("sms.delivered", "other")
    assert row.occurred_at.endswith("Z") and row.occurred_at > "2024"  # recorded "now"


async def test_the_audit_log_refuses_updates_and_deletes(audit_db: Path) -> None:
    async with started(build_audit({"SMS_AUDIT_DB": str(audit_db)})) as harness:
        await harness.deliver(sms("sms.sent"))

    with sqlite3.connect(audit_db) as conn:
        for statement in ("UPDATE sms_audit SET phone = 'x'", "DELETE FROM sms_audit"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)
    assert len(query(audit_db)) == 1


async def test_an_audit_db_that_cannot_be_opened_stops_the_start_up(tmp_path: Path) -> None:
    worker = build_audit({"SMS_AUDIT_DB": str(tmp_path / "missing-dir" / "audit.db")})

    with pytest.raises(WorkerConfigError, match=r"SMS_AUDIT_DB=.*cannot open"):
        await worker.on_startup[0]()


@pytest.fixture
async def audit_of_two_subscribers(audit_db: Path) -> Path:
    """Alice (+15551230001, id 1) at T0 and T0+2h; Bob (+447700900123, id 2) at T0+1h."""
    async with started(build_audit({"SMS_AUDIT_DB": str(audit_db)})) as harness:
        for event in (
            sms("sms.subscribed", at=T0, phone="+15551230001", external_id=1),
            sms("sms.subscribed", at=T0 + HOUR, phone="+447700900123", external_id=2),
            sms("sms.message_link_click", at=T0 + 2 * HOUR, phone="+15551230001", external_id=1),
        ):
            assert await harness.deliver(event) == Handled()
    return audit_db


def who(rows: list[AuditRow]) -> list[tuple[str | None, str]]:
    return [(r.subscriber_id, r.activity) for r in rows]


def test_the_query_filters_by_phone_subscriber_and_time(audit_of_two_subscribers: Path) -> None:
    db = audit_of_two_subscribers

    assert who(query(db, phone="+15551230001")) == [("1", "subscribed"), ("1", "clicked")]
    assert who(query(db, subscriber="2")) == [("2", "subscribed")]
    assert who(query(db, since="2023-11-14T23:00:00Z")) == [("2", "subscribed"), ("1", "clicked")]
    assert who(query(db, until="2023-11-14T23:13:20Z")) == [("1", "subscribed")]  # exclusive
    assert who(query(db, phone="+15551230001", since="2023-11-14T23:00")) == [("1", "clicked")]
    assert query(db, phone="+10000000000") == []


def test_the_query_masks_every_phone_number(audit_of_two_subscribers: Path) -> None:
    rows = query(audit_of_two_subscribers)

    assert [r.phone for r in rows] == ["+1******0001", "+4*******0123", "+1******0001"]


@pytest.mark.parametrize("as_json", [[], ["--json"]])
def test_the_query_command_never_prints_a_full_phone_number(
    audit_of_two_subscribers: Path, as_json: list[str]
) -> None:
    out, err = io.StringIO(), io.StringIO()

    code = main(
        ["query", "--db", str(audit_of_two_subscribers), "--phone", "+15551230001", *as_json],
        stdout=out,
        stderr=err,
    )

    printed = out.getvalue()
    assert code == 0 and err.getvalue() == ""
    assert printed.count("+1******0001") == 2
    assert "+15551230001" not in printed and "5551230001" not in printed
    assert "447700900123" not in printed  # Bob is filtered out, and masked anyway


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--since", "2024-13-01"], "--since '2024-13-01' is not an ISO 8601 date or time"),
        (["--until", "yesterday"], "--until 'yesterday' is not an ISO 8601 date or time"),
        (["--since", "2024-05-02", "--until", "2024-05-01"], "is not before --until"),
        (["--phone", "+1555", "--subscriber", "1"], "not allowed with argument --phone"),
        (["--limit", "3"], "unrecognized arguments: --limit 3"),
    ],
)
def test_the_query_command_reports_bad_arguments_on_one_line_with_exit_2(
    audit_of_two_subscribers: Path, args: list[str], complaint: str
) -> None:
    out, err = io.StringIO(), io.StringIO()

    code = main(["query", "--db", str(audit_of_two_subscribers), *args], stdout=out, stderr=err)

    assert code == 2
    assert out.getvalue() == ""
    assert err.getvalue().count("\n") == 1
    assert complaint in err.getvalue()


def test_the_query_command_does_not_create_a_missing_database(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    err = io.StringIO()

    code = main(["query", "--db", str(missing)], stdout=io.StringIO(), stderr=err)

    assert code == 2
    assert f"no audit database at {missing}" in err.getvalue()
    assert not missing.exists()


def test_the_query_command_reads_the_database_from_sms_audit_db(
    audit_of_two_subscribers: Path,
) -> None:
    out = io.StringIO()

    code = main(
        ["query", "--subscriber", "2"],
        env={"SMS_AUDIT_DB": str(audit_of_two_subscribers)},
        stdout=out,
    )

    assert code == 0
    assert "+4*******0123" in out.getvalue()


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("+15555555555", "+1******5555"),
        ("+447700900123", "+4*******0123"),
        ("(555) 123-4567", "(5********4567"),
        ("+1555123", "********"),  # fewer than 10 digits: all hidden
        ("", ""),
    ],
)
def test_a_phone_number_is_masked_to_its_first_2_and_last_4_characters(
    phone: str, masked: str
) -> None:
    assert mask_phone(phone) == masked


# --- email-engagement -----------------------------------------------------------------------


def engagement(worker: Worker, company: str, kind: str) -> float | None:
    return worker.registry.get_sample_value(
        "attentive_email_engagement_total", {"company": company, "kind": kind}
    )


async def test_email_events_are_counted_per_company_and_kind() -> None:
    worker = build_engagement({})
    harness = WorkerHarness(worker)
    for event_type, company, at in [
        ("email.sent", "acme", T0),
        ("email.sent", "acme", T0 + 1),
        ("email.opened", "acme", T0),
        ("email.message_link_click", "acme", T0),
        ("email.subscribed", "acme", T0),
        ("email.unsubscribed", "globex", T0),
    ]:
        assert await harness.deliver(example_payload(event_type, company, timestamp_ms=at)) == (
            Handled()
        )

    assert engagement(worker, "acme", "sent") == 2.0
    assert engagement(worker, "acme", "opened") == 1.0
    assert engagement(worker, "acme", "clicked") == 1.0
    assert engagement(worker, "acme", "subscribed") == 1.0
    assert engagement(worker, "acme", "unsubscribed") is None
    assert engagement(worker, "globex", "unsubscribed") == 1.0
    assert engagement(worker, "globex", "sent") is None


async def test_an_email_type_attentive_adds_later_counts_as_other() -> None:
    worker = build_engagement({})
    event = example_payload("email.sent", "acme", timestamp_ms=T0)
    event["type"] = "email.bounced"

    assert await WorkerHarness(worker).deliver(event) == Handled()
    assert engagement(worker, "acme", "other") == 1.0


async def test_a_redelivered_email_event_is_counted_once() -> None:
    worker = build_engagement({})
    harness = WorkerHarness(worker)
    event = example_payload("email.opened", "acme", timestamp_ms=T0)

    outcomes = [await harness.deliver(event), await harness.deliver(event)]

    assert outcomes == [Handled(), Skipped("duplicate")]
    assert engagement(worker, "acme", "opened") == 1.0


async def test_the_counts_are_in_what_metrics_serves() -> None:
    worker = build_engagement({})
    await WorkerHarness(worker).deliver(example_payload("email.opened", "acme", timestamp_ms=T0))

    served = generate_latest(worker.registry).decode()

    assert 'attentive_email_engagement_total{company="acme",kind="opened"} 1.0' in served


async def test_email_engagement_claims_only_email_events() -> None:
    worker = build_engagement({})

    outcome = await WorkerHarness(worker).deliver("sms.sent")

    assert [str(c.pattern) for c in worker.claims] == ["email.*"]
    assert isinstance(outcome, DeadLetter) and outcome.reason == "no-handler"


# --- attribute-forwarder --------------------------------------------------------------------


@dataclass
class Target:
    """An HTTP endpoint on 127.0.0.1 that answers ``status`` and records every request."""

    server: TestServer
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    hang: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return str(self.server.make_url("/attributes"))


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    async def receive(request: web.Request) -> web.Response:
        found.requests.append((dict(request.headers), await request.read()))
        if found.hang is not None:
            await asyncio.wait_for(found.hang.wait(), 10)
        return web.Response(status=found.status, text="nope", headers=found.headers)

    app = web.Application()
    app.router.add_post("/attributes", receive)
    found = Target(TestServer(app, host="127.0.0.1", port=0))
    await found.server.start_server()
    yield found
    if found.hang is not None:
        found.hang.set()
    await found.server.close()


def forwarder_env(url: str, **extra: str) -> dict[str, str]:
    return {"ATTRIBUTE_FORWARDER_URL": url, "ATTRIBUTE_FORWARDER_TIMEOUT": "5", **extra}


ATTRIBUTE = example_payload("custom_attribute.set", "acme", timestamp_ms=T0)


ATTRIBUTE_ID = message_id(orjson.dumps(ATTRIBUTE))


async def test_an_attribute_is_posted_with_an_idempotency_key_and_no_contact(
    target: Target,
) -> None:
    async with started(build_forwarder(forwarder_env(target.url))) as harness:
        outcome = await harness.deliver(ATTRIBUTE)

    assert outcome == Handled()
    ((headers, body),) = target.requests
    assert orjson.loads(body) == {
        "company_id": "acme",
        "subscriber": {"external_id": 16467358},
        "attribute": {"name": "favorite_color", "value": "green"},
        "timestamp": "2023-11-14T22:13:20.000Z",
        "message_id": ATTRIBUTE_ID,
    }
    assert headers["Idempotency-Key"] == ATTRIBUTE_ID
    assert headers["Content-Type"] == "application/json"
    assert b"5555555555" not in body and EMAIL.encode() not in body


async def test_contact_details_are_forwarded_only_when_asked_for(target: Target) -> None:
    env = forwarder_env(target.url, ATTRIBUTE_FORWARDER_INCLUDE_CONTACT="1")
    async with started(build_forwarder(env)) as harness:
        assert await harness.deliver(ATTRIBUTE) == Handled()

    ((_, body),) = target.requests
    assert orjson.loads(body)["subscriber"] == {
        "external_id": 16467358,
        "phone": PHONE,
        "email": EMAIL,
    }


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
async def test_a_server_error_timeout_or_rate_limit_is_retried(target: Target, status: int) -> None:
    target.status = status
    async with started(build_forwarder(forwarder_env(target.url))) as harness:
        outcome = await harness.deliver(ATTRIBUTE)

    assert isinstance(outcome, RetryLater)
    assert outcome.delay_ms == 5_000
    assert isinstance(outcome.error, ForwardFailed)
    assert f"answered {status}" in str(outcome.error)


async def test_a_retry_after_asks_for_a_tier_at_least_that_long(target: Target) -> None:
    target.status, target.headers = 429, {"Retry-After": "120"}
    async with started(build_forwarder(forwarder_env(target.url))) as harness:
        outcome = await harness.deliver(ATTRIBUTE)

    assert isinstance(outcome, RetryLater)
    assert outcome.delay_ms == 300_000  # the first default tier of at least 120 s


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_a_client_error_is_dead_lettered_at_once(target: Target, status: int) -> None:
    target.status = status
    async with started(build_forwarder(forwarder_env(target.url))) as harness:
        outcomes = await harness.deliver_until_settled(ATTRIBUTE)

    assert [type(o) for o in outcomes] == [DeadLetter]
    assert isinstance(outcomes[0], DeadLetter) and outcomes[0].reason == "rejected"
    assert len(target.requests) == 1


async def test_every_attempt_carries_the_same_idempotency_key_until_dead_lettered(
    target: Target,
) -> None:
    target.status = 503
    env = forwarder_env(
        target.url,
        ATTRIBUTE_FORWARDER_RETRY_DELAYS="2, 20",
        ATTRIBUTE_FORWARDER_MAX_ATTEMPTS="3",
    )
    worker = build_forwarder(env)
    async with started(worker) as harness:
        outcomes = await harness.deliver_until_settled(ATTRIBUTE)

    assert worker.retry == RetryPolicy(delays=(2.0, 20.0), max_attempts=3)
    assert [getattr(o, "delay_ms", None) for o in outcomes[:-1]] == [2_000, 20_000]
    assert isinstance(outcomes[-1], DeadLetter) and outcomes[-1].reason == "exhausted"
    assert [h["Idempotency-Key"] for h, _ in target.requests] == [ATTRIBUTE_ID] * 3


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_a_refused_connection_is_retried() -> None:
    url = f"http://127.0.0.1:{unused_port()}/attributes"  # nothing listens there
    async with started(build_forwarder(forwarder_env(url))) as harness:
        outcome = await harness.deliver(ATTRIBUTE)

    assert isinstance(outcome, RetryLater)
    assert isinstance(outcome.error, ForwardFailed)
    assert "failed" in str(outcome.error)


async def test_a_target_slower_than_the_timeout_is_retried(target: Target) -> None:
    target.hang = asyncio.Event()  # the target never answers (until the test ends)
    env = forwarder_env(target.url, ATTRIBUTE_FORWARDER_TIMEOUT="0.2")
    async with started(build_forwarder(env)) as harness:
        outcome = await asyncio.wait_for(harness.deliver(ATTRIBUTE), 5)

    assert isinstance(outcome, RetryLater)
    assert "timed out after 0.2 s" in str(outcome.error)


async def test_an_attribute_without_a_name_is_dead_lettered_unsent(target: Target) -> None:
    event = dict(ATTRIBUTE, user_property={"value": "green"})
    async with started(build_forwarder(forwarder_env(target.url))) as harness:
        outcome = await harness.deliver(event)

    assert isinstance(outcome, DeadLetter) and outcome.reason == "rejected"
    assert target.requests == []


async def test_the_forwarder_claims_only_custom_attributes() -> None:
    worker = build_forwarder(forwarder_env("http://127.0.0.1:9/attributes"))

    assert [str(c.pattern) for c in worker.claims] == ["custom_attribute.set"]
    assert worker.app == "attribute-forwarder"


def test_without_a_url_the_forwarder_refuses_to_build() -> None:
    with pytest.raises(WorkerConfigError) as refused:
        build_forwarder({})

    message = str(refused.value)
    assert "ATTRIBUTE_FORWARDER_URL is required" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ({"ATTRIBUTE_FORWARDER_URL": "ftp://example.com/x"}, "must be an http(s) URL"),
        ({"ATTRIBUTE_FORWARDER_TIMEOUT": "soon"}, "ATTRIBUTE_FORWARDER_TIMEOUT must be a number"),
        ({"ATTRIBUTE_FORWARDER_TIMEOUT": "0"}, "ATTRIBUTE_FORWARDER_TIMEOUT must be positive"),
        ({"ATTRIBUTE_FORWARDER_RETRY_DELAYS": "5,x"}, "comma-separated seconds"),
        ({"ATTRIBUTE_FORWARDER_RETRY_DELAYS": "30,5"}, "positive and ascending"),
        ({"ATTRIBUTE_FORWARDER_MAX_ATTEMPTS": "0"}, "max_attempts must be at least 1"),
        ({"ATTRIBUTE_FORWARDER_INCLUDE_CONTACT": "maybe"}, "must be 1 or 0"),
    ],
)
def test_a_misconfigured_forwarder_refuses_to_build(extra: dict[str, str], complaint: str) -> None:
    with pytest.raises(WorkerConfigError, match=re.escape(complaint)):
        build_forwarder({**forwarder_env("http://127.0.0.1:9/a"), **extra})


def test_credentials_in_the_url_never_reach_an_error_message() -> None:
    with pytest.raises(WorkerConfigError) as refused:
        build_forwarder(forwarder_env("ftp://user:secret@example.com/x?token=abc"))

    assert "secret" not in str(refused.value) and "abc" not in str(refused.value)


# --- loading them as `attentive-router worker MODULE:worker` does ---------------------------


def test_each_worker_loads_by_its_module_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import consumers.attribute_forwarder as forwarder_module

    monkeypatch.setenv("ATTRIBUTE_FORWARDER_URL", "http://127.0.0.1:9/attributes")
    try:
        loaded = [
            load_worker(f"consumers.{name}:worker").app
            for name in ("sms_audit", "email_engagement", "attribute_forwarder")
        ]
    finally:
        vars(forwarder_module).pop("worker", None)  # built from this test's environment

    assert loaded == ["sms-audit", "email-engagement", "attribute-forwarder"]


def test_the_forwarder_without_a_url_fails_to_load_with_its_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import consumers.attribute_forwarder as forwarder_module

    monkeypatch.delenv("ATTRIBUTE_FORWARDER_URL", raising=False)
    vars(forwarder_module).pop("worker", None)

    with pytest.raises(WorkerConfigError, match="ATTRIBUTE_FORWARDER_URL is required"):
        load_worker("consumers.attribute_forwarder:worker")


# --- sms-audit through the real RabbitMQ ----------------------------------------------------


def rows_or_none(db: Path) -> list[AuditRow]:
    return query(db) if db.exists() else []


@pytest.mark.broker
async def test_sms_audit_records_every_sms_event_posted_to_the_router(
    ingress: Client, start_worker: StartWorker, tmp_path: Path
) -> None:
    # Given the sms-audit worker running against the router, with its log in a fresh file
    db = tmp_path / "audit.db"
    running = await start_worker(build_audit({"SMS_AUDIT_DB": str(db)}))

    # When Attentive posts one event of each SMS type (and an email event it does not claim)
    for i, event_type in enumerate([*SMS_TYPES, "email.opened"]):
        body = example_body(event_type, "acme", timestamp_ms=T0 + i)
        response = await ingress.post(WEBHOOK_PATH, data=body, headers=signed(body))
        assert response.status == 200

    # Then the log has one row per SMS event, in order, and nothing else
    async with asyncio.timeout(15):
        while len(rows_or_none(db)) < 5:
            await asyncio.sleep(0.05)
    running.stop.set()
    await asyncio.wait_for(running.task, 15)
    rows = query(db)
    assert [r.event_type for r in rows] == list(SMS_TYPES)
    assert {r.company_id for r in rows} == {"acme"}
