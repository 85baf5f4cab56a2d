"""The console's applications page: each application paused by hand or running, its breaker
and its queue; an operator pauses (with a reason) and resumes.

    GET  /console/apps                  the applications
    POST /console/apps/{app}/pause      pause (an operator's; ``reason``): 303 back
    POST /console/apps/{app}/resume     resume (an operator's): 303 back

Both changes go through the admin API's :class:`~router.apps.service.AppsService`, so they are
stored, told to every replica, logged and audited exactly as there; the browser is then sent
back to the page (POST-redirect-GET) with what happened in the query, so reloading it changes
nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from router.admin.apps import APPS, audit_of, store_errors, who_of
from router.apps.model import check_app
from router.apps.service import AppsService, Outcome
from router.console import guard
from router.console.filters import Filter
from router.console.render import render
from router.errors import ClaimStoreError, InvalidInput, Unavailable
from router.parked.model import Place

#: The page's path.
PATH = f"{guard.PREFIX}/apps"
#: What the page says after a change, by the redirect's ``done``.
_DONE = {
    "paused": "Paused {app}: its workers stop taking events, which wait in its queue.",
    "resumed": "Resumed {app}: its workers take events again, at its rate limit.",
    "already-paused": "{app} was already paused: nothing changed.",
    "not-paused": "{app} was not paused: nothing to resume.",
}
_NOT_NOTIFIED = (
    "RabbitMQ could not be told, so running workers have not heard yet: the change is stored, "
    "and each worker takes it at its next look at the router (at start, or when it reconnects)."
)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(console: web.Application) -> None:
    """Add this page's routes to the console."""
    console.router.add_get("/apps", apps_page)
    console.router.add_post("/apps/{app}/pause", pause)
    console.router.add_post("/apps/{app}/resume", resume)


def _errors(handler: _Handler) -> _Handler:
    """``handler``, with the state store's and the claims database's errors as 503, without
    their details (which name files and hosts)."""

    @functools.wraps(handler)
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ClaimStoreError:
            raise Unavailable("the claims database is unavailable") from None

    return store_errors(answer)


@_errors
async def apps_page(request: web.Request) -> web.Response:
    """GET /console/apps[?done=...&app=APP&notified=0]"""
    statuses = await _service(request).list()
    context = {
        "apps": statuses,
        "done": _done(request),
        "dlq_url": lambda app: Filter(place=Place.DLQ.value, app=app).url(),
    }
    return render(request, "apps.html", context)


@_errors
async def pause(request: web.Request) -> web.StreamResponse:
    """POST /console/apps/{app}/pause (reason): 303 back to the page."""
    guard.require_operator(request, "pause applications")
    form = await request.post()
    outcome = await _service(request).pause(
        request.match_info["app"],
        by=who_of(request),
        reason=str(form.get("reason", "")),
        audit=audit_of(request),
    )
    raise web.HTTPSeeOther(_back("paused" if outcome.changed else "already-paused", outcome))


@_errors
async def resume(request: web.Request) -> web.StreamResponse:
    """POST /console/apps/{app}/resume: 303 back to the page."""
    guard.require_operator(request, "resume applications")
    outcome = await _service(request).resume(
        request.match_info["app"], by=who_of(request), audit=audit_of(request)
    )
    raise web.HTTPSeeOther(_back("resumed" if outcome.changed else "not-paused", outcome))


def _back(done: str, outcome: Outcome) -> str:
    query = [("done", done), ("app", outcome.status.app)]
    if not outcome.notified:
        query.append(("notified", "0"))
    return f"{PATH}?{urlencode(query)}"


def _done(request: web.Request) -> dict[str, Any] | None:
    """What the change before this page did (from the redirect's query), or None."""
    said = _DONE.get(request.query.get("done", ""))
    app = request.query.get("app", "")
    try:
        check_app(app)
    except InvalidInput:
        return None  # not a redirect of ours: say nothing
    if said is None:
        return None
    warning = _NOT_NOTIFIED if request.query.get("notified") == "0" else ""
    return {"said": said.format(app=app), "warning": warning}


def _service(request: web.Request) -> AppsService:
    return request.config_dict[APPS]


__all__ = ["PATH", "add_routes"]
