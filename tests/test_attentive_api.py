"""The Attentive Webhooks API client and the ``attentive webhooks`` commands, against a fake.

:class:`FakeAttentive` is a local aiohttp app on 127.0.0.1 (port 0) implementing the
documented API with its quirks: a bearer token (401 without it, 403 for a token lacking the
``webhooks:write`` scope), case-sensitive event names (400 with a message), a create answer
that can omit the id, no creating disabled, a PUT that needs url + events + disabled, DELETE
204/404, and failures (500, 429, ...) injected for the next N requests. Nothing leaves the
machine. ``tests/test_attentive_audit.py`` uses it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from router.attentive import (
    AttentiveAuthError,
    AttentiveClient,
    AttentiveNotFound,
    AttentiveRejected,
    AttentiveSettings,
    AttentiveUnavailable,
    InvalidWebhookInput,
    Webhook,
    resolve_events,
    subscription_url,
    validate_webhook_url,
)
from router.cli.main import main
from router.contract.events import EVENT_TYPES
from router.errors import ConfigError, RouterError

#: Distinctive, so that "not in the output" means something.
TOKEN = "atv-test-token-7Qx9-secret"
NO_SCOPE_TOKEN = "atv-readonly-token-3Kp1-secret"
COMPANY = "MDc6Q29tcGFueTU"
HOOK_URL = "https://hooks.example.com/webhooks/attentive"
SMS = tuple(t for t in EVENT_TYPES if t.startswith("sms."))
#: Port 9 (discard) is closed on the test machine: connecting is refused at once.
CLOSED_URL = "http://127.0.0.1:9/v1"


# -- the fake Attentive -----------------------------------------------------------------------


@dataclass
class FakeAttentive:
    """Attentive's Webhooks API as documented, quirks included, with switches for tests."""

    url: str = ""
    webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The create answer leaves out the new webhook's id.
    omit_id: bool = False
    #: Answers (status, Retry-After, method or None for any) for the next requests.
    failures: list[tuple[int, str | None, str | None]] = field(default_factory=list)
    #: This many POSTs create the webhook, then answer 500 anyway.
    fail_after_create: int = 0
    #: URLs Attentive refuses (400), e.g. because it cannot reach them.
    refused_urls: set[str] = field(default_factory=set)
    #: Error bodies quote the Authorization header (a careless server): the client must scrub.
    echo_authorization: bool = False
    #: (method, path, JSON body) of every request that reached the fake.
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def fail(
        self, status: int, times: int, *, retry_after: str | None = None, method: str | None = None
    ) -> None:
        """Answer ``status`` to the next ``times`` requests (of ``method``), then normally."""
        self.failures.extend([(status, retry_after, method)] * times)

    def add(
        self,
        events: tuple[str, ...] | list[str],
        *,
        url: str = HOOK_URL,
        company_id: str | None = COMPANY,
        kind: str = "SUBSCRIPTION",
        disabled: bool = False,
    ) -> str:
        """Seed a webhook as if made in Attentive's UI (static ones have no company)."""
        webhook_id = f"wh_{next(self._ids)}"
        self.webhooks[webhook_id] = {
            "id": webhook_id,
            "url": url,
            "type": kind,
            "events": list(events),
            "companyId": company_id,
            "disabledAt": "2026-11-20 10:00:00" if disabled else None,
        }
        return webhook_id

    def calls(self, method: str | None = None) -> list[tuple[str, str, Any]]:
        return [r for r in self.requests if method is None or r[0] == method]

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        app.router.add_get("/v1/webhooks", self._list)
        app.router.add_post("/v1/webhooks", self._create)
        app.router.add_put("/v1/webhooks/{webhook_id}", self._update)
        app.router.add_delete("/v1/webhooks/{webhook_id}", self._delete)
        return app

    @web.middleware
    async def _gate(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path, body))
        authorization = request.headers.get("Authorization", "")
        if authorization not in (f"Bearer {TOKEN}", f"Bearer {NO_SCOPE_TOKEN}"):
            return self._error(request, 401, "Unauthorized")
        if authorization == f"Bearer {NO_SCOPE_TOKEN}":
            return self._error(request, 403, "Token is missing scope webhooks:write")
        for i, (status, retry_after, method) in enumerate(self.failures):
            if method is None or method == request.method:
                del self.failures[i]
                headers = {"Retry-After": retry_after} if retry_after is not None else {}
                return web.json_response(
                    {"message": "Internal Server Error"}, status=status, headers=headers
                )
        response: web.StreamResponse = await handler(request)
        return response

    def _error(self, request: web.Request, status: int, message: str) -> web.Response:
        if self.echo_authorization:
            message += f" (got {request.headers.get('Authorization')!r})"
        return web.json_response({"message": message}, status=status)

    def _invalid(self, request: web.Request, body: Any, *, update: bool) -> web.Response | None:
        if not isinstance(body, dict):
            return self._error(request, 400, "Request body must be a JSON object")
        if not update and "disabled" in body:
            return self._error(request, 400, "A webhook cannot be created disabled")
        required = ("url", "events", "disabled") if update else ("url", "events")
        missing = [key for key in required if key not in body]
        if missing:
            return self._error(request, 400, f"Missing required field(s): {', '.join(missing)}")
        if update and not isinstance(body["disabled"], bool):
            return self._error(request, 400, "disabled must be a boolean")
        url, events = body["url"], body["events"]
        if not isinstance(url, str) or not url.startswith("https://"):
            return self._error(request, 400, "url must be an https URL")
        if url in self.refused_urls:
            return self._error(request, 400, f"Webhook url {url} did not respond")
        if not isinstance(events, list) or not events:
            return self._error(request, 400, "events must be a non-empty list")
        for event in events:
            if event not in EVENT_TYPES:  # case sensitive, like Attentive
                return self._error(request, 400, f"Invalid event type: {event}")
        return None

    @staticmethod
    def _answer(webhook: dict[str, Any]) -> dict[str, Any]:
        """The create/update answer: no companyId."""
        return {k: webhook[k] for k in ("id", "url", "events", "type", "disabledAt")}

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"webhooks": list(self.webhooks.values())})

    async def _create(self, request: web.Request) -> web.Response:
        body = self.requests[-1][2]
        invalid = self._invalid(request, body, update=False)
        if invalid is not None:
            return invalid
        webhook_id = self.add(body["events"], url=body["url"])
        if self.fail_after_create > 0:
            self.fail_after_create -= 1
            return web.json_response({"message": "Internal Server Error"}, status=500)
        answer = self._answer(self.webhooks[webhook_id])
        if self.omit_id:
            del answer["id"]
        return web.json_response(answer, status=201)

    async def _update(self, request: web.Request) -> web.Response:
        webhook = self.webhooks.get(request.match_info["webhook_id"])
        if webhook is None:
            return self._error(request, 404, "Webhook not found")
        body = self.requests[-1][2]
        invalid = self._invalid(request, body, update=True)
        if invalid is not None:
            return invalid
        webhook["url"], webhook["events"] = body["url"], body["events"]
        if not body["disabled"]:
            webhook["disabledAt"] = None
        elif webhook["disabledAt"] is None:
            webhook["disabledAt"] = "2026-11-26 12:00:00"
        return web.json_response(self._answer(webhook))

    async def _delete(self, request: web.Request) -> web.Response:
        if self.webhooks.pop(request.match_info["webhook_id"], None) is None:
            return self._error(request, 404, "Webhook not found")
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def running_fake() -> AsyncIterator[FakeAttentive]:
    """A :class:`FakeAttentive` served on 127.0.0.1 at a free port; ``fake.url`` is its base."""
    fake = FakeAttentive()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
async def attentive() -> AsyncIterator[FakeAttentive]:
    async with running_fake() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ATTENTIVE_* or ROUTER_* variable of the shell running pytest leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("ATTENTIVE_", "ROUTER_")):
            monkeypatch.delenv(name)


@dataclass
class Sleeps:
    """A ``sleep`` that records the delays instead of waiting."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def settings_for(base_url: str, token: str = TOKEN, **overrides: Any) -> AttentiveSettings:
    values: dict[str, Any] = {"retry_delay": 0.5, "timeout": 5.0, **overrides}
    return AttentiveSettings(token=token, base_url=base_url, **values)


@contextlib.asynccontextmanager
async def client_for(
    base_url: str, token: str = TOKEN, **overrides: Any
) -> AsyncIterator[tuple[AttentiveClient, Sleeps]]:
    sleeps = Sleeps()
    async with AttentiveClient(settings_for(base_url, token, **overrides), sleep=sleeps) as client:
        yield client, sleeps


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, attentive: FakeAttentive) -> None:
    """The command's environment: the fake's URL, the token, no waiting between tries."""
    monkeypatch.setenv("ATTENTIVE_API_TOKEN", TOKEN)
    monkeypatch.setenv("ATTENTIVE_API_URL", attentive.url)
    monkeypatch.setenv("ATTENTIVE_API_RETRY_DELAY", "0")


async def cli(*args: str) -> int:
    """``attentive-router attentive ARGS`` in a thread (it runs its own event loop)."""
    return await asyncio.to_thread(main, ["attentive", *args])


def one_line(text: str) -> str:
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)
    return text.rstrip("\n")


def last_json(out: str) -> Any:
    return json.loads(out.strip().splitlines()[-1])


# -- the fake keeps Attentive's quirks (so the tests below mean something) --------------------


async def test_the_fake_enforces_the_documented_quirks(attentive: FakeAttentive) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    wid = attentive.add(["sms.sent"])
    async with aiohttp.ClientSession() as http:

        async def call(method: str, path: str, body: Any = None, **kw: Any) -> int:
            headers = kw.get("headers", auth)
            async with http.request(
                method, attentive.url + path, json=body, headers=headers
            ) as response:
                return response.status

        assert await call("GET", "/webhooks", headers={}) == 401
        assert (
            await call("GET", "/webhooks", headers={"Authorization": f"Bearer {NO_SCOPE_TOKEN}"})
            == 403
        )
        good = {"url": HOOK_URL, "events": ["sms.sent"]}
        assert await call("POST", "/webhooks", {**good, "events": ["SMS.sent"]}) == 400
        assert await call("POST", "/webhooks", {**good, "disabled": True}) == 400
        assert await call("PUT", f"/webhooks/{wid}", good) == 400  # no "disabled"
        assert await call("PUT", f"/webhooks/{wid}", {**good, "disabled": True}) == 200
        assert await call("PUT", "/webhooks/nope", {**good, "disabled": True}) == 404
        assert await call("DELETE", f"/webhooks/{wid}") == 204
        assert await call("DELETE", f"/webhooks/{wid}") == 404
        attentive.fail(429, 1)
        assert await call("GET", "/webhooks") == 429
        assert await call("GET", "/webhooks") == 200


# -- the client: the four operations ----------------------------------------------------------


async def test_list_reads_typed_webhooks(attentive: FakeAttentive) -> None:
    sub = attentive.add(SMS)
    static = attentive.add(["email.opened"], company_id=None, kind="STATIC", disabled=True)
    async with client_for(attentive.url) as (client, _):
        webhooks = await client.list_webhooks()
    assert webhooks == [
        Webhook(sub, HOOK_URL, SMS, "SUBSCRIPTION", COMPANY, None),
        Webhook(static, HOOK_URL, ("email.opened",), "STATIC", None, "2026-11-20 10:00:00"),
    ]
    assert [w.enabled for w in webhooks] == [True, False]
    assert webhooks[1].to_json()["enabled"] is False


async def test_create_posts_only_url_and_events_and_returns_the_webhook(
    attentive: FakeAttentive,
) -> None:
    async with client_for(attentive.url) as (client, _):
        created = await client.create_webhook(HOOK_URL, ["sms.sent", "email.opened"])
    assert not created.id_from_listing and created.note is None
    assert created.webhook.id in attentive.webhooks
    assert created.webhook.events == ("sms.sent", "email.opened")
    posts = attentive.calls("POST")
    assert [body for _, _, body in posts] == [
        {"url": HOOK_URL, "events": ["sms.sent", "email.opened"]}
    ]


async def test_a_create_answer_without_id_is_resolved_by_listing_ignoring_older_twins(
    attentive: FakeAttentive,
) -> None:
    older = attentive.add(["email.sent", "sms.sent"])  # same url and events, made before
    attentive.omit_id = True
    async with client_for(attentive.url) as (client, _):
        created = await client.create_webhook(HOOK_URL, ["sms.sent", "email.sent"])
    assert created.id_from_listing
    assert created.webhook.id != older and created.webhook.id in attentive.webhooks
    assert created.webhook.company_id == COMPANY  # the listing knows more than the answer
    assert created.note is not None and "no webhook id" in created.note
    assert len(attentive.calls("POST")) == 1


async def test_update_sends_url_events_and_disabled_together(attentive: FakeAttentive) -> None:
    wid = attentive.add(["sms.sent"])
    async with client_for(attentive.url) as (client, _):
        updated = await client.update_webhook(
            wid, url=HOOK_URL + "/x", events=["sms.sent"], disabled=True
        )
    assert updated.url == HOOK_URL + "/x" and not updated.enabled
    assert attentive.calls("PUT")[0][2] == {
        "url": HOOK_URL + "/x",
        "events": ["sms.sent"],
        "disabled": True,
    }


async def test_delete_gives_nothing_then_not_found(attentive: FakeAttentive) -> None:
    wid = attentive.add(["sms.sent"])
    async with client_for(attentive.url) as (client, _):
        await client.delete_webhook(wid)
        with pytest.raises(AttentiveNotFound, match=f"no webhook '{wid}' \\(404\\)"):
            await client.delete_webhook(wid)
        with pytest.raises(AttentiveNotFound, match="no webhook 'wh_404'"):
            await client.get_webhook("wh_404")


# -- the client: errors and retries -----------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "status"), [("wrong-token", 401), (NO_SCOPE_TOKEN, 403)], ids=["401", "403"]
)
async def test_a_refused_token_says_to_check_the_token_and_scope(
    attentive: FakeAttentive, token: str, status: int
) -> None:
    async with client_for(attentive.url, token) as (client, sleeps):
        with pytest.raises(AttentiveAuthError) as raised:
            await client.list_webhooks()
    message = str(raised.value)
    assert raised.value.status == status and f"({status}" in message
    assert "ATTENTIVE_API_TOKEN" in message and "webhooks:write" in message
    assert sleeps.delays == [] and len(attentive.requests) == 1  # not retried


async def test_a_400_quotes_attentives_message(attentive: FakeAttentive) -> None:
    async with client_for(attentive.url) as (client, _):
        with pytest.raises(AttentiveRejected) as raised:
            await client.create_webhook(HOOK_URL, ["SMS.sent"], existing=[])
    assert raised.value.status == 400
    assert str(raised.value) == (
        "Attentive rejected POST /webhooks (400): Invalid event type: SMS.sent"
    )


async def test_5xx_is_retried_with_exponential_backoff(attentive: FakeAttentive) -> None:
    attentive.add(["sms.sent"])
    attentive.fail(500, 1)
    attentive.fail(503, 1)
    async with client_for(attentive.url) as (client, sleeps):
        webhooks = await client.list_webhooks()
    assert len(webhooks) == 1
    assert sleeps.delays == [0.5, 1.0]
    assert len(attentive.requests) == 3


async def test_retries_are_bounded_and_the_error_is_one_line(attentive: FakeAttentive) -> None:
    attentive.fail(502, 5)
    async with client_for(attentive.url) as (client, sleeps):
        with pytest.raises(AttentiveUnavailable) as raised:
            await client.list_webhooks()
    assert str(raised.value) == "GET /webhooks failed after 3 tries: Attentive answered 502"
    assert sleeps.delays == [0.5, 1.0] and len(attentive.requests) == 3


async def test_retry_after_is_honoured_and_a_long_one_ends_the_retries(
    attentive: FakeAttentive,
) -> None:
    attentive.fail(429, 1, retry_after="2")
    attentive.fail(503, 1, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")  # in the past: now
    async with client_for(attentive.url) as (client, sleeps):
        assert await client.list_webhooks() == []
        assert sleeps.delays == [2.0, 0.0]
        attentive.fail(429, 1, retry_after="3600")
        with pytest.raises(AttentiveUnavailable, match="asks to wait 3600 s") as raised:
            await client.list_webhooks()
    assert "after 1 try" in str(raised.value) and raised.value.status == 429
    assert sleeps.delays == [2.0, 0.0]


async def test_network_failures_are_retried_then_reported() -> None:
    async with client_for(CLOSED_URL, attempts=2) as (client, sleeps):
        with pytest.raises(AttentiveUnavailable) as raised:
            await client.list_webhooks()
    message = str(raised.value)
    assert message.startswith("GET /webhooks failed after 2 tries: Attentive could not be reached")
    assert "\n" not in message and sleeps.delays == [0.5]


async def test_a_failed_create_is_retried_only_after_checking_it_was_not_made(
    attentive: FakeAttentive,
) -> None:
    attentive.fail(500, 2, method="POST")
    async with client_for(attentive.url) as (client, sleeps):
        created = await client.create_webhook(HOOK_URL, ["sms.sent"], existing=[])
    assert len(attentive.webhooks) == 1 and created.webhook.id in attentive.webhooks
    methods = [m for m, _, _ in attentive.requests]
    assert methods == ["POST", "GET", "POST", "GET", "POST"]
    assert sleeps.delays == [0.5, 1.0]


async def test_a_create_that_failed_but_took_effect_is_not_repeated(
    attentive: FakeAttentive,
) -> None:
    attentive.fail_after_create = 1
    async with client_for(attentive.url) as (client, sleeps):
        created = await client.create_webhook(HOOK_URL, ["sms.sent"], existing=[])
    assert len(attentive.webhooks) == 1 and created.webhook.id in attentive.webhooks
    assert created.id_from_listing and "answered 500" in (created.note or "")
    assert len(attentive.calls("POST")) == 1 and sleeps.delays == []


async def test_a_rate_limited_create_is_retried_without_listing(attentive: FakeAttentive) -> None:
    attentive.fail(429, 1, method="POST", retry_after="1")
    async with client_for(attentive.url) as (client, sleeps):
        await client.create_webhook(HOOK_URL, ["sms.sent"], existing=[])
    assert [m for m, _, _ in attentive.requests] == ["POST", "POST"]
    assert sleeps.delays == [1.0] and len(attentive.webhooks) == 1


async def test_a_create_failing_every_time_says_nothing_was_made(attentive: FakeAttentive) -> None:
    attentive.fail(500, 3, method="POST")
    async with client_for(attentive.url) as (client, _):
        with pytest.raises(AttentiveUnavailable, match="no webhook was made"):
            await client.create_webhook(HOOK_URL, ["sms.sent"], existing=[])
    assert attentive.webhooks == {}


def test_malformed_webhooks_in_an_answer_are_protocol_errors() -> None:
    assert Webhook.from_json({"id": 7, "url": "u", "events": []}).id == "7"
    bad_answers: list[object] = [
        [],
        {"url": "u", "events": []},
        {"id": "1", "url": "u", "events": "sms.sent"},
    ]
    for bad in bad_answers:
        with pytest.raises(RouterError, match="Attentive answered a webhook"):
            Webhook.from_json(bad)


# -- validation before anything is sent -------------------------------------------------------


def test_events_are_resolved_from_names_and_patterns() -> None:
    assert resolve_events(["sms.*"]) == SMS
    assert resolve_events(["email.opened,sms.sent", "sms.sent"]) == ("sms.sent", "email.opened")
    assert resolve_events(["*"]) == EVENT_TYPES
    assert resolve_events(["custom_attribute.*"]) == ("custom_attribute.set",)


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (["SMS.sent"], "case sensitive: did you mean 'sms.sent'"),
        (["Sms.*"], "did you mean 'sms.*'"),
        (["sms.delivered"], "unknown event type 'sms.delivered'"),
        (["push.*"], "unknown event type 'push.*'"),
        (["sms"], "unknown event type 'sms'"),
        ([" , "], "at least one event type"),
    ],
)
def test_unknown_events_are_refused_with_a_hint(given: list[str], says: str) -> None:
    with pytest.raises(InvalidWebhookInput, match=says.replace("*", r"\*").replace("(", r"\(")):
        resolve_events(given)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://hooks.example.com/x", "must be an https:// URL"),
        ("https://user:pw@hooks.example.com/x", "must not carry a user or password"),
        ("https:///x", "has no host"),
        ("https://hooks.example.com/x#frag", "#fragment"),
        ("https://hooks.example.com/a b", "without spaces"),
        ("https://hooks.example.com:99999/", "invalid port"),
        ("hooks.example.com", "must be an https:// URL"),
    ],
)
def test_webhook_urls_must_be_https(url: str, says: str) -> None:
    with pytest.raises(InvalidWebhookInput, match=says):
        validate_webhook_url(url)
    assert "pw" not in says


def test_the_subscription_url_is_built_from_the_router_base() -> None:
    assert subscription_url("https://hooks.example.com/", "MDc6Q29t/x=") == (
        "https://hooks.example.com/webhooks/attentive/MDc6Q29t%2Fx%3D"
    )
    assert subscription_url("https://h.example.com/router", "c1") == (
        "https://h.example.com/router/webhooks/attentive/c1"
    )
    # the library names the input, never a command-line flag (the CLI adds those)
    with pytest.raises(InvalidWebhookInput, match=r"^router_base_url must be an https") as bad:
        subscription_url("http://h.example.com", "c1")
    assert bad.value.field == "router_base_url"
    with pytest.raises(InvalidWebhookInput, match=r"^company_id must be a non-empty id") as bad:
        subscription_url("https://h.example.com", "a b")
    assert bad.value.field == "company_id"


def test_settings_come_from_the_environment_and_hide_the_token() -> None:
    settings = AttentiveSettings.from_env(
        {"ATTENTIVE_API_TOKEN": f" {TOKEN} ", "ATTENTIVE_API_ATTEMPTS": "5"}
    )
    assert settings.token.reveal() == TOKEN and settings.attempts == 5
    assert settings.base_url == "https://api.attentivemobile.com/v1"
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)
    local = AttentiveSettings.from_env(
        {"ATTENTIVE_API_TOKEN": TOKEN, "ATTENTIVE_API_URL": "http://localhost:1/v1"}
    )
    assert local.base_url == "http://localhost:1/v1"
    for env, says in [
        ({}, "set ATTENTIVE_API_TOKEN"),
        ({"ATTENTIVE_API_TOKEN": "a b"}, "one word"),
        ({"ATTENTIVE_API_TOKEN": TOKEN, "ATTENTIVE_API_URL": "http://api.example.com"}, "https"),
        ({"ATTENTIVE_API_TOKEN": TOKEN, "ATTENTIVE_API_ATTEMPTS": "0"}, "between 1 and 10"),
        ({"ATTENTIVE_API_TOKEN": TOKEN, "ATTENTIVE_API_RETRY_DELAY": "x"}, "must be a number"),
        ({"ATTENTIVE_API_TOKEN": TOKEN, "ATTENTIVE_API_TIMEOUT": "0"}, "positive"),
    ]:
        with pytest.raises(ConfigError, match=says) as raised:
            AttentiveSettings.from_env(env)
        assert TOKEN not in str(raised.value) and "a b" not in str(raised.value)


# -- the commands -----------------------------------------------------------------------------


async def test_list_prints_a_table_or_json(
    attentive: FakeAttentive, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    wid = attentive.add([*SMS, "email.opened"])
    attentive.add(EVENT_TYPES, url="https://other.example.com/in", company_id=None, kind="STATIC")
    assert await cli("webhooks", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "TYPE", "STATUS", "COMPANY", "URL", "EVENTS"]
    assert lines[1].split()[:5] == [wid, "SUBSCRIPTION", "enabled", COMPANY, HOOK_URL]
    assert lines[1].endswith("sms.*, email.opened")
    assert "(all)" in lines[2] and lines[2].endswith("  *")

    assert await cli("webhooks", "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)["webhooks"]
    assert listed[0]["id"] == wid and listed[0]["events"] == [*SMS, "email.opened"]
    assert listed[1]["companyId"] is None and listed[1]["enabled"] is True


async def test_create_expands_patterns_and_reminds_of_the_signing_key(
    attentive: FakeAttentive, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("webhooks", "create", "--url", HOOK_URL, "--events", "sms.*", "--json") == 0
    captured = capsys.readouterr()
    answer = json.loads(captured.out)
    assert answer["id_from_listing"] is False
    assert answer["webhook"]["events"] == list(SMS)
    assert answer["webhook"]["companyId"] == COMPANY  # shown as listed afterwards
    assert attentive.webhooks[answer["webhook"]["id"]]["events"] == list(SMS)
    assert "signing key" in captured.err and "warning" not in captured.err


async def test_create_for_a_company_builds_the_routers_subscription_url(
    attentive: FakeAttentive, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--company-id", COMPANY, "--router-base-url", "https://hooks.example.com/"]
    assert await cli("webhooks", "create", *args, "--events", "email.opened") == 0
    (made,) = attentive.webhooks.values()
    assert made["url"] == f"https://hooks.example.com/webhooks/attentive/{COMPANY}"
    assert made["url"] in capsys.readouterr().out


async def test_create_disabled_creates_then_disables(
    attentive: FakeAttentive, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        await cli("webhooks", "create", "--url", HOOK_URL, "--events", "sms.sent", "--disabled")
        == 0
    )
    (made,) = attentive.webhooks.values()
    assert made["disabledAt"] is not None
    post, put = attentive.calls("POST")[0], attentive.calls("PUT")[0]
    assert "disabled" not in post[2] and put[2]["disabled"] is True
    assert "disabled" in capsys.readouterr().out


async def test_create_disabled_says_so_when_the_webhook_stayed_enabled(
    attentive: FakeAttentive, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    attentive.fail(500, 3, method="PUT")
    args = ["--url", HOOK_URL, "--events", "sms.sent", "--disabled"]
    assert await cli("webhooks", "create", *args) == 1
    (made_id,) = attentive.webhooks
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"attentive-router: created webhook {made_id}, but could not disable it, so it is "
        "ENABLED: PUT /webhooks/wh_1 failed after 3 tries: Attentive answered 500"
    )


async def test_create_finds_an_omitted_id_by_listing_and_says_so(
    attentive: FakeAttentive, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    attentive.omit_id = True
    args = ["--url", HOOK_URL, "--events", "sms.sent", "--disabled", "--json"]
    assert await cli("webhooks", "create", *args) == 0
    captured = capsys.readouterr()
    (made_id,) = attentive.webhooks
    answer = json.loads(captured.out)
    assert answer["webhook"]["id"] == made_id and answer["id_from_listing"] is True
    assert "note: Attentive's answer carried no webhook id" in captured.err
    assert attentive.webhooks[made_id]["disabledAt"] is not None  # the PUT used the found id


async def test_create_warns_when_another_enabled_webhook_gets_the_same_type(
    attentive: FakeAttentive, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    older = attentive.add(["sms.sent"], url="https://crm.example.com/attentive")
    assert await cli("webhooks", "create", "--url", HOOK_URL, "--events", "sms.*") == 0
    err = capsys.readouterr().err
    assert f"warning: company {COMPANY}: sms.sent goes to 2 enabled webhooks ({older}, " in err
    assert "attentive audit" in err


async def test_update_merges_the_current_webhook(
    attentive: FakeAttentive, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    wid = attentive.add(["sms.sent"], disabled=True)
    assert await cli("webhooks", "update", wid, "--events", "email.*", "sms.sent") == 0
    assert attentive.calls("PUT")[0][2] == {
        "url": HOOK_URL,
        "events": ["sms.sent", *(t for t in EVENT_TYPES if t.startswith("email."))],
        "disabled": True,  # it stays disabled
    }
    assert await cli("webhooks", "update", wid, "--url", HOOK_URL + "/v2", "--json") == 0
    webhook = last_json(capsys.readouterr().out)["webhook"]
    assert webhook["url"] == HOOK_URL + "/v2" and webhook["enabled"] is False
    assert webhook["companyId"] == COMPANY


async def test_disable_and_enable(
    attentive: FakeAttentive, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    wid = attentive.add(["sms.sent"])
    assert await cli("webhooks", "disable", wid) == 0
    assert attentive.webhooks[wid]["disabledAt"] is not None
    assert await cli("webhooks", "enable", wid, "--json") == 0
    assert attentive.webhooks[wid]["disabledAt"] is None
    assert last_json(capsys.readouterr().out)["webhook"]["enabled"] is True
    assert [body for _, _, body in attentive.calls("PUT")] == [
        {"url": HOOK_URL, "events": ["sms.sent"], "disabled": True},
        {"url": HOOK_URL, "events": ["sms.sent"], "disabled": False},
    ]


async def test_delete_then_delete_again_fails_with_one_line(
    attentive: FakeAttentive, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    wid = attentive.add(["sms.sent"])
    assert await cli("webhooks", "delete", wid) == 0
    assert capsys.readouterr().out == f"deleted webhook {wid}\n"
    assert await cli("webhooks", "delete", wid) == 1
    assert one_line(capsys.readouterr().err) == (
        f"attentive-router: Attentive has no webhook '{wid}' (404)"
    )
    assert await cli("webhooks", "enable", "wh_nope") == 1
    assert "no webhook 'wh_nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["create", "--url", "http://hooks.example.com", "--events", "sms.sent"], "https://"),
        (["create", "--url", HOOK_URL, "--events", "SMS.sent"], "case sensitive"),
        (["create", "--url", HOOK_URL, "--events", "sms.delivered"], "unknown event type"),
        (["create", "--company-id", COMPANY, "--events", "sms.sent"], "needs --router-base-url"),
        (
            ["create", "--url", HOOK_URL, "--router-base-url", HOOK_URL, "--events", "sms.sent"],
            "goes with --company-id",
        ),
        (["create", "--url", HOOK_URL, "--company-id", "c", "--events", "x"], "not allowed with"),
        (["create", "--url", HOOK_URL], "--events"),
        (["update", "wh_1"], "nothing to update"),
        (["update", "wh_1", "--url", "ftp://x"], "https://"),
        (["rename", "wh_1"], "invalid choice"),
    ],
)
async def test_bad_input_exits_2_with_one_line_and_sends_nothing(
    attentive: FakeAttentive,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    says: str,
) -> None:
    try:
        code = await cli("webhooks", *args)
    except SystemExit as exited:  # argparse's own usage errors
        code = int(str(exited.code))
    assert code == 2
    assert says in one_line(capsys.readouterr().err)
    assert attentive.requests == []


async def test_without_a_token_the_command_exits_2(
    attentive: FakeAttentive,
    cli_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("ATTENTIVE_API_TOKEN")
    assert await cli("webhooks", "list") == 2
    assert "set ATTENTIVE_API_TOKEN" in one_line(capsys.readouterr().err)
    assert attentive.requests == []


@pytest.mark.parametrize("token", ["wrong-token", NO_SCOPE_TOKEN])
async def test_a_refused_token_exits_1_naming_the_variable_and_scope(
    attentive: FakeAttentive,
    cli_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    token: str,
) -> None:
    monkeypatch.setenv("ATTENTIVE_API_TOKEN", token)
    assert await cli("webhooks", "list") == 1
    line = one_line(capsys.readouterr().err)
    assert "check ATTENTIVE_API_TOKEN" in line and "webhooks:write scope" in line


async def test_attentives_400_is_quoted_and_exits_1(
    attentive: FakeAttentive, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    attentive.refused_urls.add(HOOK_URL)
    assert await cli("webhooks", "create", "--url", HOOK_URL, "--events", "sms.sent") == 1
    assert one_line(capsys.readouterr().err) == (
        f"attentive-router: Attentive rejected POST /webhooks (400): "
        f"Webhook url {HOOK_URL} did not respond"
    )


async def test_the_command_retries_then_gives_up_with_one_line(
    attentive: FakeAttentive, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    attentive.fail(500, 2)
    assert await cli("webhooks", "list", "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"webhooks": []}
    retries = [json.loads(line) for line in captured.err.splitlines()]
    assert [r["event"] for r in retries] == ["attentive_retry", "attentive_retry"]
    assert [r["attempt"] for r in retries] == [1, 2]

    attentive.fail(503, 3)
    assert await cli("webhooks", "list") == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        "attentive-router: GET /webhooks failed after 3 tries: Attentive answered 503"
    )


# -- the token never shows --------------------------------------------------------------------


async def test_the_token_never_appears_in_output_logs_errors_or_reprs(
    attentive: FakeAttentive,
    cli_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every path that prints, logs or raises, with a server that even echoes the header."""
    caplog.set_level(logging.DEBUG)
    attentive.echo_authorization = True
    wid = attentive.add(["sms.sent"])
    seen: list[str] = []

    # the commands: success, retries, 400 (echoed header), 404, network failure
    attentive.fail(500, 2)
    assert await cli("webhooks", "list") == 0
    assert await cli("webhooks", "create", "--url", HOOK_URL, "--events", "SMS.sent") == 2
    assert await cli("webhooks", "update", wid, "--events", "sms.*") == 0
    attentive.refused_urls.add(HOOK_URL + "/no")
    assert await cli("webhooks", "update", wid, "--url", HOOK_URL + "/no") == 1
    assert await cli("webhooks", "delete", "wh_nope") == 1
    attentive.fail(503, 3)
    assert await cli("webhooks", "create", "--url", HOOK_URL, "--events", "sms.sent") == 1
    monkeypatch.setenv("ATTENTIVE_API_URL", CLOSED_URL)
    assert await cli("webhooks", "list") == 1
    captured = capsys.readouterr()
    seen += [captured.out, captured.err]
    assert "[redacted]" in captured.err  # the echoed header was scrubbed, and it was there

    # the library: errors, their reprs, logs, the client and settings reprs
    with structlog.testing.capture_logs() as logs:
        async with client_for(attentive.url) as (client, _):
            seen.append(repr(client))
            attentive.fail(500, 3)
            for call in (
                client.list_webhooks(),
                client.delete_webhook("wh_nope"),
                client.create_webhook(HOOK_URL, ["Bad"], existing=[]),
            ):
                with pytest.raises(RouterError) as raised:
                    await call
                seen += [str(raised.value), repr(raised.value), repr(raised.value.args)]
        async with client_for(attentive.url, "bad-" + TOKEN) as (client, _):
            with pytest.raises(AttentiveAuthError) as refused:
                await client.list_webhooks()
            seen += [str(refused.value), repr(refused.value)]
    seen += [repr(entry) for entry in logs]
    seen += [record.getMessage() for record in caplog.records]
    seen.append(repr(settings_for(attentive.url)))
    assert logs, "the retries were logged"
    for text in seen:
        assert TOKEN not in text, text
