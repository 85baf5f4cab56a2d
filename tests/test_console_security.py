"""The console's door: an admin token entered once and exchanged for a session cookie that
holds no secret, a CSRF token on every change, a strict Content-Security-Policy, no open
redirect, no way around the admin API's token through the console's path, and a login that
slows down for whoever keeps guessing.

At the HTTP level against the real admin app (the ``console`` fixture); the cookie's
signature and expiry also as a unit, with the clock given.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from router.admin.app import admin_site, create_admin_app
from router.admin.tokens import AdminToken, Caller, Role, Tokens
from router.console.guard import CONTENT_SECURITY_POLICY
from router.console.keys import THROTTLE
from router.console.sessions import COOKIE_NAME, LoginThrottle, Sessions
from tests.conftest import AUTH, Client
from tests.console_steps import OPERATOR_TOKEN, VIEWER_TOKEN, Console
from tests.environment import no_router_environment
from tests.test_admin_tls import Certificate, certificate
from tests.wire import free_port

#: ``no_router_environment``, autouse: no ROUTER_* variable of the shell counts;
#: ``certificate``: a self-signed certificate for the console over TLS.
__all__ = ["certificate", "no_router_environment"]

pytestmark = pytest.mark.broker


async def _log_in(api: Client, token: str, **extra: str) -> aiohttp.ClientResponse:
    return await api.post("/console/login", data={"token": token, **extra}, allow_redirects=False)


async def _csrf_of(api: Client, path: str = "/console/") -> str:
    page = await (await api.get(path)).text()
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the page holds no CSRF token"
    return found.group(1)


# -- logging in -----------------------------------------------------------------------------


async def test_the_token_is_exchanged_for_a_cookie_that_holds_no_secret(
    console: Console,
) -> None:
    """Given the login page,
    when an operator posts their token,
    then they are sent to the console with a session cookie that is HttpOnly, SameSite=Strict,
    scoped to /console and expiring, and that holds neither the token nor any part of it;
    the console's pages then show who is logged in and never the token."""
    answer = await _log_in(console.api, OPERATOR_TOKEN)

    assert answer.status == 303 and answer.headers["Location"] == "/console/"
    cookie = answer.cookies[COOKIE_NAME]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    assert cookie["path"] == "/console" and int(cookie["max-age"]) > 0
    assert not cookie["secure"]  # plain HTTP here: see the TLS test for Secure
    assert OPERATOR_TOKEN[:16] not in cookie.value and OPERATOR_TOKEN[-16:] not in cookie.value
    page = await (await console.api.get("/console/")).text()
    assert "oncall" in page and OPERATOR_TOKEN not in page


async def test_a_wrong_token_is_refused_and_gets_no_cookie(console: Console) -> None:
    """When someone posts a token that is no admin token,
    then the login form comes back with 401 and says so, without a session cookie, and the
    console's pages still send them to the login page."""
    answer = await _log_in(console.api, "not-a-token-of-this-router-at-all-000000")

    assert answer.status == 401
    assert "not one of the router's admin tokens" in await answer.text()
    assert COOKIE_NAME not in answer.cookies
    page = await console.api.get("/console/claims", allow_redirects=False)
    assert page.status == 303
    assert page.headers["Location"] == "/console/login?next=/console/claims"


async def test_repeated_wrong_tokens_slow_the_answers_down(console: Console) -> None:
    """Given an address that got the token wrong three times,
    when it tries again,
    then the console makes it wait before each answer (longer and longer), and a right token
    afterwards forgets the failures."""
    throttle = _console_app(console)[THROTTLE]
    for _ in range(LoginThrottle.free):
        assert throttle.delay("127.0.0.1") == 0
        await _log_in(console.api, "wrong-token-of-at-least-thirty-two-chars-x")
    assert throttle.delay("127.0.0.1") == 1.0
    await _log_in(console.api, "wrong-token-of-at-least-thirty-two-chars-x")
    assert throttle.delay("127.0.0.1") == 2.0

    assert (await _log_in(console.api, OPERATOR_TOKEN)).status == 303
    assert throttle.delay("127.0.0.1") == 0


def test_the_throttle_doubles_the_wait_up_to_a_ceiling_and_forgets_after_a_while() -> None:
    """Given failures from one address at known moments,
    then the wait doubles after the free ones, never exceeds the ceiling, and is forgotten
    once the address has been quiet for the throttle's memory; other addresses never wait."""
    throttle = LoginThrottle()
    for n in range(20):
        throttle.failed("198.51.100.7", now=100.0 + n)
    assert throttle.delay("198.51.100.7", now=120.0) == LoginThrottle.longest
    assert throttle.delay("198.51.100.8", now=120.0) == 0
    assert throttle.delay("198.51.100.7", now=120.0 + LoginThrottle.memory + 1) == 0


async def test_after_login_it_goes_where_it_was_asked_but_never_to_another_site(
    console: Console,
) -> None:
    """When the login form carries a page to go back to,
    then a console page is honoured, and another site (or any other path) is not."""
    for asked, landed in (
        ("/console/claims", "/console/claims"),
        ("//evil.example/console/", "/console/"),
        ("https://evil.example/", "/console/"),
        ("/admin/claims", "/console/"),
        ("/console/\\evil.example", "/console/"),
    ):
        answer = await _log_in(console.api, OPERATOR_TOKEN, next=asked)
        assert answer.headers["Location"] == landed, asked


# -- the session ----------------------------------------------------------------------------


async def test_logging_out_ends_the_session_even_for_a_copy_of_its_cookie(
    console: Console,
) -> None:
    """Given a logged-in browser, and a copy of its cookie,
    when it logs out,
    then the cookie is cleared, and the copy no longer opens any page."""
    await _log_in(console.api, OPERATOR_TOKEN)
    copy = console.api.session.cookie_jar.filter_cookies(console.api.make_url("/console/"))
    stolen = copy[COOKIE_NAME].value
    csrf = await _csrf_of(console.api)

    answer = await console.api.post(
        "/console/logout", data={"csrf_token": csrf}, allow_redirects=False
    )

    assert answer.status == 303 and answer.headers["Location"] == "/console/login"
    assert answer.cookies[COOKIE_NAME].value == ""
    replayed = await console.api.get(
        "/console/",
        headers={"Cookie": f"{COOKIE_NAME}={stolen}"},
        allow_redirects=False,
    )
    assert replayed.status == 303


def test_a_forged_altered_expired_or_orphaned_cookie_opens_nothing() -> None:
    """Given sessions issued for a token,
    then a cookie altered anywhere, signed with another token, expired, or whose token has
    been removed, does not verify; an intact one does, with its holder's role."""
    oncall = AdminToken("oncall", Role.OPERATOR, b"o" * 40)
    grafana = AdminToken("grafana", Role.VIEWER, b"g" * 40)
    sessions = Sessions(Tokens((oncall, grafana)), lifetime=3600)
    value, _ = sessions.issue(Caller("grafana", Role.VIEWER), now=1_000)

    session = sessions.check(value, now=1_500)
    assert session is not None and session.caller == Caller("grafana", Role.VIEWER)
    version, name, expires, nonce, mac = value.split(".")
    as_operator = ".".join((version, "b25jYWxs", expires, nonce, mac))  # name: oncall
    longer = ".".join((version, name, str(int(expires) + 10_000), nonce, mac))
    for forged in (as_operator, longer, value[:-2] + "AA", "v1.x.y.z", "", "garbage"):
        assert sessions.check(forged, now=1_500) is None, forged
    assert sessions.check(value, now=1_000 + 3600) is None
    assert Sessions(Tokens((oncall,))).check(value, now=1_500) is None
    rotated = AdminToken("grafana", Role.VIEWER, b"n" * 40)
    assert Sessions(Tokens((oncall, rotated))).check(value, now=1_500) is None


async def test_the_cookie_is_secure_when_the_console_is_served_over_tls(
    console: Console, certificate: Certificate, tmp_path: Path
) -> None:
    """Given the admin listener serving TLS,
    when an operator logs in to the console over https,
    then the session cookie is also marked Secure."""
    settings = replace(
        console.settings,
        admin_host="127.0.0.1",
        admin_port=free_port(),
        admin_tls_cert=str(certificate.cert),
        admin_tls_key=str(certificate.key),
    )
    runner = web.AppRunner(create_admin_app(settings), access_log=None)
    await runner.setup()
    await admin_site(runner, settings).start()
    trust = ssl.create_default_context(cafile=str(certificate.cert))
    try:
        async with aiohttp.ClientSession() as client:
            answer = await client.post(
                f"https://localhost:{settings.admin_port}/console/login",
                data={"token": OPERATOR_TOKEN},
                allow_redirects=False,
                ssl=trust,
            )
            assert answer.status == 303
            assert answer.cookies[COOKIE_NAME]["secure"]
    finally:
        await runner.cleanup()


# -- changes need the session's CSRF token --------------------------------------------------


async def test_a_change_without_the_csrf_token_or_from_another_site_is_refused(
    console: Console,
) -> None:
    """Given a logged-in operator,
    when a change (granting a claim) comes without the CSRF token, with a wrong one, or with
    the right one but from another site's page,
    then each is refused with 403 and nothing changes; with the right token from the
    console's own page it goes through."""
    await _log_in(console.api, OPERATOR_TOKEN)
    csrf = await _csrf_of(console.api)
    grant = {"app": "crm-sync", "event": "sms.sent"}
    for data, headers in (
        (grant, {}),
        ({**grant, "csrf_token": "forged"}, {}),
        ({**grant, "csrf_token": csrf}, {"Origin": "https://evil.example"}),
    ):
        answer = await console.api.post(
            "/console/claims", data=data, headers=headers, allow_redirects=False
        )
        assert answer.status == 403, (data, headers)
    assert await _claims(console) == []

    answer = await console.api.post(
        "/console/claims", data={**grant, "csrf_token": csrf}, allow_redirects=False
    )
    assert answer.status == 303
    assert [claim["app"] for claim in await _claims(console)] == ["crm-sync"]


async def _claims(console: Console) -> list[dict[str, Any]]:
    answer = await console.api.get("/admin/claims", headers=AUTH)
    claims: list[dict[str, Any]] = (await answer.json())["claims"]
    return claims


# -- headers, paths ---------------------------------------------------------------------------


async def test_every_answer_carries_a_strict_content_security_policy(console: Console) -> None:
    """Given the login page, a page, a refusal and a static file,
    then each answer carries the console's policy (no inline script or style, nothing from
    elsewhere, no framing), and pages are not cached."""
    await _log_in(console.api, VIEWER_TOKEN)
    for path in ("/console/login", "/console/", "/console/nosuch", "/console/static/console.css"):
        answer = await console.api.get(path)
        assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
        assert answer.headers["X-Frame-Options"] == "DENY", path
        assert answer.headers["X-Content-Type-Options"] == "nosniff", path
        if "/static/" not in path:
            assert answer.headers["Cache-Control"] == "no-store", path
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY


async def test_the_console_path_is_no_way_around_the_admin_apis_token(console: Console) -> None:
    """Given the admin API, which the console's path lets through to its own session check,
    when a request without a token dresses an admin path as a console one,
    then it gets no admin answer; a console page without a session sends to the login."""
    for path in (
        "/console/../admin/claims",
        "/console/%2e%2e/admin/claims",
        "/console/%2E%2E%2Fadmin%2Fclaims",
        "/console//admin/claims",
    ):
        answer = await console.api.get(path, allow_redirects=False)
        assert answer.status in (401, 303, 404), path
        assert "claims" not in (await answer.text()).lower() or answer.status != 200, path
    answer = await console.api.get("/admin/claims", allow_redirects=False)
    assert answer.status == 401


async def test_the_token_never_reaches_a_log_line(
    console: Console, capsys: pytest.CaptureFixture[str]
) -> None:
    """When a right and a wrong token are posted to the login form,
    then the log lines say who logged in and that a login was refused, and hold neither
    token."""
    capsys.readouterr()
    wrong = "wrong-token-of-at-least-thirty-two-chars-y"
    await _log_in(console.api, wrong)
    await _log_in(console.api, OPERATOR_TOKEN)
    structlog.get_logger("test").info("done")
    said = capsys.readouterr()
    lines = said.out + said.err
    assert "console_login_refused" in lines and "console_login" in lines
    assert OPERATOR_TOKEN not in lines and wrong not in lines


def _console_app(console: Console) -> web.Application:
    server_app = console.api.app
    assert server_app is not None
    for resource in server_app.router.resources():
        app = getattr(resource, "_app", None)
        if isinstance(app, web.Application) and THROTTLE in app:
            return app
    raise AssertionError("the admin app has no console")
