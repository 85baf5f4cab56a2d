"""The claim registry through the admin API, with the real RabbitMQ following the claims."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection

from router.cli.main import main
from router.contract.events import EVENT_TYPES
from router.contract.examples import example_body
from router.contract.names import WEBHOOK_PATH, Names
from tests.conftest import AUTH, TOKEN, Client, MakeAdmin, depth, signed, take

pytestmark = pytest.mark.broker

WEBHOOK = WEBHOOK_PATH


@pytest.fixture
async def app_queues(
    amqp: AbstractRobustConnection, names: Names
) -> AsyncIterator[Callable[[str], Awaitable[int]]]:
    """Depth of an application's queue; the queues the test made are deleted afterwards."""
    seen: set[str] = set()

    async def queue_depth(app: str) -> int:
        seen.add(app)
        return await depth(amqp, names.app_queue(app))

    yield queue_depth
    channel = await amqp.channel()
    for app in seen:
        await channel.queue_delete(names.app_queue(app))


@pytest.fixture
def unrouted_depth(amqp: AbstractRobustConnection, names: Names) -> Callable[[], Awaitable[int]]:
    """How many events wait in this test's attentive.unrouted."""
    return lambda: depth(amqp, names.unrouted_queue)


async def claim(admin: Client, app: str, *events: str, company: str | None = None) -> int:
    body: dict[str, object] = {"app": app, "events": list(events)}
    if company is not None:
        body["company"] = company
    response = await admin.post("/admin/claims", json=body, headers=AUTH)
    return response.status


async def post_event(ingress: Client, event_type: str, company: str = "acme") -> None:
    body = example_body(event_type, company)
    response = await ingress.post(WEBHOOK, data=body, headers=signed(body))
    assert response.status == 200


# -- the token ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
    ids=["none", "wrong", "no-scheme", "basic"],
)
async def test_without_the_token_every_request_gets_401_and_learns_nothing(
    admin: Client, headers: dict[str, str]
) -> None:
    assert await claim(admin, "sms-audit", "sms.*") == 201
    for method, path in [
        ("GET", "/admin/claims"),
        ("POST", "/admin/claims"),
        ("DELETE", "/admin/claims/1"),
        ("GET", "/admin/no-such-path"),
    ]:
        response = await admin.request(method, path, headers=headers, json={"app": "x"})
        assert response.status == 401, (method, path)
        assert await response.json() == {"error": "unauthorized"}
        assert response.headers["WWW-Authenticate"] == "Bearer"
    listed = await (await admin.get("/admin/claims", headers=AUTH)).json()
    assert [c["app"] for c in listed["claims"]] == ["sms-audit"]


# -- granting and refusing -----------------------------------------------------------------


async def test_a_claim_is_granted_listed_and_claiming_it_again_is_a_no_op(
    admin: Client, app_queues: Callable[[str], Awaitable[int]]
) -> None:
    response = await admin.post(
        "/admin/claims",
        json={"app": "sms-audit", "events": ["sms.*"], "company": "MDc6Q29tcGFueTU"},
        headers=AUTH,
    )
    assert response.status == 201
    granted = (await response.json())["claims"]
    assert [(c["app"], c["event"], c["company"]) for c in granted] == [
        ("sms-audit", "sms.*", "MDc6Q29tcGFueTU")
    ]
    claim_id = granted[0]["id"]

    again = await admin.post(
        "/admin/claims",
        json={"app": "sms-audit", "events": ["sms.*"], "company": "MDc6Q29tcGFueTU"},
        headers=AUTH,
    )
    assert again.status == 200
    assert (await again.json())["claims"][0]["id"] == claim_id
    listed = (await (await admin.get("/admin/claims", headers=AUTH)).json())["claims"]
    assert len(listed) == 1
    assert await app_queues("sms-audit") == 0  # the queue exists


async def test_an_overlapping_claim_of_another_app_is_refused_naming_the_holder(
    admin: Client, app_queues: Callable[[str], Awaitable[int]]
) -> None:
    assert await claim(admin, "sms-audit", "sms.*") == 201
    response = await admin.post(
        "/admin/claims",
        json={"app": "growth", "events": ["email.opened", "sms.subscribed"], "company": "c1"},
        headers=AUTH,
    )
    assert response.status == 409
    answer = await response.json()
    assert answer["error"] == "conflict"
    assert [(c["app"], c["event"], c["wanted"]) for c in answer["conflicts"]] == [
        ("sms-audit", "sms.*", "sms.subscribed")
    ]
    # all or nothing: email.opened was not granted either
    listed = (await (await admin.get("/admin/claims", headers=AUTH)).json())["claims"]
    assert [c["app"] for c in listed] == ["sms-audit"]
    # and growth may still take what nobody holds
    assert await claim(admin, "growth", "email.opened", company="c1") == 201
    await app_queues("sms-audit")
    await app_queues("growth")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"app": "a"}',
        b'{"app": "a", "events": []}',
        b'{"app": "a", "events": ["sms.#"]}',
        b'{"app": "a", "events": ["*.sent"]}',
        b'{"app": "Bad Name", "events": ["sms.*"]}',
        b'{"app": "a", "events": ["sms.*"], "company": 7}',
        b'{"app": "a", "events": ["sms.*"], "company": "a*"}',
    ],
)
async def test_a_malformed_claim_gets_400_with_a_reason_and_changes_nothing(
    admin: Client, body: bytes
) -> None:
    response = await admin.post("/admin/claims", data=body, headers=AUTH)
    assert response.status == 400
    assert (await response.json())["error"]
    listed = (await (await admin.get("/admin/claims", headers=AUTH)).json())["claims"]
    assert listed == []


async def test_removing_a_claim_gives_204_then_404(
    admin: Client, app_queues: Callable[[str], Awaitable[int]]
) -> None:
    assert await claim(admin, "attrs", "custom_attribute.set") == 201
    (held,) = (await (await admin.get("/admin/claims", headers=AUTH)).json())["claims"]
    assert (await admin.delete(f"/admin/claims/{held['id']}", headers=AUTH)).status == 204
    assert (await admin.delete(f"/admin/claims/{held['id']}", headers=AUTH)).status == 404
    assert (await admin.delete("/admin/claims/abc", headers=AUTH)).status == 400
    await app_queues("attrs")


# -- the topology follows the claims ---------------------------------------------------------


async def test_a_claimed_event_reaches_only_its_owner_and_the_rest_is_unrouted(
    admin: Client,
    ingress: Client,
    amqp: AbstractRobustConnection,
    names: Names,
    app_queues: Callable[[str], Awaitable[int]],
) -> None:
    # Given three applications with disjoint claims
    assert await claim(admin, "sms-audit", "sms.*") == 201
    assert await claim(admin, "engagement", "email.*", company="acme.co") == 201
    assert await claim(admin, "attrs", "custom_attribute.set") == 201

    # When one event of every type arrives for two companies
    for company in ("acme.co", "globex"):
        for event_type in EVENT_TYPES:
            await post_event(ingress, event_type, company)

    # Then each event sits in exactly one queue: its owner's, or attentive.unrouted
    assert await app_queues("sms-audit") == 10  # 5 SMS types x 2 companies
    assert await app_queues("engagement") == 5  # acme.co's email only
    assert await app_queues("attrs") == 2
    assert await depth(amqp, names.unrouted_queue) == 5  # globex's email
    channel = await amqp.channel()
    unrouted = await take(await channel.get_queue(names.unrouted_queue), 5)
    assert {m.routing_key for m in unrouted} == {
        f"{t}.globex" for t in EVENT_TYPES if t.startswith("email.")
    }


async def test_removing_a_claim_removes_its_binding(
    admin: Client,
    ingress: Client,
    app_queues: Callable[[str], Awaitable[int]],
    unrouted_depth: Callable[[], Awaitable[int]],
) -> None:
    assert await claim(admin, "sms-audit", "sms.sent", "sms.subscribed") == 201
    await post_event(ingress, "sms.sent")
    assert await app_queues("sms-audit") == 1

    listed = (await (await admin.get("/admin/claims", headers=AUTH)).json())["claims"]
    sent = next(c for c in listed if c["event"] == "sms.sent")
    assert (await admin.delete(f"/admin/claims/{sent['id']}", headers=AUTH)).status == 204

    await post_event(ingress, "sms.sent")
    await post_event(ingress, "sms.subscribed")
    assert await app_queues("sms-audit") == 2  # the subscribed one; sms.sent is no longer bound
    assert await unrouted_depth() == 1


async def test_claims_and_their_bindings_survive_a_router_restart(
    make_admin: MakeAdmin,
    ingress: Client,
    amqp: AbstractRobustConnection,
    names: Names,
    app_queues: Callable[[str], Awaitable[int]],
) -> None:
    # Given a claim made through one router process
    first = await make_admin()
    assert await claim(first, "sms-audit", "sms.*") == 201
    await first.close()

    # And its binding lost at the broker (say the node was rebuilt)
    channel = await amqp.channel()
    queue = await channel.get_queue(names.app_queue("sms-audit"))
    await queue.unbind(names.events_exchange, "sms.#")

    # When the router starts again on the same database
    second = await make_admin()
    listed = (await (await second.get("/admin/claims", headers=AUTH)).json())["claims"]
    assert [c["event"] for c in listed] == ["sms.*"]

    # Then the start-up sync binds the claim again, and events reach their owner
    async with asyncio.timeout(15):
        while True:
            await post_event(ingress, "sms.sent")
            if await app_queues("sms-audit") > 0:
                break
            await asyncio.sleep(0.2)


# -- the command line ------------------------------------------------------------------------


async def test_the_cli_lists_adds_and_removes_through_the_admin_api(
    admin: Client,
    app_queues: Callable[[str], Awaitable[int]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{admin.server.port}"

    def cli(*args: str) -> int:
        return main(["claims", *args, "--admin-url", url, "--token", TOKEN])

    assert await asyncio.to_thread(cli, "add", "sms-audit", "sms.*") == 0
    assert "sms-audit" in capsys.readouterr().out
    assert await asyncio.to_thread(cli, "add", "growth", "sms.sent", "--company", "c1") == 1
    refused = capsys.readouterr().err
    assert "'sms-audit'" in refused and "refused" in refused

    assert await asyncio.to_thread(cli, "list") == 0
    table = capsys.readouterr().out
    assert "sms-audit" in table and "growth" not in table

    claim_id = (await (await admin.get("/admin/claims", headers=AUTH)).json())["claims"][0]["id"]
    assert await asyncio.to_thread(cli, "remove", str(claim_id)) == 0
    assert await asyncio.to_thread(cli, "remove", str(claim_id)) == 1
    assert (
        await asyncio.to_thread(main, ["claims", "list", "--admin-url", url, "--token", "no"]) == 1
    )
    assert "401" in capsys.readouterr().err
    await app_queues("sms-audit")


def test_claims_check_names_the_conflicts_in_a_teams_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "claims.toml"
    good.write_text(
        '[[claims]]\napp = "sms-audit"\nevents = ["sms.*"]\n\n'
        '[[claims]]\napp = "engagement"\nevents = ["email.*"]\ncompany = "c1"\n'
    )
    assert main(["claims", "check", str(good)]) == 0
    assert "no conflicts" in capsys.readouterr().out

    bad = tmp_path / "claims.yaml"
    bad.write_text(
        "claims:\n  - app: sms-audit\n    events: ['sms.*']\n"
        "  - app: growth\n    events: ['sms.subscribed']\n    company: c1\n"
    )
    assert main(["claims", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "sms-audit sms.*" in err and "growth sms.subscribed" in err

    broken = tmp_path / "broken.yaml"
    broken.write_text("claims:\n  - app: Not Valid\n    events: ['sms.*']\n")
    assert main(["claims", "check", str(broken)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


async def test_the_cli_emits_rabbitmq_definitions_for_every_claiming_app(
    admin: Client,
    app_queues: Callable[[str], Awaitable[int]],
    names: Names,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await claim(admin, "sms-audit", "sms.*") == 201
    url = f"http://127.0.0.1:{admin.server.port}"
    creds = tmp_path / "creds.txt"
    args = ["claims", "rabbitmq-definitions", "--app", "extra", "--namespace", names.prefix]
    args += ["--credentials-out", str(creds), "--admin-url", url, "--token", TOKEN]
    assert await asyncio.to_thread(main, args) == 0

    out = capsys.readouterr().out  # the in-process admin API logs to stdout here too
    document = json.loads(out[out.index("{\n") :])
    users = sorted(u["name"] for u in document["users"])
    assert users == [names.app_user("extra"), names.app_user("sms-audit")]
    assert all(u["password_hash"] for u in document["users"])
    lines = creds.read_text().splitlines()
    assert sorted(line.split("=", 1)[0] for line in lines) == users
    assert creds.stat().st_mode & 0o777 == 0o600
    await app_queues("sms-audit")
