"""Searching the archive through the admin API and the command line: rows without payloads,
one event with its payload masked, revealed only by an operator (and audited)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestServer

from router.admin.app import create_admin_app
from router.cli.main import main
from router.contract.examples import example_body
from router.settings import Settings
from tests.conftest import AUTH, Client, MakeAdmin, archive_on
from tests.environment import no_router_environment
from tests.test_history_archive import post_event

pytestmark = pytest.mark.broker


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings with the archive on, as the router runs by default."""
    return archive_on(settings)


__all__ = ["no_router_environment"]

VIEWER_TOKEN = "viewer-token-" + "v" * 32
PHONE, EMAIL = "+15555555555", "test@gmail.com"


@pytest.fixture
def tokens_file(tmp_path: Path) -> str:
    path = tmp_path / "tokens"
    path.write_text(f"grafana viewer {VIEWER_TOKEN}\n")
    return str(path)


async def test_the_api_lists_a_window_and_shows_one_event_masked_unless_an_operator_reveals(
    ingress: Client, make_admin: MakeAdmin
) -> None:
    """Given three events in the archive, when the API lists the last minute of sms.*, then
    the two SMS events come, oldest first, without payloads; when one is shown, its payload's
    phone and email are masked; an operator's reveal shows them and is in the audit log."""
    body = example_body("sms.sent", "acme")
    sent = await post_event(ingress, "sms.sent", body=body)
    await post_event(ingress, "email.opened")
    subscribed = await post_event(ingress, "sms.subscribed")
    admin = await make_admin()

    listed = await admin.get(
        "/admin/history", params={"since": "1m", "type": "sms.*"}, headers=AUTH
    )
    assert listed.status == 200
    found = await listed.json()
    assert [e["message_id"] for e in found["events"]] == [sent, subscribed]
    assert found["more"] is False and found["filter"]["type"] == "sms.*"
    assert PHONE not in json.dumps(found)

    shown = await admin.get(f"/admin/history/{sent}", params={"since": "1m"}, headers=AUTH)
    masked = await shown.json()
    assert masked["type"] == "sms.sent" and masked["company"] == "acme"
    assert PHONE not in json.dumps(masked) and EMAIL not in json.dumps(masked)

    revealed = await admin.get(
        f"/admin/history/{sent}", params={"since": "1m", "reveal": "1"}, headers=AUTH
    )
    assert (await revealed.json())["payload"] == orjson.loads(body)
    audit = await (await admin.get("/admin/audit", headers=AUTH)).json()
    assert audit["audit"][0]["action"] == "reveal"
    assert audit["audit"][0]["filter"]["message_id"] == sent


async def test_a_viewer_may_search_but_not_reveal(
    ingress: Client, admin_settings: Settings, tokens_file: str
) -> None:
    """Given a viewer's token, the viewer lists and shows (masked), and gets 403 revealing."""
    sent = await post_event(ingress, "sms.sent")
    settings = replace(admin_settings, admin_tokens_file=tokens_file)
    async with Client(TestServer(create_admin_app(settings))) as admin:
        viewer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
        shown = await admin.get(f"/admin/history/{sent}", params={"since": "1m"}, headers=viewer)
        assert shown.status == 200
        refused = await admin.get(
            f"/admin/history/{sent}", params={"since": "1m", "reveal": "1"}, headers=viewer
        )
        assert refused.status == 403
        assert "only an operator may reveal" in (await refused.json())["reason"]


async def test_the_api_refuses_a_search_it_cannot_run_naming_why(
    ingress: Client, make_admin: MakeAdmin
) -> None:
    """Without since, with an unknown parameter, or for a message id not in the window, the
    API says so: 400, 400, 404."""
    admin = await make_admin()
    missing = await admin.get("/admin/history", headers=AUTH)
    unknown = await admin.get("/admin/history", params={"since": "1h", "app": "x"}, headers=AUTH)
    absent = await admin.get("/admin/history/nope", params={"since": "1m"}, headers=AUTH)

    assert (missing.status, unknown.status, absent.status) == (400, 400, 404)
    assert "since" in (await missing.json())["error"]


async def test_the_cli_lists_and_shows_archived_events(
    ingress: Client,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Given two events in the archive, ``history list --json`` gives both, ``history list``
    a table, ``history show`` one event masked; an unknown time is wrong usage (exit 2)."""
    sent = await post_event(ingress, "sms.sent")
    opened = await post_event(ingress, "email.opened")
    where = ["--amqp-url", settings.amqp_url.reveal(), "--namespace", settings.namespace]
    capsys.readouterr()  # (the ingress's log lines)

    def cli(*args: str) -> int:
        return main(["history", *args, *where])

    assert await asyncio.to_thread(cli, "list", "--since", "1m", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["message_id"] for e in listed["events"]] == [sent, opened]

    assert await asyncio.to_thread(cli, "list", "--since", "1m", "--type", "email.*") == 0
    table = capsys.readouterr().out
    assert "1 event of 2 read" in table and "email.opened" in table and "sms.sent" not in table

    assert await asyncio.to_thread(cli, "show", sent, "--since", "1m") == 0
    shown = capsys.readouterr().out
    assert "sms.sent" in shown and "masked; --reveal to show" in shown and PHONE not in shown

    assert await asyncio.to_thread(cli, "list", "--since", "last tuesday") == 2
    assert "since" in capsys.readouterr().err
