"""Pausing and resuming an application by hand (issue 31, item 2): kept in the claims database
(SQLite and the real PostgreSQL) across restarts, told to every replica on the control exchange
with a confirm, audited; the admin API, the command line and the console page in Chromium; the
breaker and the queue read from the real RabbitMQ; the paused gauges the alert rule reads."""

from __future__ import annotations

import asyncio
import getpass
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractQueue, AbstractRobustConnection
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from router.admin.app import create_admin_app
from router.admin.client import AdminClient
from router.apps.metrics import AppMetrics, refresh
from router.apps.model import AppState, check_reason, decide
from router.apps.open import app_store_from_url
from router.apps.postgres import PostgresAppStore
from router.apps.sqlite import SqliteAppStore
from router.apps.store import AppStateStore
from router.cli.main import main
from router.contract.control import ControlKind, ControlMessage
from router.contract.names import Names
from router.errors import InvalidInput
from router.settings import Settings
from tests.browser import screenshot
from tests.conftest import AUTH, TOKEN, Client, MakeAdmin
from tests.console_steps import OPERATOR_TOKEN, VIEWER_TOKEN, Console, log_in
from tests.databases import POSTGRES_URL
from tests.environment import no_router_environment

pytest.importorskip("playwright", reason="playwright is not installed: pip install -e '.[dev]'")
from playwright.async_api import Page, expect

pytestmark = [pytest.mark.broker, pytest.mark.database]

#: The longest any one wait in these tests may take (seconds).
TIMEOUT = 30.0
NOW = datetime(2026, 12, 7, 8, 15, tzinfo=UTC)
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_LOG = re.compile(r"\d{4}-\d\d-\d\d[ T]")


# -- steps ----------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def store_place(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A place no other test uses: a SQLite file yet to be made, or a PostgreSQL table."""
    if request.param == "sqlite":
        yield str(tmp_path / "not-yet" / "router.db")
        return
    table = f"test_apps_{uuid.uuid4().hex[:16]}"
    yield table
    conn = await asyncpg.connect(POSTGRES_URL, timeout=TIMEOUT)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}", timeout=TIMEOUT)
    finally:
        await conn.close(timeout=TIMEOUT)


async def opened(place: str) -> AppStateStore:
    """A store on ``place``, opened: another router process on the same database."""
    store: AppStateStore
    if place.endswith(".db"):
        store = SqliteAppStore(place)
    else:
        store = PostgresAppStore(POSTGRES_URL, table=place)
    async with asyncio.timeout(TIMEOUT):
        await store.open()
    return store


async def control_queue(amqp: AbstractRobustConnection, names: Names, app: str) -> AbstractQueue:
    """A queue of the test's own bound to the control exchange with ``app``: what one replica
    of the application hears."""
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(
        names.control_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, app)
    return queue


async def heard(queue: AbstractQueue) -> ControlMessage:
    """The next control message ``queue`` receives (waiting for it)."""
    async with asyncio.timeout(TIMEOUT):
        while (message := await queue.get(no_ack=True, fail=False)) is None:
            await asyncio.sleep(0.02)
    read = ControlMessage.from_bytes(message.body)
    assert read is not None, message.body
    return read


async def answer(response: Any, status: int = 200) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def logged_in(console: Console, token: str) -> str:
    """The console API client logged in with ``token``; the session's CSRF token."""
    login = await console.api.post("/console/login", data={"token": token})
    assert login.status == 200, await login.text()
    page = await console.api.get("/console/apps")
    found = _CSRF.search(await page.text())
    assert page.status == 200 and found is not None
    return found.group(1)


# -- the decision and the store ---------------------------------------------------------------


def test_a_pause_keeps_its_first_time_who_and_why() -> None:
    """Given crm paused by alice at 08:15 because the CRM is down
    When bob pauses it again, and then resumes it
    Then the second pause changes nothing; the resume is bob's, with no reason."""
    running = AppState("crm")
    paused = decide(running, paused=True, by="alice", reason="CRM down", at=NOW)
    assert paused == AppState("crm", True, NOW, "alice", "CRM down")
    later = NOW + timedelta(minutes=5)
    assert decide(paused, paused=True, by="bob", reason="again", at=later) is paused
    assert decide(paused, paused=False, by="bob", reason="x", at=later) == AppState(
        "crm", False, later, "bob", ""
    )
    assert paused.paused_seconds(later) == 300 and running.paused_seconds(later) == 0
    assert check_reason("  CRM\n down ") == "CRM down"
    with pytest.raises(InvalidInput, match="reason"):
        check_reason("x" * 501)


async def test_a_pause_outlives_the_process_that_stored_it(store_place: str) -> None:
    """Given a store on a fresh database, where crm was never paused
    When one router pauses crm and another (a new store on the same database) reads it
    Then the other sees it paused since then, by whom and why; after a resume, running."""
    first = await opened(store_place)
    assert await first.get("crm") == AppState("crm") and await first.list() == []
    change = await first.change("crm", paused=True, by="alice", reason="CRM down", at=NOW)
    assert change.changed and change.after == AppState("crm", True, NOW, "alice", "CRM down")
    await first.close()

    second = await opened(store_place)
    assert await second.list() == [change.after]
    again = await second.change("crm", paused=True, by="bob", reason="", at=NOW)
    assert not again.changed and again.after == change.after
    resumed = await second.change("crm", paused=False, by="bob", reason="", at=NOW)
    assert resumed.changed and await second.get("crm") == AppState("crm", False, NOW, "bob", "")
    await second.close()


async def test_two_routers_pausing_at_once_change_it_once(store_place: str) -> None:
    """Given two routers on the same database
    When both pause crm at the same moment, ten times over on fresh applications
    Then for each application exactly one of them changed it."""
    a, b = await opened(store_place), await opened(store_place)
    for n in range(10):
        app = f"app-{n}"
        changes = await asyncio.gather(
            a.change(app, paused=True, by="a", reason="", at=NOW),
            b.change(app, paused=True, by="b", reason="", at=NOW),
        )
        assert sorted(c.changed for c in changes) == [False, True]
    await a.close()
    await b.close()


def test_the_store_lives_where_the_claims_do(tmp_path: Path) -> None:
    """Given the claims' database URLs
    Then the application states go to the same SQLite file or PostgreSQL database."""
    sqlite = app_store_from_url(f"sqlite:///{tmp_path}/router.db")
    assert isinstance(sqlite, SqliteAppStore) and sqlite.path == tmp_path / "router.db"
    assert isinstance(app_store_from_url(POSTGRES_URL), PostgresAppStore)
    with pytest.raises(InvalidInput, match="unsupported database URL"):
        app_store_from_url("mysql://db/x")


async def test_the_gauges_show_who_is_paused_and_for_how_long(tmp_path: Path) -> None:
    """Given crm paused ten minutes ago and billing resumed
    When the gauges are refreshed from the store
    Then crm reads paused (1) for about 600 s and billing 0 and 0."""
    store = await opened(str(tmp_path / "router.db"))
    ago = datetime.now(UTC) - timedelta(minutes=10)
    await store.change("crm", paused=True, by="alice", reason="", at=ago)
    await store.change("billing", paused=True, by="alice", reason="", at=ago)
    await store.change("billing", paused=False, by="alice", reason="", at=ago)
    registry = CollectorRegistry()
    refreshing = asyncio.create_task(refresh(store, AppMetrics(registry), interval=0.05))
    try:
        async with asyncio.timeout(TIMEOUT):
            while registry.get_sample_value("attentive_router_app_paused", {"app": "crm"}) is None:
                await asyncio.sleep(0.02)
    finally:
        refreshing.cancel()
    seconds = registry.get_sample_value("attentive_router_app_paused_seconds", {"app": "crm"})
    assert seconds is not None and 600 <= seconds < 600 + TIMEOUT
    assert registry.get_sample_value("attentive_router_app_paused", {"app": "billing"}) == 0
    assert registry.get_sample_value("attentive_router_app_paused_seconds", {"app": "billing"}) == 0
    await store.close()


# -- the admin API ------------------------------------------------------------------------------


async def test_a_pause_is_stored_told_to_every_replica_and_audited(
    make_admin: MakeAdmin, amqp: AbstractRobustConnection, names: Names
) -> None:
    """Given a router, and a replica of crm listening on the control exchange
    When an operator pauses crm because its CRM is down
    Then the answer says paused, changed and notified; the replica hears a pause saying who and
    why; the router says crm is paused, also after it restarts; the audit log has the pause
    When the operator resumes it
    Then the replica hears a resume, and crm runs again (audited too)."""
    admin = await make_admin()
    replica = await control_queue(amqp, names, "crm")
    paused = await answer(
        await admin.post("/admin/apps/crm/pause", json={"reason": "CRM down"}, headers=AUTH)
    )
    assert paused["paused"] and paused["changed"] and paused["notified"]
    assert (paused["app"], paused["by"], paused["reason"]) == ("crm", "admin", "CRM down")
    message = await heard(replica)
    assert (message.kind, message.app, message.by, message.reason) == (
        ControlKind.PAUSE, "crm", "admin", "CRM down"
    )  # fmt: skip

    restarted = await make_admin()
    state = await answer(await restarted.get("/admin/apps/crm", headers=AUTH))
    assert state["paused"] and state["since"] == paused["since"] and state["reason"] == "CRM down"
    assert state["breaker"] == "closed" and state["queue"] is None

    resumed = await answer(await restarted.post("/admin/apps/crm/resume", headers=AUTH))
    assert not resumed["paused"] and resumed["changed"] and resumed["notified"]
    assert (await heard(replica)).kind is ControlKind.RESUME
    audit = (await answer(await restarted.get("/admin/audit", headers=AUTH)))["audit"]
    assert [(r["action"], r["who"], r["filter"]) for r in audit[:2]] == [
        ("resume", "admin", {"application": "crm"}),
        ("pause", "admin", {"application": "crm", "reason": "CRM down"}),
    ]


async def test_resuming_a_running_application_is_a_no_op(admin: Client) -> None:
    """Given an application never paused
    When its workers ask about it, and an operator resumes it
    Then it is running (200, not 404), and the resume says nothing changed, auditing nothing
    And a malformed application name is refused with 400."""
    state = await answer(await admin.get("/admin/apps/never-paused", headers=AUTH))
    assert state == {
        "app": "never-paused", "paused": False, "since": None, "by": "", "reason": "",
        "breaker": "closed", "queue": None,
    }  # fmt: skip
    resumed = await answer(await admin.post("/admin/apps/never-paused/resume", headers=AUTH))
    assert not resumed["paused"] and not resumed["changed"]
    assert (await answer(await admin.get("/admin/audit", headers=AUTH)))["audit"] == []
    for bad in ("Not%20An%20App", "crm.dlq", "-x"):
        refused = await admin.post(f"/admin/apps/{bad}/pause", headers=AUTH)
        assert refused.status == 400, bad
    too_long = await admin.post("/admin/apps/crm/pause", json={"reason": "x" * 501}, headers=AUTH)
    assert too_long.status == 400 and "reason" in (await too_long.json())["error"]


async def test_a_pause_holds_when_rabbitmq_cannot_be_told(
    admin_settings: Settings, tmp_path: Path
) -> None:
    """Given a router whose RabbitMQ cannot be reached
    When an operator pauses crm
    Then the pause is stored (200, paused) but not notified, with a warning that says the
    workers take it at their next look; the breaker is unknown."""
    unreachable = replace(admin_settings, amqp_url="amqp://guest:guest@127.0.0.1:1/")
    admin = Client(TestServer(create_admin_app(unreachable)))
    await admin.start_server()
    try:
        paused = await answer(await admin.post("/admin/apps/crm/pause", headers=AUTH))
        assert paused["paused"] and paused["changed"] and not paused["notified"]
        assert "next look" in paused["warning"] and paused["breaker"] == "unknown"
        assert (await answer(await admin.get("/admin/apps/crm", headers=AUTH)))["paused"]
    finally:
        await admin.close()


async def test_the_list_shows_claimed_apps_their_queue_and_an_open_breaker(
    admin: Client, amqp: AbstractRobustConnection, names: Names
) -> None:
    """Given crm holds a claim, three events wait in its queue, and one of its replicas holds
    the probe lock (its breaker is open); billing was paused and never claimed anything
    When the applications are listed, through the client a worker uses too
    Then crm shows running with its breaker open and 3 messages; billing paused, no queue
    When the replica lets the probe lock go
    Then crm's breaker reads closed."""
    granted = await admin.post(
        "/admin/claims", json={"app": "crm", "events": ["sms.*"]}, headers=AUTH
    )
    assert granted.status == 201
    channel = await amqp.channel()
    for _ in range(3):
        await channel.default_exchange.publish(
            aio_pika.Message(b"{}"), routing_key=names.app_queue("crm")
        )
    lock = await channel.declare_queue(names.app_probe_lock("crm"), exclusive=True)
    await answer(await admin.post("/admin/apps/billing/pause", headers=AUTH))

    async with AdminClient(str(admin.make_url("")), TOKEN) as client:
        apps = {a["app"]: a for a in await client.list_apps()}
        assert apps["crm"]["breaker"] == "open" and not apps["crm"]["paused"]
        assert apps["crm"]["queue"] == {"messages": 3, "consumers": 0}
        assert apps["billing"]["paused"] and apps["billing"]["queue"] is None
        await lock.delete()
        assert (await client.app_state("crm"))["breaker"] == "closed"


async def test_a_viewer_may_look_but_not_pause(console: Console) -> None:
    """Given a viewer's token
    When it pauses crm, and resumes it
    Then both are refused with 403 and crm is running; it may still read crm's state."""
    viewer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    for action in ("pause", "resume"):
        refused = await console.api.post(f"/admin/apps/crm/{action}", headers=viewer)
        assert refused.status == 403
    state = await answer(await console.api.get("/admin/apps/crm", headers=viewer))
    assert not state["paused"]


# -- the command line ---------------------------------------------------------------------------


async def test_the_cli_pauses_lists_and_resumes_through_the_admin_api(
    admin: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a router
    When ops run apps pause crm --reason, apps list, apps resume crm, apps resume crm
    Then each says what it did; the list shows crm paused with the reason; the router records
    the login of who ran it beside the token's name; a second resume says it was not paused
    And a malformed name is wrong usage (2), before anything is asked."""
    url = str(admin.make_url("")).rstrip("/")

    def cli(*args: str) -> int:
        return main(["apps", *args, "--admin-url", url, "--token", TOKEN])

    def printed() -> list[str]:
        """What the command printed (the in-process router's log lines left out)."""
        return [line for line in capsys.readouterr().out.splitlines() if not _LOG.match(line)]

    assert await asyncio.to_thread(cli, "pause", "crm", "--reason", "CRM down") == 0
    assert printed()[0].startswith("paused crm: CRM down")
    assert await asyncio.to_thread(cli, "list") == 0
    header, crm = printed()
    assert header.split()[:3] == ["APPLICATION", "STATE", "SINCE"]
    assert crm.split()[:2] == ["crm", "paused"] and crm.endswith("CRM down")
    assert await asyncio.to_thread(cli, "list", "--json") == 0
    assert f'"by":"cli:{getpass.getuser()} via admin"' in "".join(printed())
    assert await asyncio.to_thread(cli, "resume", "crm") == 0
    assert printed() == ["resumed crm"]
    assert await asyncio.to_thread(cli, "resume", "crm") == 0
    assert printed() == ["crm was not paused: nothing to resume"]
    assert await asyncio.to_thread(cli, "pause", "Bad Name") == 2
    assert "invalid application name" in capsys.readouterr().err


# -- the console --------------------------------------------------------------------------------


@pytest.mark.browser
async def test_an_operator_pauses_and_resumes_in_the_console(
    console: Console, browser_page: Page, amqp: AbstractRobustConnection
) -> None:
    """Given crm and billing hold claims, and a replica of crm listens on the control exchange
    When an operator pauses crm from the Applications page, saying why
    Then the page says so, crm's row shows paused by oncall with the reason; the replica hears it
    When the operator resumes crm
    Then crm runs again and the replica hears the resume."""
    for app in ("crm", "billing"):
        body = {"app": app, "events": ["sms.sent" if app == "crm" else "email.sent"]}
        assert (await console.api.post("/admin/claims", json=body, headers=AUTH)).status == 201
    replica = await control_queue(amqp, console.settings.names, "crm")
    page = browser_page
    await log_in(page, console, as_="oncall")
    await page.get_by_role("link", name="Applications").click()
    await expect(page.get_by_role("heading", name="Applications")).to_be_visible()

    await page.get_by_label("Why pause crm").fill("CRM answers 503 (INC-42)")
    await page.get_by_role("button", name="Pause crm").click()
    await page.wait_for_url(re.compile(r"/console/apps\?done=paused&app=crm$"))
    await expect(page.locator("p.ok")).to_contain_text("Paused crm")
    row = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="crm"))
    await expect(row).to_contain_text("paused")
    await expect(row).to_contain_text("oncall")
    await expect(row).to_contain_text("CRM answers 503 (INC-42)")
    assert (await heard(replica)).kind is ControlKind.PAUSE
    await screenshot(page, "apps")

    await page.get_by_role("button", name="Resume crm").click()
    await page.wait_for_url(re.compile(r"/console/apps\?done=resumed&app=crm$"))
    await expect(row).to_contain_text("running")
    assert (await heard(replica)).kind is ControlKind.RESUME


@pytest.mark.browser
async def test_a_viewer_sees_the_state_but_no_controls(
    console: Console, browser_page: Page
) -> None:
    """Given crm paused by an operator
    When a viewer opens the Applications page
    Then they see crm paused, with no Pause or Resume button and no reason field."""
    await answer(await console.api.post("/admin/apps/crm/pause", headers=AUTH))
    page = browser_page
    await log_in(page, console, as_="grafana")
    await page.goto(console.page("/console/apps"))
    await expect(page.get_by_role("row").filter(has_text="crm")).to_contain_text("paused")
    await expect(page.get_by_role("button", name=re.compile("^(Pause|Resume)"))).to_have_count(0)
    await expect(page.get_by_role("textbox")).to_have_count(0)


async def test_a_viewers_or_a_forged_change_in_the_console_is_refused(console: Console) -> None:
    """Given a viewer's console session, and then an operator's without its CSRF token
    When each posts a pause of crm
    Then both are refused with 403, and crm is running."""
    csrf = await logged_in(console, VIEWER_TOKEN)
    viewer = await console.api.post("/console/apps/crm/pause", data={"csrf_token": csrf})
    assert viewer.status == 403
    await logged_in(console, OPERATOR_TOKEN)
    forged = await console.api.post("/console/apps/crm/pause", data={"csrf_token": "forged"})
    assert forged.status == 403
    assert not (await answer(await console.api.get("/admin/apps/crm", headers=AUTH)))["paused"]


__all__ = ["no_router_environment"]
