"""Rendering a console page: its template, with what every page's layout needs."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from router.admin.tokens import CALLER, Role
from router.console.keys import ATTENTIVE, SESSION

#: The pages in the navigation: (key, label, path).
_NAV = (
    ("overview", "Overview", "/console/"),
    ("claims", "Claims", "/console/claims"),
    ("apps", "Applications", "/console/apps"),
    ("parked", "Parked events", "/console/parked"),
    ("jobs", "Jobs and audit", "/console/jobs"),
    ("history", "History", "/console/history"),
)
_ATTENTIVE = ("attentive", "Attentive", "/console/attentive")


def render(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    """``template`` rendered with ``context`` and the layout's: who is logged in (``caller``,
    ``operator``), the session's ``csrf_token``, the ``nav``, the ``path``, and ``static(name)``
    (a static file's URL, versioned)."""
    return aiohttp_jinja2.render_template(
        template, request, {**layout(request), **context}, status=status
    )


def layout(request: web.Request) -> dict[str, Any]:
    session = request.get(SESSION)
    who = request.get(CALLER)
    nav = list(_NAV)
    if request.config_dict.get(ATTENTIVE) is not None:
        nav.append(_ATTENTIVE)
    router = request.app.router
    return {
        "caller": who,
        "operator": who is not None and who.role is Role.OPERATOR,
        "csrf_token": "" if session is None else session.csrf,
        "nav": nav,
        "path": request.path,
        "static": lambda name: str(router["static"].url_for(filename=name)),
    }


__all__ = ["layout", "render"]
