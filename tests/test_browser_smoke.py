"""The chain the console's tests stand on: an aiohttp app on this machine, Debian's Chromium
driven through Playwright, and a strict Content-Security-Policy that lets the page's own script
files run and nothing written inline."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.browser import TIMEOUT_MS

pytest.importorskip("playwright", reason="playwright is not installed: pip install -e '.[dev]'")
from playwright.async_api import Page, expect

pytestmark = pytest.mark.browser

#: The policy the console is served under: the page's own script files, nothing else.
STRICT_CSP = "default-src 'none'; script-src 'self'"

_BUTTON_PAGE = """<!doctype html>
<html><head><title>smoke</title><script src="/button.js" defer></script></head>
<body><button id="go">Go</button><p id="out">waiting</p></body></html>
"""
_BUTTON_SCRIPT = """document.getElementById("go").addEventListener("click", () => {
  document.getElementById("out").textContent = "clicked";
});
"""
_INLINE_PAGE = """<!doctype html>
<html><head><title>inline</title><script src="/watch.js"></script></head>
<body><p id="out">waiting</p><p id="violation">none</p>
<script>document.getElementById("out").textContent = "ran inline";</script></body></html>
"""
#: Runs before the inline script is parsed, and writes down the directive that blocks it.
_WATCH_SCRIPT = """document.addEventListener("securitypolicyviolation", (event) => {
  document.getElementById("violation").textContent = event.effectiveDirective;
});
"""


def _app() -> web.Application:
    """Pages under the strict policy; ``/open/inline`` is the inline page with no policy."""

    def text(body: str, content_type: str, *, policy: str | None = STRICT_CSP) -> web.Response:
        headers = {} if policy is None else {"Content-Security-Policy": policy}
        return web.Response(text=body, content_type=content_type, headers=headers)

    async def button(_: web.Request) -> web.Response:
        return text(_BUTTON_PAGE, "text/html")

    async def button_js(_: web.Request) -> web.Response:
        return text(_BUTTON_SCRIPT, "text/javascript")

    async def inline(_: web.Request) -> web.Response:
        return text(_INLINE_PAGE, "text/html")

    async def open_inline(_: web.Request) -> web.Response:
        return text(_INLINE_PAGE, "text/html", policy=None)

    async def watch_js(_: web.Request) -> web.Response:
        return text(_WATCH_SCRIPT, "text/javascript")

    app = web.Application()
    app.router.add_get("/", button)
    app.router.add_get("/button.js", button_js)
    app.router.add_get("/inline", inline)
    app.router.add_get("/open/inline", open_inline)
    app.router.add_get("/watch.js", watch_js)
    return app


@pytest.fixture
async def site() -> AsyncIterator[TestServer]:
    """The pages above, served on a free port of 127.0.0.1."""
    server = TestServer(_app(), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def test_a_same_origin_script_runs_under_the_strict_policy(
    site: TestServer, browser_page: Page
) -> None:
    """Given a page whose button is wired by a script file of its own origin, under the strict
    policy, when the browser clicks the button, then the script changes the page's text."""
    response = await browser_page.goto(str(site.make_url("/")))
    assert response is not None
    assert response.headers["content-security-policy"] == STRICT_CSP
    await expect(browser_page.locator("#out")).to_have_text("waiting", timeout=TIMEOUT_MS)

    await browser_page.click("#go")

    await expect(browser_page.locator("#out")).to_have_text("clicked", timeout=TIMEOUT_MS)


async def test_an_inline_script_is_blocked_by_the_strict_policy(
    site: TestServer, browser_page: Page
) -> None:
    """Given a page with an inline script that would change its text (and does, served with no
    policy), when it is served under the strict policy, then the browser reports the
    violation of script-src and the text stays as written."""
    await browser_page.goto(str(site.make_url("/open/inline")))
    await expect(browser_page.locator("#out")).to_have_text("ran inline", timeout=TIMEOUT_MS)

    await browser_page.goto(str(site.make_url("/inline")))

    await expect(browser_page.locator("#violation")).to_have_text(
        "script-src-elem", timeout=TIMEOUT_MS
    )
    await expect(browser_page.locator("#out")).to_have_text("waiting", timeout=TIMEOUT_MS)
