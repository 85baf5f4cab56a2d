"""Logging in and out: the admin token, entered once, exchanged for a session cookie.

The token is posted by a form (never in a URL), compared with every known token in constant
time, and never shown or logged; a wrong one is refused, and an address that keeps failing
waits longer before each answer (:class:`~router.console.sessions.LoginThrottle`).
"""

from __future__ import annotations

import asyncio
import time

import structlog
from aiohttp import web

from router.console import guard
from router.console.keys import SESSION, SESSIONS, THROTTLE, TOKENS
from router.console.render import render
from router.console.sessions import COOKIE_NAME

log = structlog.get_logger("router.console.login")

#: The longest token the form takes (anything longer is no token of ours).
_MAX_TOKEN = 1024


def add_routes(console: web.Application) -> None:
    console.router.add_get("/login", login_page)
    console.router.add_post("/login", log_in)
    console.router.add_post("/logout", log_out)


async def login_page(request: web.Request) -> web.Response:
    """GET /console/login[?next=PATH]: the form."""
    return _form(request, status=200, failed=False)


async def log_in(request: web.Request) -> web.StreamResponse:
    """POST /console/login: a known token gets a session cookie and goes to the page it asked
    for; a wrong one the form again (401), later each time more slowly."""
    address = request.remote or "unknown"
    throttle = request.config_dict[THROTTLE]
    wait = throttle.delay(address)
    if wait:
        await asyncio.sleep(wait)
    form = await request.post()
    given = str(form.get("token", ""))[:_MAX_TOKEN].strip()
    who = request.config_dict[TOKENS].caller(given) if given else None
    if who is None:
        throttle.failed(address)
        log.warning("console_login_refused", address=address)
        return _form(request, status=401, failed=True)
    throttle.succeeded(address)
    value, session = request.config_dict[SESSIONS].issue(who)
    log.info("console_login", caller=who.name, role=who.role.value)
    response = web.HTTPSeeOther(_next(str(form.get("next", ""))))
    response.set_cookie(
        COOKIE_NAME,
        value,
        max_age=session.expires - int(time.time()),
        path=guard.PREFIX,
        httponly=True,
        secure=request.secure,
        samesite="Strict",
    )
    raise response


async def log_out(request: web.Request) -> web.StreamResponse:
    """POST /console/logout: the session ends here and now."""
    session = request[SESSION]
    request.config_dict[SESSIONS].revoke(session)
    log.info("console_logout", caller=session.caller.name)
    response = web.HTTPSeeOther(f"{guard.PREFIX}/login")
    response.del_cookie(COOKIE_NAME, path=guard.PREFIX)
    raise response


def _form(request: web.Request, *, status: int, failed: bool) -> web.Response:
    context = {"failed": failed, "next": _next(request.query.get("next", ""))}
    return render(request, "login.html", context, status=status)


def _next(raw: str) -> str:
    """Where to go after logging in: a console page, never another site."""
    if raw.startswith(f"{guard.PREFIX}/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return f"{guard.PREFIX}/"


__all__ = ["add_routes"]
