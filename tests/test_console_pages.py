"""Every page of the console, as a person at a keyboard or on a narrow screen meets it: it
fits 1280 and 800 pixels without scrolling sideways (wide tables scroll inside their own
box), every control has a name a screen reader says, nothing breaks the Content-Security-
Policy, and the keyboard reaches the content first and then every link and button in order.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import ConsoleMessage, Page, expect

from router.parked.open import parked_store_from_url
from tests.browser import screenshot
from tests.conftest import AUTH
from tests.console_steps import TOKENS, Console, log_in
from tests.environment import no_router_environment
from tests.parked_stores import body_of, dead_letter

#: ``no_router_environment``, autouse: no ROUTER_* variable of the shell counts.
__all__ = ["no_router_environment"]

pytestmark = [pytest.mark.broker, pytest.mark.browser]

#: Each page a person opens, with some content on it (see ``_fill``).
PAGES = (
    "/console/",
    "/console/claims",
    "/console/apps",
    "/console/parked?place=dlq&app=crm-sync",
    "/console/parked/dlq/crm-sync/m-1",
    "/console/jobs",
    "/console/jobs/1",
)

_UNNAMED_CONTROLS = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(el => el.type !== 'hidden' && el.offsetParent !== null)
  .filter(el => {
    const labelled = el.labels && el.labels.length > 0;
    const named = el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')
      || el.getAttribute('title');
    const text = el.tagName === 'BUTTON' && el.textContent.trim();
    return !(labelled || named || text);
  })
  .map(el => el.outerHTML.slice(0, 120))"""


async def _fill(console: Console) -> None:
    """A claim, twelve dead letters of its application (with contact details), and a job
    (a dry run of their replay)."""
    claimed = await console.api.post(
        "/admin/claims", json={"app": "crm-sync", "events": ["sms.*"]}, headers=AUTH
    )
    assert claimed.status == 201
    store = parked_store_from_url(console.settings.database_url.reveal())
    await store.open()
    try:
        at = datetime.now(UTC) - timedelta(minutes=30)
        await store.add_many(
            [
                dead_letter(
                    body_of("sms.sent", phone="+15551234567", email="ann@example.com", n=n),
                    app="crm-sync",
                    message_id=f"m-{n}",
                    at=at + timedelta(seconds=n),
                )
                for n in range(1, 13)
            ]
        )
    finally:
        await store.close()
    job = await console.api.post("/admin/dlq/crm-sync/replay", json={"dry_run": True}, headers=AUTH)
    assert job.status == 202 and (await job.json())["id"] == 1


@pytest.mark.parametrize("width", [1280, 800])
async def test_every_page_fits_names_its_controls_and_keeps_to_the_policy(
    browser_page: Page, console: Console, width: int
) -> None:
    """Given a console with a claim and parked events, seen by an operator (who has every
    control) in a window ``width`` pixels wide,
    when each page is opened,
    then none scrolls sideways, every visible control has a name, and the browser reports no
    Content-Security-Policy violation and no script error."""
    await _fill(console)
    await browser_page.set_viewport_size({"width": width, "height": 900})
    complaints: list[str] = []

    def heard(message: ConsoleMessage) -> None:
        if message.type == "error":
            complaints.append(message.text)

    browser_page.on("console", heard)
    browser_page.on("pageerror", lambda error: complaints.append(str(error)))
    await log_in(browser_page, console)

    for path in PAGES:
        answer = await browser_page.goto(console.page(path))
        assert answer is not None and answer.status == 200, path
        await expect(browser_page.locator("main h1")).to_be_visible()
        overflow = await browser_page.evaluate(
            "() => document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, f"{path} scrolls {overflow} px sideways at {width} px"
        assert await browser_page.evaluate(_UNNAMED_CONTROLS) == [], path
    assert complaints == []


async def test_the_keyboard_reaches_the_content_first_then_every_link_in_order(
    browser_page: Page, console: Console
) -> None:
    """Given the login page, where the token field has the focus and Enter logs in, and then
    the claims page,
    when a keyboard user presses Tab,
    then the first stop is "Skip to the content", which takes focus to the page's content;
    further Tabs go through the navigation's links, each with a visible focus ring."""
    await browser_page.goto(console.page("/console/login"))
    await expect(browser_page.get_by_label("Admin token")).to_be_focused()
    await screenshot(browser_page, "login")
    await browser_page.keyboard.type(TOKENS["oncall"])
    await browser_page.keyboard.press("Enter")
    await browser_page.wait_for_url(console.page("/console/"))
    await browser_page.goto(console.page("/console/claims"))

    await browser_page.keyboard.press("Tab")
    skip = browser_page.get_by_role("link", name="Skip to the content")
    await expect(skip).to_be_focused()
    await browser_page.keyboard.press("Enter")
    assert await browser_page.evaluate("() => document.activeElement.id") == "main"

    await browser_page.goto(console.page("/console/claims"))
    await browser_page.keyboard.press("Tab")
    visited = []
    for _ in range(7):
        await browser_page.keyboard.press("Tab")
        visited.append(await browser_page.evaluate("() => document.activeElement.textContent"))
        outline = await browser_page.evaluate(
            "() => getComputedStyle(document.activeElement).outlineStyle"
        )
        assert outline != "none", visited[-1]
    assert [text.strip() for text in visited[:6]] == [
        "attentive-router",
        "Overview",
        "Claims",
        "Applications",
        "Parked events",
        "Jobs and audit",
    ]
