"""``attentive-router serve``: the webhook listener and, with a token, the admin listener.

Both run in one process and one event loop; SIGTERM or SIGINT stops them together (the
ingress finishes its in-flight requests first, then the broker connection closes).
"""

from __future__ import annotations

import asyncio
import signal

import structlog
from aiohttp import web

from router.admin import create_admin_app
from router.ingress import create_app
from router.settings import Settings

log = structlog.get_logger("router")

#: Seconds in-flight requests get to finish on shutdown.
SHUTDOWN_TIMEOUT = 15.0


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT."""
    runners: list[web.AppRunner] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        ingress = web.AppRunner(
            create_app(settings), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await ingress.setup()
        runners.append(ingress)
        await web.TCPSite(ingress, settings.host, settings.port).start()
        log.info("serving", listener="webhooks", host=settings.host, port=settings.port)
        if settings.admin_token:
            admin = web.AppRunner(create_admin_app(settings), access_log=None)
            await admin.setup()
            runners.append(admin)
            await web.TCPSite(admin, settings.admin_host, settings.admin_port).start()
            log.info(
                "serving", listener="admin", host=settings.admin_host, port=settings.admin_port
            )
        else:
            log.info("admin_api_disabled", reason="ROUTER_ADMIN_TOKEN is not set")
        await stop.wait()
        log.info("stopping")
    finally:
        for runner in runners:
            await runner.cleanup()


__all__ = ["serve"]
