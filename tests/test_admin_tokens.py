"""Named admin tokens with roles: the tokens file, the single token as the operator ``admin``,
and the admin API telling a viewer from an operator (401 for an unknown token, 403 with the
reason for a viewer on an operator's route), with the caller's name on the jobs it creates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from router.admin.app import create_admin_app
from router.admin.tokens import Caller, Role, load_tokens, parse_tokens
from router.errors import ConfigError
from router.parked.open import parked_store_from_url
from router.settings import Settings
from tests.conftest import AUTH, TOKEN, Client
from tests.parked_stores import dead_letter

VIEWER_TOKEN = "viewer-token-" + "v" * 32
OPERATOR_TOKEN = "operator-token-" + "o" * 32
SHORT_TOKEN = "short-" + "s" * 25
TOKENS_FILE = f"""\
# who        role       token
grafana      viewer     {VIEWER_TOKEN}

oncall       operator   {OPERATOR_TOKEN}   # the pager's
"""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the tokens file -----------------------------------------------------------------------------


def test_a_tokens_file_names_each_token_and_its_role() -> None:
    tokens = parse_tokens(TOKENS_FILE)

    assert [(t.name, t.role) for t in tokens] == [
        ("grafana", Role.VIEWER),
        ("oncall", Role.OPERATOR),
    ]
    assert VIEWER_TOKEN not in repr(tokens) and OPERATOR_TOKEN not in repr(tokens)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (f"grafana viewer {VIEWER_TOKEN} extra", "expected 'name role token'"),
        (f"grafana {VIEWER_TOKEN}", "expected 'name role token'"),
        (f"grafana admin {VIEWER_TOKEN}", "the role is viewer or operator"),
        (f"gra/fana viewer {VIEWER_TOKEN}", "a name is letters"),
        (f"grafana viewer {SHORT_TOKEN}", "fewer than 32 characters"),
        (f"oncall viewer {VIEWER_TOKEN}", "the name 'oncall' is given twice"),
        (f"other viewer {OPERATOR_TOKEN}", "the token of 'other' is another's too"),
    ],
)
def test_a_bad_line_is_refused_naming_its_line_never_the_token(line: str, problem: str) -> None:
    # Given a file whose third line is bad
    text = f"# tokens\noncall operator {OPERATOR_TOKEN}\n{line}\n"

    # When it is read, Then the error names the line (or the clash), and shows no token
    with pytest.raises(ConfigError) as refused:
        parse_tokens(text, source="ROUTER_ADMIN_TOKENS_FILE (/etc/tokens)")
    message = str(refused.value)
    assert problem in message
    assert message.startswith("ROUTER_ADMIN_TOKENS_FILE (/etc/tokens)")
    if "twice" not in problem and "another's" not in problem:
        assert "line 3" in message
    for token in (VIEWER_TOKEN, OPERATOR_TOKEN, SHORT_TOKEN):
        assert token not in message


def test_the_single_token_is_an_operator_named_admin_beside_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(TOKENS_FILE, encoding="utf-8")
    env = {"ROUTER_ADMIN_TOKENS_FILE": str(path), "ROUTER_ADMIN_TOKEN": TOKEN}

    tokens = load_tokens(Settings.from_env(env))

    assert tokens.caller(VIEWER_TOKEN) == Caller("grafana", Role.VIEWER)
    assert tokens.caller(OPERATOR_TOKEN) == Caller("oncall", Role.OPERATOR)
    assert tokens.caller(TOKEN) == Caller("admin", Role.OPERATOR)
    assert tokens.caller(VIEWER_TOKEN[:-1]) is None
    assert tokens.caller("") is None
    assert load_tokens(Settings.from_env({"ROUTER_ADMIN_TOKEN": TOKEN})).caller(TOKEN) == Caller(
        "admin", Role.OPERATOR
    )


def test_no_token_at_all_or_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no admin token"):
        load_tokens(Settings.from_env({}))
    missing = Settings.from_env({"ROUTER_ADMIN_TOKENS_FILE": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match=r"ROUTER_ADMIN_TOKENS_FILE .*cannot read it"):
        load_tokens(missing)
    empty = tmp_path / "empty"
    empty.write_text("# nobody yet\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds no token"):
        load_tokens(Settings.from_env({"ROUTER_ADMIN_TOKENS_FILE": str(empty)}))


# -- roles in the admin API ----------------------------------------------------------------------


@pytest.fixture
async def roles_admin(admin_settings: Settings, tmp_path: Path) -> AsyncIterator[Client]:
    """The admin API with the tokens file and the single token, on a store holding one dead
    letter of the application ``alerts``."""
    path = tmp_path / "tokens"
    path.write_text(TOKENS_FILE, encoding="utf-8")
    database = tmp_path / "router.db"
    store = parked_store_from_url(f"sqlite:///{database}")
    await store.open()
    await store.upgrade()
    await store.add_many([dead_letter(b'{"phone": "+15555555555"}')])
    await store.close()
    settings = replace(
        admin_settings, admin_tokens_file=str(path), database_url=f"sqlite:///{database}"
    )
    client = Client(TestServer(create_admin_app(settings)))
    await client.start_server()
    yield client
    await client.close()


@pytest.mark.broker
async def test_a_viewer_reads_and_an_operator_changes(roles_admin: Client) -> None:
    admin = roles_admin

    # An unknown token (or none) is 401, whatever the path
    for headers in ({}, bearer("nobody-" + "x" * 40), bearer(VIEWER_TOKEN + "x")):
        response = await admin.get("/admin/claims", headers=headers)
        assert response.status == 401

    # A viewer lists claims, parked entries (masked), facets and jobs
    for path in (
        "/admin/claims",
        "/admin/dlq/alerts",
        "/admin/dlq/alerts/facets",
        "/admin/jobs",
    ):
        response = await admin.get(path, headers=bearer(VIEWER_TOKEN))
        assert response.status == 200, path
    response = await admin.get("/admin/dlq/alerts/m-1", headers=bearer(VIEWER_TOKEN))
    assert (await response.json())["payload"] == {"phone": "+1******5555"}

    # But every change, and a reveal, is 403 with the reason
    for method, path, body in (
        ("POST", "/admin/claims", {"app": "alerts", "events": ["sms.*"]}),
        ("DELETE", "/admin/claims/1", None),
        ("POST", "/admin/dlq/alerts/replay", {}),
        ("POST", "/admin/dlq/alerts/purge", {"confirm": True}),
        ("POST", "/admin/jobs/1/cancel", None),
        ("GET", "/admin/dlq/alerts/m-1?reveal=1", None),
    ):
        response = await admin.request(method, path, json=body, headers=bearer(VIEWER_TOKEN))
        assert response.status == 403, (method, path)
        answer = await response.json()
        assert answer["error"] == "forbidden"
        assert answer["reason"].startswith("grafana is a viewer: only an operator may ")

    # An operator (named in the file, or the single token as admin) may, and is named as
    # the one who asked
    response = await admin.get("/admin/dlq/alerts/m-1?reveal=1", headers=bearer(OPERATOR_TOKEN))
    assert (await response.json())["payload"] == {"phone": "+15555555555"}
    response = await admin.post("/admin/dlq/alerts/purge", json={}, headers=bearer(OPERATOR_TOKEN))
    assert response.status == 202
    job = await response.json()
    assert (job["requested_by"], job["kind"], job["dry_run"], job["matched"]) == (
        "oncall",
        "purge",
        True,
        1,
    )
    response = await admin.post("/admin/dlq/alerts/replay", json={}, headers=AUTH)
    assert response.status == 202
    assert (await response.json())["requested_by"] == "admin"
    response = await admin.post(f"/admin/jobs/{job['id']}/cancel", headers=AUTH)
    assert response.status == 200
    assert ((await response.json())["state"], (await response.json())["cancelled_by"]) == (
        "cancelled",
        "admin",
    )

    # And the audit log, which a viewer may read, says who revealed and who cancelled
    response = await admin.get("/admin/audit", headers=bearer(VIEWER_TOKEN))
    assert response.status == 200
    records = (await response.json())["audit"]
    assert [(r["action"], r["who"]) for r in records] == [("cancel", "admin"), ("reveal", "oncall")]
    response = await admin.get(f"/admin/audit?job={job['id']}", headers=bearer(VIEWER_TOKEN))
    assert [r["action"] for r in (await response.json())["audit"]] == ["cancel"]
    response = await admin.get("/admin/audit?who=me", headers=bearer(VIEWER_TOKEN))
    assert response.status == 400
