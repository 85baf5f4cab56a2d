"""A real browser for the tests of the console: Debian's Chromium, driven through Playwright.

Playwright's own browser builds cannot be downloaded here, so the browser launched is
``/usr/bin/chromium`` (``scripts/ensure-browser.sh`` installs it); a test that asks for one is
skipped, with the reason, where that browser or the ``playwright`` package is missing.

Each test launches a browser of its own on its own event loop (pytest-asyncio's loop is per test):
a launch takes a fraction of a second, and no browser state leaks from one test to the next.

* ``chromium``: the launched browser, closed after the test.
* ``browser_page``: a page in a new context (a 1280x800 viewport); when the test fails, a
  screenshot of it is left in ``tests/.artifacts/`` (not tracked) to show what the page showed.
* :func:`screenshot`: the picture of a console page that the documentation shows
  (``docs/images/console-<name>.png``).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

#: The browser the tests drive: Debian's package, never one Playwright would download.
CHROMIUM = Path("/usr/bin/chromium")
#: No sandbox (the tests run as root), no GPU, and nothing the browser would fetch on its own.
LAUNCH_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)
#: The size of the window the console is looked at in.
VIEWPORT_WIDTH = 1280
VIEWPORT_HEIGHT = 800
#: The longest any one browser action or wait may take (milliseconds).
TIMEOUT_MS = 15_000
#: Set to ``1`` to write every documentation screenshot again, not only the missing ones.
SCREENSHOTS_ENV = "CONSOLE_SCREENSHOTS"

_ROOT = Path(__file__).resolve().parent.parent
_ARTIFACTS = _ROOT / "tests" / ".artifacts"
_IMAGES = _ROOT / "docs" / "images"
_IMAGE_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_PHASES = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test, so a fixture's teardown can tell it failed."""
    report = yield
    item.stash.setdefault(_PHASES, {})[report.when] = report
    return report


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, launched for this test and closed after it."""
    _require_chromium()
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=list(LAUNCH_ARGS),
            timeout=TIMEOUT_MS,
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def browser_page(chromium: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A page in a context of its own; if the test fails, its screenshot is kept."""
    context = await chromium.new_context(
        viewport={"width": VIEWPORT_WIDTH, "height": VIEWPORT_HEIGHT}
    )
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    page = await context.new_page()
    try:
        yield page
        if _failed(request.node):
            _ARTIFACTS.mkdir(parents=True, exist_ok=True)
            path = _ARTIFACTS / f"{_file_name(request.node.nodeid)}.png"
            await page.screenshot(path=path, full_page=True, timeout=TIMEOUT_MS)
    finally:
        await context.close()


async def screenshot(page: Page, name: str) -> Path | None:
    """Write the whole of ``page`` to ``docs/images/console-<name>.png`` for the documentation.

    Only a picture not there yet is written, unless ``CONSOLE_SCREENSHOTS=1``: the pixels of a
    page change with fonts and timing, so an ordinary test run must not rewrite tracked images.
    Returns the path written, or ``None`` when the existing picture was kept.
    """
    if not _IMAGE_NAME.fullmatch(name):
        raise ValueError(f"a screenshot's name is lowercase words joined by '-': {name!r}")
    path = _IMAGES / f"console-{name}.png"
    if path.exists() and os.environ.get(SCREENSHOTS_ENV) != "1":
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=path, full_page=True, timeout=TIMEOUT_MS)
    return path


def _require_chromium() -> None:
    """Skip the test, saying how to install it, where Debian's Chromium is missing."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is missing: run scripts/ensure-browser.sh (apt-get install chromium)"
        )


def _failed(item: pytest.Item) -> bool:
    report = item.stash.get(_PHASES, {}).get("call")
    return report is not None and report.failed


def _file_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:200]


__all__ = [
    "CHROMIUM",
    "LAUNCH_ARGS",
    "SCREENSHOTS_ENV",
    "TIMEOUT_MS",
    "VIEWPORT_HEIGHT",
    "VIEWPORT_WIDTH",
    "browser_page",
    "chromium",
    "pytest_runtest_makereport",
    "screenshot",
]
