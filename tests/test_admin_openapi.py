"""The admin API's OpenAPI document: every route in it, served without a token, and the API
as schemathesis (someone else's tool) finds it against the document: with a token, no 5xx,
every answer as documented, bad input a 400 that says why; without one, 401 everywhere.

Schemathesis runs as its command line does, against the live admin app of the ``admin``
fixture (a SQLite file and the test's own RabbitMQ namespace, so the replays, purges, claims
and pauses it makes up touch nothing else), a few examples per operation.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from router.admin.app import create_admin_app
from router.admin.deadletters import STORE
from router.admin.openapi import DOCUMENT_PATH, document
from router.console.guard import PREFIX as CONSOLE_PREFIX
from router.settings import Settings
from tests.conftest import AUTH, TOKEN, Client, archive_on
from tests.parked_stores import body_of, dead_letter
from tests.test_history_archive import post_event

pytestmark = pytest.mark.broker


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings with the archive on, so the history routes have one to read."""
    return archive_on(settings)


SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
#: Examples per operation and phase: enough to find the odd input, few enough for seconds.
MAX_EXAMPLES = 4
#: Schemathesis's phases: the documented examples; the boundaries of every parameter and body
#: field, each left out, and the methods a path does not take (coverage); random valid and
#: invalid input per operation (fuzzing); then calls that follow answers (a job created, then
#: shown or cancelled: stateful).
PHASES = "examples,coverage,fuzzing,stateful"
#: The longest a run may take before the test gives up on it (seconds; a bound, not a figure).
RUN_TIMEOUT = 180
#: The message id of the dead letter the test parks.
PARKED_ID = "m-1"
#: What a run checks of every answer (schemathesis's own checks).
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "ignored_auth",
    "unsupported_method",
)
# Not allow_header_conformance: a 405's Allow lists every method that URL answers, and
# /admin/dlq/APP/purge also names the entry "purge" to GET /admin/dlq/{app}/{ref}, so GET is
# rightly in it though the purge template has only POST.


def _routes_of(app: web.Application) -> set[tuple[str, str]]:
    """The (method, path) of every route the admin app serves itself (not the console's)."""
    found = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX):
            continue  # HEAD is GET's; the console is pages, with sessions of its own
        found.add((route.method, path))
    return found


def test_every_route_the_app_serves_is_in_the_document(admin_settings: Settings) -> None:
    app = create_admin_app(admin_settings)

    paths = document(app)["paths"]
    documented = {(method.upper(), path) for path, ops in paths.items() for method in ops}

    assert _routes_of(app) == documented
    assert ("POST", "/admin/history/replay") in documented
    assert ("GET", "/admin/dlq/{app}/{ref}") in documented


def test_an_operators_route_says_so_and_every_route_asks_for_the_bearer_token(
    admin_settings: Settings,
) -> None:
    doc = document(create_admin_app(admin_settings))

    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearer": []}]
    purge = doc["paths"]["/admin/dlq/{app}/purge"]["post"]
    assert set(purge["responses"]) >= {"202", "400", "401", "403", "503"}
    assert purge["requestBody"]["content"]["application/json"]["schema"]["properties"].keys() == {
        "filter",
        "confirm",
    }
    assert "403" not in doc["paths"]["/admin/claims"]["get"]["responses"]
    assert doc["paths"][DOCUMENT_PATH]["get"]["security"] == []


def test_the_document_is_the_same_for_every_deployment(admin_settings: Settings) -> None:
    """Nothing of a deployment is in it (docs/security.md says why it needs no token): two
    with other namespaces, tokens and databases describe themselves alike."""
    other = replace(
        admin_settings,
        namespace="elsewhere",
        admin_token="another-token-of-at-least-32-characters",
        database_url="sqlite:////tmp/elsewhere.db",
    )

    ours, theirs = document(create_admin_app(admin_settings)), document(create_admin_app(other))

    assert ours == theirs
    assert admin_settings.namespace not in orjson.dumps(ours).decode()


async def test_the_document_is_served_without_a_token(admin: Client) -> None:
    answer = await admin.get(DOCUMENT_PATH)

    assert answer.status == 200
    served = await answer.json()
    assert served["openapi"] == "3.1.0"
    assert TOKEN not in await answer.text()
    assert (await admin.get("/admin/claims")).status == 401


async def test_what_schemathesis_once_found_taken_is_refused_with_the_reason(
    admin: Client,
) -> None:
    """Input the routes once took without a word (schemathesis's boundary cases found it) is
    refused with 400 naming what is wrong, and changes nothing; a method a path does not take
    is answered 405 with the methods it does."""
    refused = {
        "an unknown field of a pause": await admin.post(
            "/admin/apps/alerts/pause", json={"reasn": "a typo"}, headers=AUTH
        ),
        "a message_id filter that is an object": await admin.post(
            "/admin/dlq/alerts/purge", json={"filter": {"message_id": {}}}, headers=AUTH
        ),
        "a limit given twice": await admin.get("/admin/jobs?limit=5&limit=7", headers=AUTH),
        "a misspelt parameter": await admin.get("/admin/claims?ap=alerts", headers=AUTH),
    }

    errors = {what: (answer.status, await answer.json()) for what, answer in refused.items()}
    assert errors == {
        "an unknown field of a pause": (
            400,
            {"error": "unknown field 'reasn'; allowed: by, reason"},
        ),
        "a message_id filter that is an object": (
            400,
            {"error": "filter 'message_id' must be a string or a list of strings"},
        ),
        "a limit given twice": (400, {"error": "limit is given more than once"}),
        "a misspelt parameter": (400, {"error": "unknown query parameter 'ap'"}),
    }
    app = await (await admin.get("/admin/apps/alerts", headers=AUTH)).json()
    assert app["paused"] is False
    jobs = await (await admin.get("/admin/jobs", headers=AUTH)).json()
    assert jobs["jobs"] == []
    wrong_method = await admin.put("/admin/claims", headers=AUTH)
    assert wrong_method.status == 405
    assert set(wrong_method.headers["Allow"].split(",")) >= {"GET", "POST"}


async def _seed(admin: Client, ingress: Client) -> str:
    """Something for the reads to find: a claim, an archived event (its message id is
    returned), a dead letter, a replay job."""
    assert admin.app is not None
    claimed = await admin.post(
        "/admin/claims", json={"app": "alerts", "events": ["sms.*"]}, headers=AUTH
    )
    assert claimed.status == 201, await claimed.text()
    archived = await post_event(ingress, "sms.subscribed")
    parked = await admin.app[STORE].get()
    await parked.add_many(
        [dead_letter(body_of("sms.subscribed", phone="+15555550100"), message_id=PARKED_ID)]
    )
    replay = await admin.post("/admin/dlq/alerts/replay", json={"dry_run": True}, headers=AUTH)
    assert replay.status == 202, await replay.text()
    return archived


def _config(archived: str) -> str:
    """Schemathesis's configuration: the seeded dead letter and archived event, found by their
    ids (the other places' refs stay random, and are not found); the boundaries of unrouted's
    and invalid's routes are left to their dead-letter twins, whose handlers they share."""
    return f"""
[[operations]]
include-path-regex = "^/admin/(unrouted|invalid)"
phases.coverage.enabled = false

[[operations]]
include-path = "/admin/dlq/{{app}}/{{ref}}"
parameters = {{ "path.app" = "alerts", "path.ref" = "{PARKED_ID}" }}

[[operations]]
include-path = "/admin/history/{{message_id}}"
parameters = {{ "path.message_id" = "{archived}", "query.since" = "1h" }}
"""


async def _schemathesis(
    admin: Client, tmp_path: Path, *args: str, config: str = "", env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run schemathesis's command line against the live admin app; its exit code and output."""
    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text(config)
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        f"--config-file={config_file}",
        "run",
        str(admin.make_url(DOCUMENT_PATH)),
        "--seed=30",
        "--workers=1",
        "--request-timeout=10",
        "--suppress-health-check=all",
        "--no-color",
        *args,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    print(output.decode())  # the run's summary (pytest -rP shows it)
    return process.returncode, output.decode()


async def test_schemathesis_finds_every_answer_as_documented_with_a_token(
    admin: Client, ingress: Client, tmp_path: Path
) -> None:
    """Given a claim, an archived event, a dead letter and a job, when schemathesis calls every
    operation with an operator's token, valid input and invalid, then nothing answers 5xx,
    every answer's status, headers and body are as documented, and invalid input gets 400."""
    archived = await _seed(admin, ingress)

    code, output = await _schemathesis(
        admin,
        tmp_path,
        f"--header=Authorization: Bearer {TOKEN}",
        f"--checks={','.join(CHECKS)}",
        f"--max-examples={MAX_EXAMPLES}",
        f"--phases={PHASES}",
        config=_config(archived),
    )

    assert code == 0, output
    assert "29 selected" in output and "Tested: 29" in output


async def test_schemathesis_gets_401_from_every_route_without_a_token(
    admin: Client, tmp_path: Path
) -> None:
    """When schemathesis calls every operation without a token, each answers 401 and asks for
    a bearer token, whatever the input."""
    code, output = await _schemathesis(
        admin,
        tmp_path,
        "--checks=not_a_server_error,answered_401",
        "--max-examples=1",
        "--phases=fuzzing",
        "--mode=positive",
        "--no-shrink",
        "--warnings=off",
        env={"SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks"},
    )

    assert code == 0, output
    assert "Tested: 29" in output
