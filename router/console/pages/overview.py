"""The console's overview page (to be built)."""

from __future__ import annotations

from aiohttp import web

from router.console.render import render


def add_routes(console: web.Application) -> None:
    """Add this page's routes to the console."""
    console.router.add_get("/", overview)


async def overview(request: web.Request) -> web.Response:
    return render(request, "overview.html", {})


__all__ = ["add_routes"]
