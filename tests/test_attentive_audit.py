"""The audit of the one-application rule at the source: pure logic, then the command.

The command's tests run against the local fake Attentive (``tests/test_attentive_api.py``)
and the router's real admin API (which needs the local RabbitMQ: marked ``broker``).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aio_pika.abc import AbstractRobustConnection

from router.attentive import Webhook
from router.attentive.audit import (
    AuditClaim,
    AuditReport,
    ConflictGroup,
    IdleClaim,
    MisdirectedWebhook,
    SourceConflict,
    UnclaimedType,
    audit,
    compact_events,
    find_source_conflicts,
    group_conflicts,
    subscription_company,
)
from router.claims.model import EventPattern
from router.cli.main import main
from router.contract.events import EVENT_TYPES
from router.contract.names import Names
from tests.conftest import AUTH, Client
from tests.conftest import TOKEN as ADMIN_TOKEN
from tests.test_attentive_api import TOKEN as ATTENTIVE_TOKEN
from tests.test_attentive_api import FakeAttentive, running_fake

A, B = "company-a", "company-b"
ROUTER = "https://hooks.example.com"
SMS = tuple(t for t in EVENT_TYPES if t.startswith("sms."))
EMAIL = tuple(t for t in EVENT_TYPES if t.startswith("email."))


def hook(
    webhook_id: str,
    *events: str,
    company: str | None = A,
    url: str | None = None,
    disabled: bool = False,
) -> Webhook:
    """A webhook; by default posting to the router's subscription URL of its company."""
    if url is None:
        url = f"{ROUTER}/webhooks/attentive" + (f"/{company}" if company else "")
    return Webhook(
        id=webhook_id,
        url=url,
        events=events,
        type="SUBSCRIPTION" if company else "STATIC",
        company_id=company,
        disabled_at="2026-11-20 10:00:00" if disabled else None,
    )


def claim(app: str, pattern: str, company: str | None = None, claim_id: int = 1) -> AuditClaim:
    return AuditClaim(app, EventPattern.parse(pattern), company, claim_id)


# -- conflicts at the source ------------------------------------------------------------------


def test_no_webhooks_no_findings() -> None:
    assert find_source_conflicts([]) == ()
    report = audit([], [])
    assert report == AuditReport(conflicts=())
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 0


def test_two_enabled_webhooks_of_a_company_conflict_on_the_types_they_share() -> None:
    webhooks = [hook("w1", "sms.sent", "email.opened"), hook("w2", "sms.sent", "sms.subscribed")]
    assert find_source_conflicts(webhooks) == (SourceConflict(A, "sms.sent", ("w1", "w2")),)


def test_a_disabled_webhook_conflicts_with_nothing() -> None:
    webhooks = [hook("w1", "sms.sent"), hook("w2", "sms.sent", disabled=True)]
    assert find_source_conflicts(webhooks) == ()
    assert audit(webhooks, None).disabled == ("w2",)


def test_webhooks_of_different_companies_do_not_conflict() -> None:
    assert find_source_conflicts([hook("w1", *SMS), hook("w2", *SMS, company=B)]) == ()


def test_a_universal_webhook_counts_for_every_company() -> None:
    webhooks = [
        hook("w1", "sms.sent", company=A),
        hook("w2", "email.sent", company=B),
        hook("s1", "sms.sent", "email.sent", company=None),
    ]
    assert find_source_conflicts(webhooks) == (
        SourceConflict(A, "sms.sent", ("w1", "s1")),
        SourceConflict(B, "email.sent", ("w2", "s1")),
    )


def test_universal_webhooks_clashing_among_themselves_are_reported_once() -> None:
    webhooks = [
        hook("s1", "sms.sent", company=None),
        hook("s2", "sms.sent", company=None, url="https://other.example.com/hook"),
        hook("w1", "email.sent", company=A),  # a company that does not add to the clash
        hook("w2", "sms.sent", company=B),  # a company that does
    ]
    assert find_source_conflicts(webhooks) == (
        SourceConflict(None, "sms.sent", ("s1", "s2")),
        SourceConflict(B, "sms.sent", ("w2", "s1", "s2")),
    )


def test_a_type_listed_twice_by_one_webhook_is_not_a_conflict() -> None:
    assert find_source_conflicts([hook("w1", "sms.sent", "sms.sent")]) == ()


def test_conflicts_are_ordered_by_company_then_documented_type_order() -> None:
    webhooks = [
        hook("w1", "sms.delivered", "email.opened", "sms.subscribed", company=B),
        hook("w2", "sms.delivered", "email.opened", "sms.subscribed", company=B),
        hook("w3", "custom_attribute.set", company=A),
        hook("w4", "custom_attribute.set", company=A),
    ]
    found = [(c.company, c.event_type) for c in find_source_conflicts(webhooks)]
    assert found == [
        (A, "custom_attribute.set"),
        (B, "sms.subscribed"),
        (B, "email.opened"),
        (B, "sms.delivered"),  # undocumented: last
    ]


def test_conflicts_between_the_same_webhooks_are_grouped_for_reading() -> None:
    webhooks = [
        hook("w1", "sms.sent", "sms.subscribed", "email.opened"),
        hook("w2", "sms.sent", "sms.subscribed"),
        hook("w3", "email.opened"),
    ]
    conflicts = find_source_conflicts(webhooks)
    assert len(conflicts) == 3
    groups = group_conflicts(conflicts)
    assert groups == (
        ConflictGroup(A, ("w1", "w2"), ("sms.subscribed", "sms.sent")),
        ConflictGroup(A, ("w1", "w3"), ("email.opened",)),
    )
    assert groups[0].describe() == (
        f"company {A}: sms.subscribed, sms.sent go to 2 enabled webhooks (w1, w2)"
    )
    assert (
        conflicts[2].describe() == f"company {A}: email.opened goes to 2 enabled webhooks (w1, w3)"
    )


def test_webhooks_posting_elsewhere_still_count_for_conflicts() -> None:
    webhooks = [hook("w1", "sms.sent"), hook("x1", "sms.sent", url="https://crm.example.com/in")]
    report = audit(webhooks, [claim("sms-audit", "sms.*")], router_base_url=ROUTER)
    assert report.conflicts == (SourceConflict(A, "sms.sent", ("w1", "x1")),)
    assert report.elsewhere == ("x1",)
    assert report.exit_code() == 1


# -- disagreements with the claims -----------------------------------------------------------


def test_a_type_sent_for_a_company_that_nobody_claims_is_a_warning() -> None:
    report = audit([hook("w1", "sms.sent", "email.opened")], [claim("sms-audit", "sms.*")])
    assert report.unclaimed == (UnclaimedType(A, "email.opened", ("w1",)),)
    assert report.conflicts == () and report.exit_code() == 0
    assert report.exit_code(strict=True) == 1


@pytest.mark.parametrize(
    "claims",
    [
        [claim("app", "sms.sent", A)],
        [claim("app", "sms.*")],
        [claim("app", "*", A)],
        [claim("other", "sms.sent", B), claim("app", "sms.*", A)],
    ],
    ids=["exact-for-the-company", "channel-for-all", "everything-for-the-company", "one-of-two"],
)
def test_a_claim_covering_the_type_and_company_leaves_nothing_unclaimed(
    claims: list[AuditClaim],
) -> None:
    assert audit([hook("w1", "sms.sent")], claims).unclaimed == ()


def test_a_claim_for_another_company_does_not_cover() -> None:
    report = audit([hook("w1", "sms.sent")], [claim("app", "sms.*", B)])
    assert report.unclaimed == (UnclaimedType(A, "sms.sent", ("w1",)),)
    assert report.idle_claims == (IdleClaim(claim("app", "sms.*", B)),)


def test_company_ids_are_compared_as_the_router_routes_them() -> None:
    """'a.b' and 'a_b' are one company to the registry (the routing key word)."""
    report = audit([hook("w1", "sms.sent", company="a_b")], [claim("app", "sms.sent", "a.b")])
    assert report.unclaimed == () and report.idle_claims == ()


def test_a_universal_webhook_needs_a_claim_for_all_companies() -> None:
    webhooks = [hook("s1", "sms.sent", "email.sent", company=None)]
    claims = [claim("app", "sms.*"), claim("mail", "email.sent", A), claim("mail", "email.*", B)]
    report = audit(webhooks, claims)
    assert report.unclaimed == (UnclaimedType(None, "email.sent", ("s1",), (A, B)),)
    assert "claimed only for company company-a, company-b" in report.unclaimed[0].describe()
    assert report.idle_claims == ()  # the universal webhook sends for A and B too


def test_disabled_webhooks_send_nothing_to_claim() -> None:
    report = audit([hook("w1", "sms.sent", disabled=True)], [claim("app", "sms.sent")])
    assert report.unclaimed == ()
    assert report.idle_claims == (IdleClaim(claim("app", "sms.sent")),)


@pytest.mark.parametrize(
    ("the_claim", "idle"),
    [
        (claim("app", "sms.sent"), False),  # all companies: A's webhook sends it
        (claim("app", "sms.sent", A), False),
        (claim("app", "sms.*", A), False),  # a wildcard needs only one of its types
        (claim("app", "*", A), False),
        (claim("app", "sms.subscribed", A), True),
        (claim("app", "email.*"), True),
        (claim("app", "sms.sent", B), True),  # B gets nothing
        (claim("app", "custom_attribute.set", B), False),  # the universal webhook sends it
    ],
)
def test_claims_matching_nothing_attentive_sends_are_idle(
    the_claim: AuditClaim, idle: bool
) -> None:
    webhooks = [hook("w1", "sms.sent"), hook("s1", "custom_attribute.set", company=None)]
    report = audit(webhooks, [the_claim])
    assert report.idle_claims == ((IdleClaim(the_claim),) if idle else ())


def test_only_webhooks_posting_to_the_router_are_compared_with_claims() -> None:
    webhooks = [
        hook("w1", "sms.sent"),
        hook("x1", "email.opened", url="https://crm.example.com/in"),
        hook("x2", "email.sent", url=f"{ROUTER}/webhooks/attentive-old/{A}"),
    ]
    claims = [claim("sms-audit", "sms.sent"), claim("crm", "email.opened", A)]
    report = audit(webhooks, claims, router_base_url=ROUTER + "/")
    assert report.unclaimed == ()
    assert report.idle_claims == (IdleClaim(claims[1]),)  # email.opened goes elsewhere
    assert report.elsewhere == ("x1", "x2")
    assert audit(webhooks, claims).elsewhere == ()  # without a base: all assumed the router's
    assert [u.event_type for u in audit(webhooks, claims).unclaimed] == ["email.sent"]


def test_without_claims_only_the_source_is_audited() -> None:
    report = audit([hook("w1", "sms.sent")], None)
    assert not report.claims_compared
    assert report.unclaimed == () and report.idle_claims == ()


# -- misdirected webhooks --------------------------------------------------------------------


def test_a_webhook_posting_to_another_companys_router_url_is_misdirected() -> None:
    webhooks = [
        hook("w1", "sms.sent", company=A, url=f"{ROUTER}/webhooks/attentive/{B}"),
        hook("w2", "sms.sent", company=B),  # its own URL: fine
        hook("s1", "email.sent", company=None, url=f"{ROUTER}/webhooks/attentive/{A}"),
        hook("s2", "email.opened", company=None),  # the universal URL: fine
    ]
    report = audit(webhooks, None)
    assert report.misdirected == (
        MisdirectedWebhook("w1", A, B),
        MisdirectedWebhook("s1", None, A),
    )
    assert "the router refuses them (403)" in report.misdirected[0].describe()
    assert "every company's events" in report.misdirected[1].describe()
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 1


def test_the_subscription_company_is_read_from_the_url() -> None:
    assert subscription_company(f"{ROUTER}/webhooks/attentive/MDc6%2F") == "MDc6/"
    assert subscription_company(f"{ROUTER}/prefix/webhooks/attentive/c1/") == "c1"
    assert subscription_company(f"{ROUTER}/webhooks/attentive") is None
    assert subscription_company(f"{ROUTER}/webhooks/attentive/") is None
    assert subscription_company("https://crm.example.com/hooks/c1") is None


# -- small pieces ----------------------------------------------------------------------------


def test_events_are_compacted_for_reading() -> None:
    assert compact_events(EVENT_TYPES) == ["*"]
    assert compact_events([*EVENT_TYPES, "sms.delivered"]) == ["*", "sms.delivered"]
    assert compact_events([*reversed(SMS), "email.opened"]) == ["sms.*", "email.opened"]
    assert compact_events(["custom_attribute.set"]) == ["custom_attribute.set"]
    assert compact_events([*EMAIL[:-1]]) == list(EMAIL[:-1])
    assert compact_events([]) == []


def test_claims_are_read_from_the_admin_api() -> None:
    read = AuditClaim.from_admin(
        {"id": 7, "app": "sms-audit", "event": "sms.*", "company": None, "created_at": "x"}
    )
    assert read == AuditClaim("sms-audit", EventPattern.parse("sms.*"), None, 7)
    assert read.describe() == "claim 7 of sms-audit (sms.*, every company)"
    assert AuditClaim.from_admin({"app": "a", "event": "*", "company": "c"}).company == "c"


def test_the_report_as_json() -> None:
    webhooks = [hook("w1", "sms.sent"), hook("w2", "sms.sent", "email.sent", disabled=True)]
    document = audit(webhooks, [claim("mail", "email.*", B, 3)]).to_json()
    assert document == {
        "conflicts": [],
        "unclaimed": [
            {"company": A, "event": "sms.sent", "webhooks": ["w1"], "claimed_for": []},
        ],
        "idle_claims": [{"id": 3, "app": "mail", "event": "email.*", "company": B}],
        "misdirected": [],
        "disabled": ["w2"],
        "elsewhere": [],
        "claims_compared": True,
    }


# -- the command, against the fake Attentive and the real admin API ---------------------------


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("ATTENTIVE_", "ROUTER_")):
            monkeypatch.delenv(name)


@pytest.fixture
async def attentive(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeAttentive]:
    async with running_fake() as fake:
        monkeypatch.setenv("ATTENTIVE_API_TOKEN", ATTENTIVE_TOKEN)
        monkeypatch.setenv("ATTENTIVE_API_URL", fake.url)
        monkeypatch.setenv("ATTENTIVE_API_RETRY_DELAY", "0")
        yield fake


@pytest.fixture
async def claimed(
    admin: Client, amqp: AbstractRobustConnection, names: Names
) -> AsyncIterator[list[str]]:
    """Claims granted through the admin API; the application queues they made are deleted."""
    apps: list[str] = []

    async def grant(app: str, events: list[str], company: str | None = None) -> None:
        body: dict[str, Any] = {"app": app, "events": events}
        if company is not None:
            body["company"] = company
        response = await admin.post("/admin/claims", json=body, headers=AUTH)
        assert response.status == 201, await response.text()
        apps.append(app)

    await grant("sms-audit", ["sms.*"])
    await grant("email-engagement", ["email.*"], company=A)
    await grant("growth", ["email.opened"], company=B)  # B gets nothing: idle
    yield apps
    channel = await amqp.channel()
    for app in set(apps):
        await channel.queue_delete(names.app_queue(app))


def _admin_args(admin: Client) -> list[str]:
    return ["--admin-url", f"http://127.0.0.1:{admin.server.port}", "--token", ADMIN_TOKEN]


async def run_audit(*args: str) -> int:
    return await asyncio.to_thread(main, ["attentive", "audit", *args])


def _report_lines(out: str) -> list[str]:
    # the in-process admin API logs to stdout too: keep the report's own lines
    return [line for line in out.splitlines() if not line.startswith(("{", "20"))]


@pytest.mark.broker
async def test_the_audit_warns_about_disagreements_and_fails_only_when_strict(
    attentive: FakeAttentive,
    admin: Client,
    claimed: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    router_hook = attentive.add([*SMS, "email.sent", "custom_attribute.set"], company_id=A)
    attentive.add(["sms.sent"], company_id=B, disabled=True)

    assert await run_audit(*_admin_args(admin)) == 0
    lines = _report_lines(capsys.readouterr().out)
    assert lines[0] == "Attentive: 2 webhooks (1 enabled, 1 disabled); router: 3 claims"
    assert lines[1:] == [
        f"warning   company {A}: Attentive sends custom_attribute.set (webhook {router_hook}) "
        "but no application claims it: those events go to attentive.unrouted",
        f"warning   claim 3 of growth (email.opened, company {B}): "
        "Attentive sends the router nothing it matches",
        "0 conflicts, 2 warnings",
    ]
    assert await run_audit(*_admin_args(admin), "--strict") == 1

    assert await run_audit(*_admin_args(admin), "--json") == 0
    out = capsys.readouterr().out
    report = json.loads(next(line for line in out.splitlines() if '"conflicts"' in line))
    assert report["conflicts"] == [] and report["exit_code"] == 0
    assert [u["event"] for u in report["unclaimed"]] == ["custom_attribute.set"]
    assert [c["app"] for c in report["idle_claims"]] == ["growth"]
    assert sorted(c["app"] for c in report["claims"]) == sorted(claimed)


@pytest.mark.broker
async def test_the_audit_fails_when_two_enabled_webhooks_get_one_type(
    attentive: FakeAttentive,
    admin: Client,
    claimed: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    ours = attentive.add([*SMS, *EMAIL], company_id=A)
    theirs = attentive.add(["sms.sent"], company_id=A, url="https://crm.example.com/attentive")

    assert await run_audit(*_admin_args(admin), "--router-base-url", ROUTER) == 1
    lines = _report_lines(capsys.readouterr().out)
    assert f"CONFLICT  company {A}: sms.sent goes to 2 enabled webhooks ({ours}, {theirs})" in lines
    assert f"          {theirs}  company {A}  https://crm.example.com/attentive" in lines
    assert any(line.startswith("note      1 enabled webhook posts elsewhere") for line in lines)
    assert lines[-1] == "1 conflict, 1 warning"  # growth's idle claim


async def test_a_source_only_audit_needs_no_admin_api(
    attentive: FakeAttentive, capsys: pytest.CaptureFixture[str]
) -> None:
    attentive.add(["sms.sent"], company_id=None, kind="STATIC")
    attentive.add(["sms.sent"], company_id=None, kind="STATIC", url="https://x.example.com/h")
    assert await run_audit("--source-only", "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["claims"] is None and report["claims_compared"] is False
    assert report["conflicts"] == [
        {"company": None, "event": "sms.sent", "webhooks": ["wh_1", "wh_2"]}
    ]


async def test_the_audit_without_an_admin_token_is_a_usage_error(
    attentive: FakeAttentive, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_audit() == 2
    err = capsys.readouterr().err
    assert err == "attentive-router: no admin token: set ROUTER_ADMIN_TOKEN\n"
    assert attentive.requests == []


@pytest.mark.broker
async def test_a_refused_admin_token_fails_the_audit(
    attentive: FakeAttentive, admin: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{admin.server.port}"
    assert await run_audit("--admin-url", url, "--token", "wrong") == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "attentive-router: admin API answered 401: unauthorized"


async def test_the_audit_refuses_a_plain_http_router_base_url(
    attentive: FakeAttentive, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_audit("--source-only", "--router-base-url", "http://hooks.example.com") == 2
    assert "--router-base-url must be an https:// URL" in capsys.readouterr().err
    assert attentive.requests == []
