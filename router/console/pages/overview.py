"""The overview: is the ingress ready, is the broker well, and per application how its events
flow and how many are parked. Refreshes itself (htmx asks for the fragment every few seconds).
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from router.admin.claims import CLAIMS
from router.admin.deadletters import UNAVAILABLE, store_of
from router.console import overview
from router.console.guard import htmx
from router.console.keys import BROKER, SETTINGS
from router.console.render import render
from router.parked.store import ParkedStore, ParkedStoreError

#: Seconds between two refreshes of the overview in the browser.
REFRESH_SECONDS = 5


def add_routes(console: web.Application) -> None:
    console.router.add_get("/", overview_page)


async def overview_page(request: web.Request) -> web.Response:
    """GET /console/: the page; for htmx, only its refreshed part."""
    store: ParkedStore | None
    try:
        store, store_error = await store_of(request), None
    except ParkedStoreError:
        store, store_error = None, UNAVAILABLE
    seen = await overview.gather(
        request.config_dict[SETTINGS],
        request.config_dict[BROKER],
        request.config_dict[CLAIMS],
        store,
        store_error=store_error,
    )
    context = {"o": seen, "now": datetime.now(UTC), "refresh": REFRESH_SECONDS}
    template = "_overview.html" if htmx(request) else "overview.html"
    return render(request, template, context)


__all__ = ["REFRESH_SECONDS", "add_routes"]
