"""The console under test: the real admin app (claims, parked-event store, the broker) with an
operator and a viewer token, and the steps a person takes in it (log in, go to a page).

``console`` serves the admin app of the test's own namespace and database on a port of its
own; ``log_in(page, console, as_=...)`` logs a browser page in through the login form.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Page

from router.admin.app import create_admin_app
from router.parked.open import parked_store_from_url
from router.settings import Settings
from tests.conftest import TOKEN, Client

#: The tokens file's operator and viewer (the single ``TOKEN`` is the operator ``admin``).
OPERATOR_TOKEN = "oncall-token-of-at-least-32-characters-0001"
VIEWER_TOKEN = "grafana-token-of-at-least-32-characters-0002"
TOKENS = {"oncall": OPERATOR_TOKEN, "grafana": VIEWER_TOKEN, "admin": TOKEN}


@dataclass
class Console:
    """A running admin app: its base URL, its settings, and an admin API client of it."""

    url: str
    settings: Settings
    api: Client

    def page(self, path: str) -> str:
        """The absolute URL of a console path (``/console/...``)."""
        return self.url + path


@pytest.fixture
async def console(admin_settings: Settings, tmp_path: Path) -> AsyncIterator[Console]:
    """The admin app (and its console) on the test's namespace and database, with the tokens
    of an operator (``oncall``), a viewer (``grafana``) and the single token (``admin``)."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"oncall operator {OPERATOR_TOKEN}\ngrafana viewer {VIEWER_TOKEN}\n")
    settings = replace(admin_settings, admin_tokens_file=str(tokens))
    store = parked_store_from_url(settings.database_url.reveal())
    await store.open()
    try:
        await store.upgrade()
    finally:
        await store.close()
    api = Client(TestServer(create_admin_app(settings)))
    await api.start_server()
    try:
        yield Console(str(api.make_url("")).rstrip("/"), settings, api)
    finally:
        await api.close()


async def log_in(page: Page, console: Console, *, as_: str = "oncall") -> None:
    """Log ``page`` in through the login form, with the token of ``as_``; it lands on the
    overview."""
    await page.goto(console.page("/console/login"))
    await page.get_by_label("Admin token").fill(TOKENS[as_])
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(console.page("/console/"))


__all__ = ["OPERATOR_TOKEN", "TOKENS", "VIEWER_TOKEN", "Console", "console", "log_in"]
