"""The console's pages, one module each; :data:`PAGES` adds every page's routes."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from router.console.pages import (
    actions,
    apps,
    attentive,
    claims,
    history,
    jobs,
    login,
    overview,
    parked,
)

#: Each page module's ``add_routes(console)``.
PAGES: tuple[Callable[[web.Application], None], ...] = (
    login.add_routes,
    overview.add_routes,
    claims.add_routes,
    apps.add_routes,
    parked.add_routes,
    jobs.add_routes,
    history.add_routes,
    actions.add_routes,
    attentive.add_routes,
)

__all__ = ["PAGES"]
