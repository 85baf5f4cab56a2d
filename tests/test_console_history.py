"""The console's history page, in a real browser against the real admin app and a real
ingress with the archive on: the last hour's events listed without personal data, narrowed
by the form (the search in the URL), more shown on request; one event masked until an
operator reveals it (and the reveal audited); a viewer who may not reveal; bad input and a
missing archive answered with their reason.

The tests of this module share one namespace, so one archive stream (making and deleting a
stream per test is slow here); each test posts events of companies of its own and filters
on them, so it does not see another test's events.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import aio_pika
import pytest
from aiohttp.test_utils import TestServer

from router.admin.app import create_admin_app
from router.amqp import topology
from router.contract.names import Names
from router.parked.jobs import AuditAction
from router.parked.open import parked_store_from_url
from router.parked.store import ParkedStore
from router.settings import Settings
from tests.browser import screenshot
from tests.conftest import AMQP_URL, Client, archive_on
from tests.console_steps import OPERATOR_TOKEN, Console, log_in
from tests.environment import no_router_environment
from tests.test_history_archive import post_event

pytest.importorskip("playwright", reason="playwright is not installed: pip install -e '.[dev]'")
from playwright.async_api import Page, expect

#: ``no_router_environment``, autouse: no ROUTER_* variable of the shell counts.
__all__ = ["no_router_environment"]

pytestmark = [pytest.mark.broker, pytest.mark.browser]

#: The subscriber's contact details in every example payload.
PHONE, EMAIL = "+15555555555", "test@gmail.com"
_SHARED = Names(prefix=f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def _one_archive() -> Iterator[Names]:
    """The module's namespace; its topology (the archive stream too) deleted after the last
    of its tests."""
    yield _SHARED

    async def delete() -> None:
        connection = await aio_pika.connect(
            AMQP_URL, client_properties={"connection_name": __name__}
        )
        async with connection:
            await topology.delete(await connection.channel(), _SHARED)

    asyncio.run(delete())


@pytest.fixture
def names(_one_archive: Names) -> Names:
    """Every test of the module in one namespace, so one archive stream."""
    return _one_archive


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings with the archive on, as the router runs by default."""
    return archive_on(settings)


@pytest.fixture
async def audit_log(console: Console) -> AsyncIterator[ParkedStore]:
    """The console's parked-event store, where reveals are audited."""
    store = parked_store_from_url(console.settings.database_url.reveal())
    await store.open()
    yield store
    await store.close()


def company(name: str) -> str:
    """A company id of this test's own (the archive outlives the test)."""
    return f"{name}-{uuid.uuid4().hex[:6]}"


def listed(message_id: str) -> str:
    """How the list shows a message id (its start; the link's title holds it whole)."""
    return message_id[:16] + "…"


async def test_an_operator_lists_the_last_hour_and_narrows_it(
    console: Console, ingress: Client, browser_page: Page
) -> None:
    """Given six events of two companies accepted by the ingress, when an operator opens
    History from the navigation, then the form starts at the last hour and every event is
    listed with its type, company and routing key, and no contact detail; when they search
    sms.* of one company, the URL holds it and only its two SMS events remain, oldest first;
    with a limit of one, the page says more match, and its link shows both; 800 px wide,
    the page still fits the window."""
    acme, globex = company("acme"), company("globex")
    posted = [
        await post_event(ingress, event_type, of)
        for event_type, of in (
            ("sms.subscribed", acme),
            ("sms.sent", acme),
            ("email.opened", acme),
            ("sms.sent", globex),
            ("email.sent", globex),
            ("sms.unsubscribed", globex),
        )
    ]
    page = browser_page
    await log_in(page, console)

    await page.get_by_role("link", name="History", exact=True).click()

    await page.wait_for_url(console.page("/console/history"))
    await expect(page.get_by_label("Since")).to_have_value("1h")
    events = page.locator("#events")
    for message_id in posted:
        await expect(events.get_by_role("link", name=listed(message_id))).to_be_visible()
    fourth = events.locator("tbody tr").filter(has_text=listed(posted[3]))
    await expect(fourth).to_contain_text("sms.sent")
    await expect(fourth).to_contain_text(f"sms.sent.{globex}")
    await expect(page.locator("main")).not_to_contain_text(PHONE[-4:])
    await expect(page.locator("main")).not_to_contain_text(EMAIL)
    await screenshot(page, "history")

    await page.get_by_label("Type", exact=True).fill("sms.*")
    await page.get_by_label("Company", exact=True).fill(globex)
    await page.get_by_role("button", name="Search").click()

    await page.wait_for_url(re.compile(rf"type=sms\.(\*|%2A).*company={globex}"))
    rows = events.locator("tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_contain_text(listed(posted[3]))
    await expect(rows.nth(1)).to_contain_text(listed(posted[5]))
    await expect(page.locator("#scanned")).to_contain_text("2 events match")

    await page.get_by_label("Limit").fill("1")
    await page.get_by_role("button", name="Search").click()

    await expect(rows).to_have_count(1)
    await expect(page.locator("#more")).to_contain_text("More events match")
    await page.get_by_role("link", name="show more").click()
    await page.wait_for_url(re.compile(r"limit=2"))
    await expect(rows).to_have_count(2)
    await expect(page.locator("#more")).to_have_count(0)
    await page.set_viewport_size({"width": 800, "height": 800})
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= 800


async def test_an_event_is_masked_until_an_operator_reveals_it(
    console: Console, ingress: Client, audit_log: ParkedStore, browser_page: Page, names: Names
) -> None:
    """Given an SMS event in the archive, when an operator opens it from the list, then its
    facts and headers are shown and its payload with the phone and the email masked, and
    nothing is audited; when they reveal, both are shown and the audit log says who saw
    which archived event; the event's own address shows it masked again."""
    of = company("acme")
    sent = await post_event(ingress, "sms.sent", of)
    page = browser_page
    await log_in(page, console)
    await page.goto(console.page(f"/console/history?company={of}"))

    await page.get_by_role("link", name=listed(sent)).click()

    payload = page.locator("#payload")
    await expect(payload).to_contain_text("5555")
    await expect(payload).not_to_contain_text(PHONE)
    await expect(payload).not_to_contain_text(EMAIL)
    await expect(page.locator("#facts")).to_contain_text("sms.sent")
    await expect(page.locator("#facts")).to_contain_text(of)
    await expect(page.locator("#headers")).to_contain_text(of)
    assert await audit_log.audit() == []

    await page.get_by_role("button", name="Reveal contact details").click()

    await expect(page.locator("#revealed")).to_be_visible()
    await expect(payload).to_contain_text(PHONE)
    await expect(payload).to_contain_text(EMAIL)
    (record,) = await audit_log.audit()
    assert record.action is AuditAction.REVEAL and record.who == "oncall"
    assert record.filter["message_id"] == sent
    assert record.filter["archive"] == names.archive_stream
    await page.get_by_role("link", name="Mask them again").click()
    await expect(page.locator("#masked")).to_be_visible()
    await expect(payload).not_to_contain_text(PHONE)


async def test_a_viewer_sees_the_event_masked_and_may_not_reveal_it(
    console: Console, ingress: Client, audit_log: ParkedStore, browser_page: Page
) -> None:
    """Given an event in the archive, when a viewer opens it, then it is masked and there is
    no Reveal button; when the viewer's session posts the reveal anyway (with its CSRF
    token), the answer is 403 without the email, and nothing is audited."""
    of = company("acme")
    sent = await post_event(ingress, "sms.sent", of)
    page = browser_page
    await log_in(page, console, as_="grafana")
    await page.goto(console.page(f"/console/history?company={of}"))
    await page.get_by_role("link", name=listed(sent)).click()

    await expect(page.locator("#masked")).to_be_visible()
    await expect(page.get_by_role("button", name="Reveal contact details")).to_have_count(0)
    token = await page.locator("input[name=csrf_token]").first.get_attribute("value")
    path = page.url.partition("?")[0].removeprefix(console.url)

    refused = await page.request.post(
        console.page(f"{path}/reveal"), form={"csrf_token": token or "", "since": "1h"}
    )

    assert refused.status == 403
    text = await refused.text()
    assert "only an operator may reveal" in text and EMAIL not in text
    assert await audit_log.audit() == []


async def test_bad_input_and_a_missing_archive_are_answered_with_the_reason(
    console: Console, browser_page: Page
) -> None:
    """When the form is given a time that is none, a window that ends before it starts, or a
    limit of zero, then the page answers 400 naming the field, keeping what was typed; an
    event's page with a bad window too. A console whose archive does not exist (the archive
    off from the start) says so with 503, and that the archive is off."""
    page = browser_page
    await log_in(page, console)
    error = page.locator("#history-error")

    for query, reason in (
        ("since=last+tuesday", "since not a time: 'last tuesday'"),
        ("since=1h&until=2h", "until must be after since"),
        ("since=1h&limit=0", "limit must be between 1 and 10000"),
    ):
        answer = await page.goto(console.page(f"/console/history?{query}"))
        assert answer is not None and answer.status == 400
        await expect(error).to_contain_text(reason)
    await expect(page.get_by_label("Limit")).to_have_value("0")
    answer = await page.goto(console.page("/console/history/m-1?since=soon"))
    assert answer is not None and answer.status == 400
    await expect(error).to_contain_text("since not a time")

    elsewhere = Names(prefix=f"t-{uuid.uuid4().hex[:12]}")
    off = replace(console.settings, namespace=elsewhere.prefix, archive=False)
    async with Client(TestServer(create_admin_app(off))) as other:
        await other.post("/console/login", data={"token": OPERATOR_TOKEN})
        missing = await other.get("/console/history")
        text = await missing.text()
    assert missing.status == 503
    assert f"no archive {elsewhere.archive_stream}" in text
    assert "The archive is off" in text
