"""The console's claims page: the matrix of who owns what, granting (an overlap refused with the
holder named), releasing, a viewer who can look but not change, and unrouted traffic that
nobody owns standing out. In Debian's Chromium against the real admin app, its claims (bound
at the test's RabbitMQ) and its parked-event store; and at the HTTP level where a browser adds
nothing (a viewer's or a forged change refused, bad input answered with its reason)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pamqp.commands import Basic

from router.claims.model import Claim, ClaimSpec
from router.console.pages.claims import build_matrix
from router.contract.events import EVENT_TYPES
from router.parked.model import parked_event
from router.parked.open import parked_store_from_url
from tests.browser import screenshot
from tests.conftest import AUTH
from tests.console_steps import OPERATOR_TOKEN, VIEWER_TOKEN, Console, log_in
from tests.environment import no_router_environment
from tests.parked_stores import body_of

pytest.importorskip("playwright", reason="playwright is not installed: pip install -e '.[dev]'")
from playwright.async_api import Locator, Page, expect

pytestmark = [pytest.mark.broker, pytest.mark.browser]

SMS_TYPES = [t for t in EVENT_TYPES if t.startswith("sms.")]
OTHER_TYPES = [t for t in EVENT_TYPES if not t.startswith("sms.")]
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


# -- steps ----------------------------------------------------------------------------------


def row(page: Page, event_type: str) -> Locator:
    """The matrix row of ``event_type``."""
    header = page.locator("th code", has_text=re.compile(f"^{re.escape(event_type)}$"))
    return page.locator("table.matrix tbody tr").filter(has=header)


def cell(page: Page, event_type: str, column: int = 0) -> Locator:
    """A matrix cell: column 0 is all companies, then the companies in order."""
    return row(page, event_type).locator("td").nth(column)


async def granted(console: Console, app: str, *events: str, company: str | None = None) -> None:
    """A claim granted through the admin API, as the CLI would."""
    body: dict[str, Any] = {"app": app, "events": list(events), "company": company}
    response = await console.api.post("/admin/claims", json=body, headers=AUTH)
    assert response.status == 201, await response.text()


async def claims_now(console: Console) -> list[dict[str, Any]]:
    response = await console.api.get("/admin/claims", headers=AUTH)
    assert response.status == 200
    claims: list[dict[str, Any]] = (await response.json())["claims"]
    return claims


async def unrouted(console: Console, *event_types: str) -> None:
    """Events parked in unrouted (nobody owned their type), one per type given, as the keeper
    stores them."""
    store = parked_store_from_url(console.settings.database_url.reveal())
    await store.open()
    try:
        await store.add_many(
            [
                parked_event(
                    body_of(event_type),
                    Basic.Properties(message_id=f"u-{uuid.uuid4().hex}", headers={}),
                    place="unrouted",
                    app=None,
                    routing_key=f"{event_type}.c1",
                    seen_at=datetime.now(UTC),
                )
                for event_type in event_types
            ]
        )
    finally:
        await store.close()


async def logged_in_api(console: Console, token: str) -> str:
    """Log the API client in to the console with ``token``; the session's CSRF token."""
    response = await console.api.post("/console/login", data={"token": token})
    assert response.status == 200, await response.text()
    page = await console.api.get("/console/claims")
    assert page.status == 200
    found = _CSRF.search(await page.text())
    assert found is not None
    return found.group(1)


# -- the matrix, as routing decides it --------------------------------------------------------


def _claim(claim_id: int, app: str, pattern: str, company: str | None = None) -> Claim:
    spec = ClaimSpec.parse(app, pattern, company)
    return Claim(spec.app, spec.pattern, spec.company, id=claim_id)


def test_channel_and_wildcard_claims_fill_every_cell_they_cover() -> None:
    """Given sms.* for all companies, * for company c1 and email.sent for company c2
    When the matrix is built
    Then every SMS type's all-companies cell is sms-owner's, c1's column is everything's
    (its own claim beating the inherited one) and c2 owns email.sent only, inheriting SMS."""
    claims = [
        _claim(1, "sms-owner", "sms.*"),
        _claim(2, "everything", "*", "c1"),
        _claim(3, "mailer", "email.sent", "c2"),
    ]
    matrix = build_matrix(claims, {})
    assert matrix.companies == ("c1", "c2")
    cells = {r.event_type: r.cells for r in matrix.rows}
    for event_type in SMS_TYPES:
        everyone, c1, c2 = cells[event_type]
        assert everyone.apps == ("sms-owner",) and not everyone.inherited
        assert c1.apps == ("everything",) and not c1.inherited
        assert c2.apps == ("sms-owner",) and c2.inherited
    assert cells["email.sent"][0].apps == ()
    assert cells["email.sent"][2].apps == ("mailer",)
    assert cells["email.opened"][2].apps == ()
    assert [r.event_type for r in matrix.rows] == list(EVENT_TYPES)


def test_unrouted_traffic_of_an_unowned_type_stands_out() -> None:
    """Given unrouted events of sms.sent (owned for c1 only), of email.sent (owned for all
    companies since) and of an undocumented type
    When the matrix is built
    Then sms.sent and the new type stand out, the new type as a row of its own; email.sent
    does not."""
    claims = [_claim(1, "crm-sync", "sms.sent", "c1"), _claim(2, "mailer", "email.*")]
    matrix = build_matrix(claims, {"sms.sent": 12, "email.sent": 3, "sms.future_thing": 1})
    assert [r.event_type for r in matrix.unclaimed] == ["sms.sent", "sms.future_thing"]
    future = matrix.rows[-1]
    assert future.event_type == "sms.future_thing" and not future.known
    assert matrix.unclaimed[0].owned_for == (0,)


# -- in the browser -------------------------------------------------------------------------


async def test_an_operator_grants_is_refused_an_overlap_and_releases(
    console: Console, browser_page: Page
) -> None:
    """Given an operator on the claims page of a router with no claims
    When they grant crm-sync sms.*
    Then every SMS type's all-companies cell names crm-sync, linked to its dead letters
    When they grant sms-audit sms.sent
    Then nothing is granted and the page names crm-sync's claim as what stands in the way
    When they release crm-sync's claim, confirming on the next page
    Then the matrix is empty again and the claims list says what to do."""
    page = browser_page
    await log_in(page, console, as_="oncall")
    await page.goto(console.page("/console/claims"))
    await expect(page.get_by_text("No claims yet")).to_be_visible()

    await page.get_by_label("Application").fill("crm-sync")
    await page.get_by_label("Other patterns").fill("sms.*")
    await page.get_by_role("button", name="Grant", exact=True).click()
    await page.wait_for_url(re.compile(r"/console/claims\?done=granted&id=\d+$"))
    await expect(page.locator("p.ok")).to_contain_text("crm-sync sms.* for all companies")
    for event_type in SMS_TYPES:
        await expect(cell(page, event_type)).to_have_text("crm-sync")
    link = cell(page, "sms.sent").get_by_role("link", name="crm-sync")
    await expect(link).to_have_attribute("href", "/console/parked?place=dlq&app=crm-sync")
    for event_type in OTHER_TYPES:
        await expect(cell(page, event_type)).to_have_class("nobody")
    [held] = await claims_now(console)

    await page.get_by_label("Application").fill("sms-audit")
    await page.get_by_label("sms.sent", exact=True).check()
    await page.get_by_role("button", name="Grant", exact=True).click()
    await expect(page.get_by_role("alert")).to_contain_text(
        f"refused: sms-audit sms.sent conflicts with claim {held['id']} of application "
        "'crm-sync' (sms.*, all companies)"
    )
    await expect(page.get_by_label("Application")).to_have_value("sms-audit")
    await expect(page.get_by_label("sms.sent", exact=True)).to_be_checked()
    assert await claims_now(console) == [held]

    await page.get_by_role("link", name=f"Release claim {held['id']}:").click()
    await expect(page.get_by_role("heading", name=f"Release claim {held['id']}?")).to_be_visible()
    await page.get_by_role("button", name=f"Release claim {held['id']}").click()
    await page.wait_for_url(re.compile(r"/console/claims\?done=released&id=\d+$"))
    await expect(page.locator("p.ok")).to_have_text(f"Released claim {held['id']}.")
    for event_type in SMS_TYPES:
        await expect(cell(page, event_type)).to_have_class("nobody")
    await expect(page.get_by_text("No claims yet")).to_be_visible()
    assert await claims_now(console) == []


async def test_a_viewer_sees_the_matrix_but_no_controls(
    console: Console, browser_page: Page
) -> None:
    """Given crm-sync owns sms.* for all companies
    When a viewer opens the claims page
    Then they see crm-sync in the matrix and in the claims list, and no Grant form and no
    Release button or link."""
    await granted(console, "crm-sync", "sms.*")
    page = browser_page
    await log_in(page, console, as_="grafana")
    await page.goto(console.page("/console/claims"))
    await expect(cell(page, "sms.subscribed")).to_have_text("crm-sync")
    await expect(page.get_by_role("cell", name="sms.*")).to_be_visible()
    await expect(page.get_by_role("heading", name="Grant a claim")).to_have_count(0)
    await expect(page.get_by_role("button", name="Grant")).to_have_count(0)
    await expect(page.get_by_label("Application")).to_have_count(0)
    await expect(page.get_by_role("link", name=re.compile("^Release"))).to_have_count(0)
    await expect(page.get_by_role("button", name=re.compile("^Release"))).to_have_count(0)


async def test_unclaimed_traffic_stands_out(console: Console, browser_page: Page) -> None:
    """Given claims for SMS (all companies), email.sent of one company and
    custom_attribute.set of another, and unrouted events: twelve of email.opened, two of
    sms.future_thing (a type Attentive has not documented) and one of sms.sent (parked before
    sms.* was claimed)
    When an operator opens the claims page
    Then a line says email.opened has traffic but no owner, with its twelve events; the new
    type is a row of its own, owned by the SMS claim; sms.sent does not stand out
    And at 800 px wide the page itself does not scroll sideways."""
    await granted(console, "crm-sync", "sms.*")
    await granted(console, "mailer", "email.sent", company="MDc6Q29tcGFueTU")
    await granted(console, "archive", "custom_attribute.set", company="acme-eu")
    await unrouted(console, *["email.opened"] * 12, "sms.future_thing", "sms.future_thing")
    await unrouted(console, "sms.sent")
    page = browser_page
    await log_in(page, console, as_="oncall")
    await page.goto(console.page("/console/claims"))

    warning = page.locator("div.warn")
    await expect(warning).to_have_text(
        re.compile(r"^\s*email\.opened has traffic but no owner: 12 events in unrouted\s*$")
    )
    link = warning.get_by_role("link", name="12 events in unrouted")
    await expect(link).to_have_attribute("href", "/console/parked?place=unrouted&type=email.opened")
    await expect(row(page, "email.opened")).to_have_class("unclaimed")
    await expect(row(page, "email.opened").locator(".badge")).to_have_text("no owner")
    await expect(row(page, "sms.sent")).not_to_have_class("unclaimed")
    await expect(row(page, "sms.future_thing").locator(".badge")).to_have_text("undocumented")
    await expect(cell(page, "sms.future_thing")).to_have_text("crm-sync")
    await expect(cell(page, "sms.future_thing", 3)).to_have_text("2")
    await expect(cell(page, "email.sent", 1)).to_have_text("mailer")
    await expect(cell(page, "custom_attribute.set", 2)).to_have_text("archive")
    await expect(cell(page, "custom_attribute.set")).to_have_class("nobody")

    await screenshot(page, "claims")
    await page.set_viewport_size({"width": 800, "height": 800})
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0


# -- at the HTTP level ----------------------------------------------------------------------


async def test_a_viewers_grant_and_release_are_refused(console: Console) -> None:
    """Given crm-sync's claim and a viewer's console session (with its CSRF token)
    When the viewer posts a grant, a release, and asks for the release page
    Then each is refused with 403, and the claims are what they were."""
    await granted(console, "crm-sync", "sms.*")
    before = await claims_now(console)
    csrf = await logged_in_api(console, VIEWER_TOKEN)
    claim_id = before[0]["id"]
    grant = await console.api.post(
        "/console/claims", data={"csrf_token": csrf, "app": "thief", "patterns": "*"}
    )
    assert grant.status == 403
    assert "only an operator may grant claims" in await grant.text()
    release = await console.api.post(
        f"/console/claims/{claim_id}/release", data={"csrf_token": csrf}
    )
    assert release.status == 403
    confirm = await console.api.get(f"/console/claims/{claim_id}/release")
    assert confirm.status == 403
    assert await claims_now(console) == before


async def test_a_change_without_the_csrf_token_is_refused(console: Console) -> None:
    """Given an operator's console session
    When a grant and a release are posted without the session's CSRF token
    Then both are refused with 403, and the claims are what they were."""
    await granted(console, "crm-sync", "sms.*")
    before = await claims_now(console)
    await logged_in_api(console, OPERATOR_TOKEN)
    grant = await console.api.post("/console/claims", data={"app": "other", "patterns": "email.*"})
    assert grant.status == 403
    release = await console.api.post(
        f"/console/claims/{before[0]['id']}/release", data={"csrf_token": "forged"}
    )
    assert release.status == 403
    assert await claims_now(console) == before


async def test_a_grant_redirects_so_a_reload_changes_nothing(console: Console) -> None:
    """Given an operator's console session
    When they post a grant
    Then the answer sends the browser back to the page (303), which says what was granted,
    and loading it again grants nothing more
    When the same grant is posted again
    Then the page says the application already holds it."""
    csrf = await logged_in_api(console, OPERATOR_TOKEN)
    form = {"csrf_token": csrf, "app": "crm-sync", "event": "sms.sent", "company": "acme"}
    posted = await console.api.post("/console/claims", data=form, allow_redirects=False)
    assert posted.status == 303
    target = posted.headers["Location"]
    [claim] = await claims_now(console)
    assert target == f"/console/claims?done=granted&id={claim['id']}"
    for _ in range(2):
        page = await console.api.get(target)
        assert page.status == 200
        assert f"claim {claim['id']}, crm-sync <code>sms.sent</code> for company acme" in (
            await page.text()
        )
    assert await claims_now(console) == [claim]
    again = await console.api.post("/console/claims", data=form)
    assert again.status == 200
    assert "already holds" in await again.text()
    assert await claims_now(console) == [claim]


@pytest.mark.parametrize(
    ("form", "reason"),
    [
        ({"patterns": "sms.*"}, "name the application"),
        ({"app": "CRM Sync!", "patterns": "sms.*"}, "invalid application name"),
        ({"app": "crm-sync"}, "choose at least one event type"),
        ({"app": "crm-sync", "patterns": "sms"}, "invalid event pattern"),
        ({"app": "crm-sync", "patterns": "*", "company": "a*b"}, "invalid company id"),
    ],
)
async def test_a_bad_grant_is_answered_with_its_reason(
    console: Console, form: dict[str, str], reason: str
) -> None:
    """Given an operator's console session
    When a grant without an application, with a malformed name, without events, with a
    malformed pattern or company is posted
    Then the answer is a 400 page saying what is wrong, and nothing is granted."""
    csrf = await logged_in_api(console, OPERATOR_TOKEN)
    answer = await console.api.post("/console/claims", data={"csrf_token": csrf, **form})
    assert answer.status == 400
    assert reason in await answer.text()
    assert await claims_now(console) == []


async def test_releasing_a_claim_that_is_gone_is_404(console: Console) -> None:
    """Given an operator's console session and no claims
    When the release of claim 4242 is asked for, or posted
    Then both answers are 404 pages saying there is no such claim."""
    csrf = await logged_in_api(console, OPERATOR_TOKEN)
    asked = await console.api.get("/console/claims/4242/release")
    posted = await console.api.post("/console/claims/4242/release", data={"csrf_token": csrf})
    for answer in (asked, posted):
        assert answer.status == 404
        assert "no claim 4242" in await answer.text()


__all__ = ["no_router_environment"]
