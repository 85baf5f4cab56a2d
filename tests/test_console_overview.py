"""The overview, in a real browser against the real router parts: the ingress's readiness
from its own probe, RabbitMQ's node (through the management API), and per application its
queue, consumers, retry tiers and parked events; it refreshes by itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection
from playwright.async_api import Page, expect

from router.amqp import topology
from router.contract.names import Names
from router.ingress.service import Ingress
from router.parked.open import parked_store_from_url
from router.settings import Settings
from tests.browser import screenshot
from tests.conftest import AUTH, TOKEN
from tests.console_steps import Console, log_in
from tests.environment import no_router_environment
from tests.parked_stores import body_of, dead_letter
from tests.test_console_broker import needs_management
from tests.wire import free_port

#: ``no_router_environment``, autouse: no ROUTER_* variable of the shell counts.
__all__ = ["no_router_environment"]

pytestmark = [pytest.mark.broker, pytest.mark.browser]

MANAGEMENT_URL = "http://guest:guest@127.0.0.1:15672"


@pytest.fixture
def admin_settings(settings: Settings, tmp_path: Path) -> Settings:
    """The console's settings: the management API for nodes and rates, and the internal
    listener of an ingress of the test's own (see ``ingress_running``)."""
    return replace(
        settings,
        admin_token=TOKEN,
        database_url=f"sqlite:///{tmp_path / 'router.db'}",
        rabbitmq_management_url=MANAGEMENT_URL,
        internal_host="127.0.0.1",
        internal_port=free_port(),
    )


@pytest.fixture
async def ingress_running(admin_settings: Settings) -> AsyncIterator[Ingress]:
    """An ingress whose internal listener is where the console probes it."""
    ingress = Ingress(replace(admin_settings, host="127.0.0.1", port=0))
    await ingress.start()
    await ingress.broker.wait_ready(timeout=15)
    yield ingress
    await ingress.stop()


async def _park(console: Console, app: str, count: int, *, age: timedelta) -> None:
    store = parked_store_from_url(console.settings.database_url.reveal())
    await store.open()
    try:
        at = datetime.now(UTC) - age
        entries = [
            dead_letter(body_of("sms.sent", n=n), app=app, message_id=f"m-{n}", at=at)
            for n in range(count)
        ]
        await store.add_many(entries)
    finally:
        await store.close()


@needs_management
async def test_the_overview_shows_how_events_flow_and_what_is_parked(
    browser_page: Page,
    console: Console,
    ingress_running: Ingress,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    """Given an application that claimed sms.*, with a consumer on its queue, two retry tiers,
    three events waiting and twelve parked since two hours ago,
    when on-call opens the overview,
    then it shows the ingress ready, the broker's node running without alarms, and the
    application's row: 3 queued, 1 consumer, both tiers, 12 parked, oldest 2 h ago."""
    claimed = await console.api.post(
        "/admin/claims", json={"app": "crm-sync", "events": ["sms.*"]}, headers=AUTH
    )
    assert claimed.status == 201
    channel = await amqp.channel()
    for delay in (5000, 30000):
        await channel.declare_queue(names.app_retry_queue("crm-sync", delay), durable=True)
    queue = await channel.declare_queue(names.app_queue("crm-sync"), passive=True)
    for n in range(3):
        await channel.default_exchange.publish(
            aio_pika.Message(b"{}", message_id=f"q-{n}"), routing_key=queue.name
        )
    listener = await (await amqp.channel()).declare_queue(queue.name, passive=True)
    tag = await listener.consume(_never_acks, no_ack=False)
    await _park(console, "crm-sync", 12, age=timedelta(hours=2))

    await log_in(browser_page, console)

    row = browser_page.get_by_role("row", name="crm-sync")
    await expect(browser_page.get_by_text("ready", exact=True)).to_be_visible()
    await expect(browser_page.get_by_text("connected to RabbitMQ", exact=True)).to_be_visible()
    await expect(browser_page.get_by_role("cell", name="rabbit@", exact=False)).to_be_visible()
    await expect(row.get_by_role("link", name="12")).to_be_visible()
    await expect(row).to_contain_text("2 h ago")
    # the management API's figures lag by a few seconds: the overview catches up by itself
    await expect(row).to_contain_text("5000ms: 0", timeout=30_000)
    await expect(row).to_contain_text("30000ms: 0")
    await expect(row.get_by_role("cell").nth(0)).to_have_text("3", timeout=30_000)
    await expect(row.get_by_role("cell").nth(1)).to_have_text("1", timeout=30_000)
    await screenshot(browser_page, "overview")
    await listener.cancel(tag)
    await topology.delete_app(channel, names, "crm-sync", (5000, 30000))


async def _never_acks(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """A consumer that holds what it gets (the overview counts it as a consumer)."""


async def test_the_overview_refreshes_by_itself(browser_page: Page, console: Console) -> None:
    """Given the overview open with no application yet (it says what to do),
    when an application claims events meanwhile,
    then its row appears without the page being reloaded."""
    await log_in(browser_page, console, as_="grafana")
    await expect(browser_page.get_by_text("No application has claimed events yet")).to_be_visible()
    marker = await browser_page.evaluate("() => (window.__loaded = Math.random())")

    claimed = await console.api.post(
        "/admin/claims", json={"app": "late-app", "events": ["email.opened"]}, headers=AUTH
    )
    assert claimed.status == 201

    await expect(browser_page.get_by_role("row", name="late-app")).to_be_visible(timeout=20_000)
    assert await browser_page.evaluate("() => window.__loaded") == marker


async def test_the_overview_says_what_it_cannot_see(browser_page: Page, console: Console) -> None:
    """Given no ingress answering the probe (none runs in this test),
    when on-call opens the overview,
    then the ingress is shown not ready, with why, and the rest of the page is still there."""
    await log_in(browser_page, console)

    await expect(browser_page.get_by_text("not ready", exact=True)).to_be_visible()
    await expect(browser_page.get_by_text("does not answer on 127.0.0.1")).to_be_visible()
    await expect(browser_page.get_by_role("heading", name="Applications")).to_be_visible()
