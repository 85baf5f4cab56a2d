"""The console's jobs page (to be built)."""

from __future__ import annotations

from aiohttp import web


def add_routes(console: web.Application) -> None:
    """Add this page's routes to the console."""


__all__ = ["add_routes"]
