"""What every console request goes through: security headers, a session, a CSRF token on every
change, a role check, and errors shown as pages.

- Every answer carries a strict Content-Security-Policy (scripts and styles from the console's
  own files only: no inline script, no inline style), and is neither framed nor cached.
- A page needs a session (:mod:`router.console.sessions`); without one, a browser is sent to
  the login page (an htmx request is told to go there with ``HX-Redirect``).
- A POST needs the session's CSRF token (form field ``csrf_token`` or header ``X-CSRF-Token``)
  and, when the browser sends one, an ``Origin`` of this site: else 403, and nothing changes.
- :func:`require_operator` refuses a viewer (403) what only an operator may do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

import structlog
from aiohttp import web

from router.admin.tokens import CALLER, Caller, Role
from router.console.keys import SESSION, SESSIONS
from router.console.render import render
from router.console.sessions import COOKIE_NAME, Session
from router.errors import RouterError, codes_for

log = structlog.get_logger("router.console")

#: The prefix of every console path.
PREFIX = "/console"
#: Paths reachable without a session.
_OPEN = frozenset({f"{PREFIX}/login"})
_STATIC = f"{PREFIX}/static/"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

_REASONS = {
    404: "There is no such page in the console.",
    405: "That page does not take this method.",
    413: "That request is too large.",
}

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NotAllowed(Exception):
    """A viewer asked for what only an operator may do."""

    def __init__(self, caller: Caller, action: str) -> None:
        super().__init__(f"{caller.name} is a {caller.role.value}: only an operator may {action}")


class BadRequestToken(Exception):
    """A change came without the session's CSRF token, or from another site."""


def caller(request: web.Request) -> Caller:
    """Who is logged in."""
    return request[CALLER]


def is_operator(request: web.Request) -> bool:
    return request[CALLER].role is Role.OPERATOR


def require_operator(request: web.Request, action: str) -> Caller:
    """The caller, when an operator; :class:`NotAllowed` (403) for a viewer."""
    who = request[CALLER]
    if who.role is not Role.OPERATOR:
        raise NotAllowed(who, action)
    return who


def htmx(request: web.Request) -> bool:
    """Whether htmx made the request (it then wants a fragment, not a whole page)."""
    return request.headers.get("HX-Request") == "true"


@web.middleware
async def security_headers(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """The security headers on every answer; pages (not static files) are never cached."""
    try:
        response = await handler(request)
    except web.HTTPException as error:
        _secure(request, error)
        raise
    _secure(request, response)
    return response


def _secure(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(_HEADERS)
    if not request.path.startswith(_STATIC):
        response.headers["Cache-Control"] = "no-store"


@web.middleware
async def errors_as_pages(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """A :class:`~router.errors.RouterError`, a refusal or a bad CSRF token as a page (or, for
    htmx, a fragment) with its status."""
    try:
        return await handler(request)
    except NotAllowed as error:
        return _problem(request, 403, "Not allowed", str(error))
    except BadRequestToken as error:
        return _problem(request, 403, "Refused", str(error))
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _problem(request, error.status, error.reason, _REASONS.get(error.status, ""))
    except RouterError as error:
        status = codes_for(error).http_status
        if status >= 500:
            log.warning("console_request_failed", path=request.path, error=str(error))
        return _problem(request, status, "Could not do that", str(error))


@web.middleware
async def require_session(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Pages need a session: who it is becomes the request's caller; without one, the login
    page. POSTs need the session's CSRF token and a same-site ``Origin``."""
    if request.path in _OPEN or request.path.startswith(_STATIC):
        return await handler(request)
    session = request.config_dict[SESSIONS].check(request.cookies.get(COOKIE_NAME, ""))
    if session is None:
        return _to_login(request)
    request[CALLER] = session.caller
    request[SESSION] = session
    if request.method not in ("GET", "HEAD"):
        await check_csrf(request, session)
    with structlog.contextvars.bound_contextvars(caller=session.caller.name):
        return await handler(request)


async def check_csrf(request: web.Request, session: Session) -> None:
    """:class:`BadRequestToken` unless the request carries ``session``'s CSRF token and, if
    the browser says where it comes from, comes from this site."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise BadRequestToken("this request came from another site")
    given = request.headers.get("X-CSRF-Token", "")
    if not given and request.content_type == "application/x-www-form-urlencoded":
        given = str((await request.post()).get("csrf_token", ""))
    if not request.config_dict[SESSIONS].csrf_ok(session, given):
        log.warning("console_csrf_refused", path=request.path)
        raise BadRequestToken("the form's security token is missing or stale: reload the page")


def _to_login(request: web.Request) -> web.StreamResponse:
    target = f"{PREFIX}/login"
    if request.method == "GET" and request.path != f"{PREFIX}/":
        target += "?" + urlencode({"next": request.path_qs})
    if htmx(request):
        return web.Response(status=401, headers={"HX-Redirect": target})
    if request.method != "GET":
        return web.Response(status=401, text="log in first", content_type="text/plain")
    raise web.HTTPSeeOther(target)


def _problem(request: web.Request, status: int, title: str, reason: str) -> web.Response:
    template = "_problem.html" if htmx(request) else "problem.html"
    context = {"title": title, "reason": reason, "status": status}
    response = render(request, template, context, status=status)
    if htmx(request):
        response.headers["HX-Retarget"] = "#flash"
        response.headers["HX-Reswap"] = "innerHTML"
    return response


__all__ = [
    "CONTENT_SECURITY_POLICY",
    "PREFIX",
    "BadRequestToken",
    "NotAllowed",
    "caller",
    "check_csrf",
    "errors_as_pages",
    "htmx",
    "is_operator",
    "require_operator",
    "require_session",
    "security_headers",
]
