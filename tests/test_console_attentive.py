"""The console's Attentive page: ``attentive audit`` in the browser, against a local stand-in
of Attentive's Webhooks API and the real claims; offered only with ``ATTENTIVE_API_TOKEN``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Page, expect

from router.admin.app import create_admin_app
from router.attentive.settings import AttentiveSettings
from tests.browser import screenshot
from tests.conftest import AUTH, Client
from tests.console_steps import Console, log_in
from tests.environment import no_router_environment
from tests.test_attentive_api import TOKEN as ATTENTIVE_TOKEN
from tests.test_attentive_api import FakeAttentive, running_fake

#: ``no_router_environment``, autouse: no ROUTER_* variable of the shell counts.
__all__ = ["no_router_environment"]

pytestmark = [pytest.mark.broker, pytest.mark.browser]

COMPANY = "MDc6Q29tcGFueTU"


@dataclass
class WithAttentive:
    console: Console
    attentive: FakeAttentive


@pytest.fixture
async def with_attentive(console: Console) -> AsyncIterator[WithAttentive]:
    """The console's admin app again, now with Attentive's API settings (a local stand-in)."""
    async with running_fake() as fake:
        settings = AttentiveSettings(token=ATTENTIVE_TOKEN, base_url=fake.url, attempts=1)
        api = Client(TestServer(create_admin_app(console.settings, attentive=settings)))
        await api.start_server()
        try:
            url = str(api.make_url("")).rstrip("/")
            yield WithAttentive(Console(url, console.settings, api), fake)
        finally:
            await api.close()


async def test_the_attentive_page_shows_conflicts_and_disagreements(
    browser_page: Page, with_attentive: WithAttentive
) -> None:
    """Given two enabled webhooks of one company that both get sms.sent, and a claim of
    email.* that no webhook feeds,
    when on-call opens the Attentive page,
    then it names the conflict, the type nobody claims and the idle claim, lists the
    webhooks, and never shows
    Attentive's token."""
    console, fake = with_attentive.console, with_attentive.attentive
    ours = fake.add(["sms.sent", "sms.subscribed"], company_id=COMPANY)
    theirs = fake.add(["sms.sent"], company_id=COMPANY, url="https://crm.example.com/hook")
    claimed = await console.api.post(
        "/admin/claims", json={"app": "mailer", "events": ["email.*"]}, headers=AUTH
    )
    assert claimed.status == 201

    await log_in(browser_page, console)
    await browser_page.get_by_role("link", name="Attentive", exact=True).click()

    conflict = browser_page.locator("li.error")
    await expect(conflict).to_contain_text("sms.sent goes to 2 enabled webhooks")
    await expect(conflict).to_contain_text(ours)
    await expect(conflict).to_contain_text(theirs)
    warnings = browser_page.locator("li.warn")
    await expect(warnings.filter(has_text="mailer")).to_have_count(1)
    await expect(warnings.filter(has_text="sms.subscribed")).to_have_count(1)
    await expect(browser_page.get_by_role("row", name=theirs)).to_contain_text("crm.example.com")
    assert ATTENTIVE_TOKEN not in await browser_page.content()
    await screenshot(browser_page, "attentive")


async def test_a_failing_attentive_api_is_said_on_the_page(
    browser_page: Page, with_attentive: WithAttentive
) -> None:
    """Given Attentive's API answering 500,
    when on-call opens the Attentive page,
    then the page says Attentive's API could not be read (502), without the token."""
    with_attentive.attentive.fail(500, 5)
    await log_in(browser_page, with_attentive.console, as_="grafana")

    answer = await browser_page.goto(with_attentive.console.page("/console/attentive"))

    assert answer is not None and answer.status == 502
    await expect(browser_page.get_by_role("alert")).to_contain_text("could not be read")
    assert ATTENTIVE_TOKEN not in await browser_page.content()


async def test_without_an_attentive_token_the_page_is_not_offered(
    browser_page: Page, console: Console
) -> None:
    """Given a router without ATTENTIVE_API_TOKEN,
    then the navigation has no Attentive page, and its address says what it needs (404)."""
    await log_in(browser_page, console)
    await expect(browser_page.get_by_role("link", name="Attentive", exact=True)).to_have_count(0)

    answer = await browser_page.goto(console.page("/console/attentive"))

    assert answer is not None and answer.status == 404
    await expect(browser_page.get_by_role("alert")).to_contain_text("ATTENTIVE_API_TOKEN")
