"""The console's parked events pages, in a real browser against the real admin app: where
events are parked, a filter reflected in the URL with its facets, pages that follow a cursor,
an entry masked until an operator reveals it (and the reveal audited), a viewer who sees and
may do none of that, and payloads that stay text however hostile."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pamqp.commands import Basic

from router.parked.jobs import AuditAction
from router.parked.model import ParkedEvent, parked_event
from router.parked.open import parked_store_from_url
from router.parked.store import ParkedStore
from tests.browser import screenshot
from tests.console_steps import OPERATOR_TOKEN, VIEWER_TOKEN, Console, log_in
from tests.environment import no_router_environment
from tests.parked_stores import NOW, body_of, dead_letter

pytest.importorskip("playwright", reason="playwright is not installed: pip install -e '.[dev]'")
from playwright.async_api import Page, Request, Route, expect

#: ``no_router_environment``, autouse: no ROUTER_* variable of the shell counts.
__all__ = ["no_router_environment"]

pytestmark = [pytest.mark.broker, pytest.mark.browser]

PHONE = "+1 (555) 123-4567"
EMAIL = "jane.doe@example.com"
HOSTILE = "<script>window.__pwned=1</script>"
CONTACT: dict[str, Any] = {"subscriber": {"phone": PHONE, "email": EMAIL}}
#: The page of the entry ``_dlq("alerts", 1)``.
ENTRY = "/console/parked/dlq/alerts/alerts-001"


@pytest.fixture
async def parked(console: Console) -> AsyncIterator[ParkedStore]:
    """The console's own parked-event store (its database), opened for the test to fill."""
    store = parked_store_from_url(console.settings.database_url.reveal())
    await store.open()
    yield store
    await store.close()


def _dlq(app: str, n: int, *, event_type: str = "sms.subscribed", **extra: Any) -> ParkedEvent:
    """Entry ``n`` of ``app``'s DLQ, parked ``n`` minutes before NOW (so newest first is by
    ``n``), of company c1 or c2 (odd, even)."""
    company = extra.pop("company", f"c{1 + n % 2}")
    error = extra.pop("error", "ValueError: the CRM said no")
    return dead_letter(
        body_of(event_type, company, n=n, **extra),
        app=app,
        message_id=f"{app}-{n:03d}",
        at=NOW - timedelta(minutes=n),
        error=error,
    )


def _unrouted(n: int) -> ParkedEvent:
    at = NOW - timedelta(hours=n)
    properties = Basic.Properties(message_id=f"unrouted-{n}", timestamp=at, headers={})
    return parked_event(
        body_of("email.opened", n=n),
        properties,
        place="unrouted",
        app=None,
        routing_key="k",
        seen_at=at,
    )


async def _incident(store: ParkedStore) -> None:
    """The alerts DLQ holds 20 (12 sms.subscribed, 8 sms.sent), crm-sync's 3, unrouted 2."""
    alerts = [
        _dlq("alerts", n, event_type="sms.sent" if n % 5 < 2 else "sms.subscribed")
        for n in range(20)
    ]
    entries = [*alerts, *(_dlq("crm-sync", n) for n in range(3)), _unrouted(1), _unrouted(2)]
    assert await store.add_many(entries) == len(entries)


async def _csrf(console: Console, path: str) -> str:
    """The CSRF token of the API client's session, read from the page at ``path``."""
    response = await console.api.get(path)
    found = re.search(r'name="csrf_token" value="([^"]+)"', await response.text())
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


async def _logged_in(console: Console, token: str) -> None:
    """Log the API client in through the login form (it keeps the session cookie)."""
    response = await console.api.post(
        "/console/login", data={"token": token}, allow_redirects=False
    )
    assert response.status == 303, await response.text()


@contextmanager
def _unreadable(database: Path) -> Iterator[None]:
    """The SQLite file ``database`` out of the way (a directory in its place) meanwhile."""
    aside = database.with_suffix(".aside")
    database.rename(aside)
    database.mkdir()
    try:
        yield
    finally:
        database.rmdir()
        aside.rename(database)


async def test_an_operator_sees_the_places_and_filters_a_dlq_by_type(
    console: Console, parked: ParkedStore, browser_page: Page
) -> None:
    """Given two DLQs and unrouted events, when an operator opens the parked events, then
    the places are listed with their counts, the first DLQ is shown with its facets; when
    they filter by type and then pick a company among the facets, the URL holds both, and
    the count follows; the selection form posts that filter with the ticked message ids."""
    await _incident(parked)
    page = browser_page
    await log_in(page, console, as_="oncall")

    await page.goto(console.page("/console/parked"))

    places = page.locator("#places")
    await expect(places.get_by_role("listitem").nth(0)).to_contain_text("alerts (dlq)")
    await expect(places.get_by_role("listitem").nth(0)).to_contain_text("20")
    await expect(places.get_by_role("listitem").nth(1)).to_contain_text("crm-sync (dlq)")
    await expect(places.get_by_role("listitem").nth(1)).to_contain_text("3")
    await expect(places.get_by_role("listitem").nth(2)).to_contain_text("unrouted")
    await expect(places.get_by_role("listitem").nth(2)).to_contain_text("2")
    await expect(places.locator("[aria-current=page]")).to_have_text("alerts (dlq)")
    await expect(page.locator("#matched")).to_contain_text("20 parked events match")
    facets = page.get_by_role("region", name="Facets of this filter")
    await expect(facets.get_by_role("listitem").filter(has_text="sms.subscribed")).to_contain_text(
        "12"
    )
    await expect(page.locator("#entries tbody tr")).to_have_count(20)
    await screenshot(page, "parked")

    await page.get_by_label("Type", exact=True).fill("sms.sent")
    await page.get_by_role("button", name="Filter", exact=True).click()

    await page.wait_for_url(re.compile(r"type=sms\.sent"))
    await expect(page.locator("#matched")).to_contain_text("8 parked events match")
    await expect(page.get_by_label("Type", exact=True)).to_have_value("sms.sent")
    await facets.get_by_role("link", name="c1", exact=True).click()
    await page.wait_for_url(re.compile(r"company=c1"))
    assert "type=sms.sent" in page.url and "app=alerts" in page.url
    await expect(page.locator("#matched")).to_contain_text("4 parked events match")

    posted: list[Request] = []

    async def intercept(route: Route) -> None:
        posted.append(route.request)
        await route.fulfill(status=200, content_type="text/html", body="<p>intercepted</p>")

    await page.route("**/console/actions/replay", intercept)
    await page.get_by_label("Select alerts-006").check()
    await page.get_by_role("button", name="Replay selected").click()
    await expect(page.locator("p")).to_have_text("intercepted")
    assert len(posted) == 1
    form = posted[0].post_data or ""
    for field in (
        "place=dlq",
        "app=alerts",
        "type=sms.sent",
        "company=c1",
        "message_id=alerts-006",
        "csrf_token=",
    ):
        assert field in form, form
    assert form.count("message_id=") == 1, form


async def test_pages_follow_the_cursor(
    console: Console, parked: ParkedStore, browser_page: Page
) -> None:
    """Given 60 entries in a DLQ, when an operator opens it, then the first page shows 50,
    newest first; the next page the 10 left, and no further page; 800 px wide, the page
    still fits the window (the table scrolls within it)."""
    entries = [_dlq("alerts", n) for n in range(60)]
    assert await parked.add_many(entries) == 60
    page = browser_page
    await log_in(page, console)

    await page.goto(console.page("/console/parked?place=dlq&app=alerts"))

    rows = page.locator("#entries tbody tr")
    await expect(rows).to_have_count(50)
    await expect(rows.first).to_contain_text("alerts-000")
    await page.get_by_role("link", name="Next page").click()
    await page.wait_for_url(re.compile(r"cursor="))
    await expect(rows).to_have_count(10)
    await expect(rows.first).to_contain_text("alerts-050")
    await expect(rows.last).to_contain_text("alerts-059")
    await expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    await expect(page.get_by_role("link", name="First page")).to_be_visible()
    await page.set_viewport_size({"width": 800, "height": 800})
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= 800


async def test_an_entry_is_masked_until_an_operator_reveals_it(
    console: Console, parked: ParkedStore, browser_page: Page
) -> None:
    """Given an entry whose payload holds a phone number and an email, when an operator opens
    it from the list, then its facts, traceback and payload are shown, both contact details
    masked, and nothing is audited; when they press "Reveal contact details", both are shown
    and the audit log records who revealed which entry."""
    await parked.add_many([_dlq("alerts", 1, **CONTACT)])
    page = browser_page
    await log_in(page, console)
    await page.goto(console.page("/console/parked"))

    await page.get_by_role("link", name="alerts-001").click()

    payload = page.locator("#payload")
    await expect(payload).to_contain_text("4567")
    await expect(payload).not_to_contain_text(PHONE)
    await expect(payload).not_to_contain_text(EMAIL)
    await expect(page.locator("#facts")).to_contain_text("sms.subscribed")
    await expect(page.locator("#traceback")).to_contain_text("Traceback")
    await screenshot(page, "parked-entry")
    assert await parked.audit() == []

    await page.get_by_role("button", name="Reveal contact details").click()

    await expect(page.locator("#revealed")).to_be_visible()
    await expect(payload).to_contain_text(PHONE)
    await expect(payload).to_contain_text(EMAIL)
    (record,) = await parked.audit()
    assert record.action is AuditAction.REVEAL and record.who == "oncall"
    assert record.filter["message_id"] == "alerts-001" and record.filter["app"] == "alerts"


async def test_a_revealed_page_is_answered_to_the_post_alone_and_not_cached(
    console: Console, parked: ParkedStore
) -> None:
    """Given a masked entry, when an operator posts its reveal form, then the page answered
    shows the phone number and the email and is not to be cached, while the entry's own
    address still shows it masked."""
    await parked.add_many([_dlq("alerts", 1, **CONTACT)])
    await _logged_in(console, OPERATOR_TOKEN)
    token = await _csrf(console, ENTRY)

    revealed = await console.api.post(f"{ENTRY}/reveal", data={"csrf_token": token})

    text = await revealed.text()
    assert revealed.status == 200, text
    assert PHONE in text and EMAIL in text
    assert revealed.headers["Cache-Control"] == "no-store"
    again = await (await console.api.get(ENTRY)).text()
    assert PHONE not in again and EMAIL not in again


async def test_a_viewer_sees_no_reveal_replay_or_purge_controls(
    console: Console, parked: ParkedStore, browser_page: Page
) -> None:
    """Given parked entries, when a viewer opens the list and an entry, then there is no
    checkbox, no replay or purge button, and no reveal button; the payload stays masked."""
    await parked.add_many([_dlq("alerts", n, subscriber={"email": EMAIL}) for n in range(3)])
    page = browser_page
    await log_in(page, console, as_="grafana")

    await page.goto(console.page("/console/parked"))

    await expect(page.locator("#entries tbody tr")).to_have_count(3)
    await expect(page.get_by_role("checkbox")).to_have_count(0)
    await expect(page.get_by_role("button", name=re.compile("Replay|Purge"))).to_have_count(0)
    await page.get_by_role("link", name="alerts-001").click()
    await expect(page.locator("#masked")).to_be_visible()
    await expect(page.get_by_role("button", name=re.compile("Reveal|Replay|Purge"))).to_have_count(
        0
    )
    await expect(page.locator("#payload")).not_to_contain_text(EMAIL)


async def test_invalid_events_can_be_purged_but_not_replayed(
    console: Console, parked: ParkedStore
) -> None:
    """Given an invalid event, when an operator lists the invalid ones, then they are offered
    purge buttons and no replay button."""
    properties = Basic.Properties(message_id="bad-1", timestamp=NOW, headers={})
    bad = parked_event(
        b"not json", properties, place="invalid", app=None, routing_key="k", seen_at=NOW
    )
    await parked.add_many([bad])
    await _logged_in(console, OPERATOR_TOKEN)

    response = await console.api.get("/console/parked?place=invalid")

    text = await response.text()
    assert response.status == 200
    assert "Purge selected" in text and "Purge all 1 matching" in text
    assert "Replay" not in text


async def test_a_viewers_reveal_is_refused_and_not_recorded(
    console: Console, parked: ParkedStore
) -> None:
    """Given an entry with an email, when a viewer posts its reveal form (with the session's
    CSRF token), then the answer is 403 without the email, and nothing is audited; an
    operator's reveal without the CSRF token is refused too."""
    await parked.add_many([_dlq("alerts", 1, subscriber={"email": EMAIL})])
    await _logged_in(console, VIEWER_TOKEN)
    token = await _csrf(console, ENTRY)

    refused = await console.api.post(f"{ENTRY}/reveal", data={"csrf_token": token})

    assert refused.status == 403
    assert EMAIL not in await refused.text()
    await _logged_in(console, OPERATOR_TOKEN)
    forged = await console.api.post(f"{ENTRY}/reveal", data={})
    assert forged.status == 403
    assert EMAIL not in await forged.text()
    assert await parked.audit() == []


async def test_a_payload_carrying_a_script_is_shown_as_text(
    console: Console, parked: ParkedStore, browser_page: Page
) -> None:
    """Given an entry whose payload, company and error carry markup, when an operator opens
    the list and the entry, then the markup is shown as text and no script of it runs."""
    entry = _dlq("alerts", 1, company="<b>c9</b>", note=HOSTILE, error=f"ValueError: {HOSTILE}")
    await parked.add_many([entry])
    page = browser_page
    await log_in(page, console)

    await page.goto(console.page("/console/parked"))
    await expect(page.locator("#entries")).to_contain_text("<b>c9</b>")
    await expect(page.locator("#entries")).to_contain_text(HOSTILE)
    await page.get_by_role("link", name="alerts-001").click()

    await expect(page.locator("#payload")).to_contain_text(HOSTILE)
    await expect(page.locator("#error")).to_contain_text(HOSTILE)
    assert await page.evaluate("() => window.__pwned === undefined")
    assert await page.locator("b").count() == 0


async def test_empty_states_and_a_bad_filter_say_what_to_do(
    console: Console, parked: ParkedStore
) -> None:
    """Given an empty store, when an operator opens the parked events, then the page says
    nothing is parked and where events come from; given entries, a filter matching none says
    to clear it; a malformed time is refused (400) naming the field, the form kept."""
    await _logged_in(console, OPERATOR_TOKEN)

    empty = await console.api.get("/console/parked")

    assert empty.status == 200
    assert (
        "Nothing is parked. Events land here when a worker dead-letters them" in await empty.text()
    )
    await parked.add_many([_dlq("alerts", 1)])
    none = await console.api.get("/console/parked?place=dlq&app=alerts&company=nobody")
    assert "No parked events match." in await none.text()
    bad = await console.api.get("/console/parked?place=dlq&app=alerts&since=yesterday")
    text = await bad.text()
    assert bad.status == 400
    assert "since must be an ISO 8601 time" in text and 'value="yesterday"' in text


async def test_a_database_outage_is_a_503_page(console: Console, parked: ParkedStore) -> None:
    """Given the parked-event database cannot be opened, when an operator opens the parked
    events or an entry, then each answers 503 saying so, without the database's details."""
    await parked.add_many([_dlq("alerts", 1)])
    await _logged_in(console, OPERATOR_TOKEN)
    database = Path(console.settings.database_url.reveal().removeprefix("sqlite:///"))
    with _unreadable(database):
        listing = await console.api.get("/console/parked")
        entry = await console.api.get(ENTRY)

    for answer in (listing, entry):
        text = await answer.text()
        assert answer.status == 503
        assert "the parked-event database is unavailable" in text
        assert str(database) not in text
