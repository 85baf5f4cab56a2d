"""The console: server-rendered pages under ``/console`` on the admin listener.

Pages are Jinja2 templates rendered by the server (autoescaped: payloads are attacker-controlled
text), and the few live parts (the overview, a job's progress) are refreshed by htmx, a small
library served from the package itself. Nothing comes from a CDN and nothing needs Node.js.
The console reads and changes what the admin API does, through the same services (claims, the
parked-event store): a page is one more view of them, not a second implementation.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from router.admin.tokens import Tokens
from router.amqp.url import AmqpUrl
from router.attentive.settings import AttentiveSettings
from router.console import guard
from router.console.broker import CachedView, broker_view
from router.console.format import FILTERS
from router.console.keys import ATTENTIVE, BROKER, SESSIONS, SETTINGS, THROTTLE, TOKENS
from router.console.pages import PAGES
from router.console.sessions import LoginThrottle, Sessions
from router.settings import Settings

_HERE = Path(__file__).parent
#: Seconds a look at the broker may take, and how long one serves every browser.
BROKER_TIMEOUT = 5.0
BROKER_TTL = 3.0


def add_console(
    app: web.Application,
    settings: Settings,
    tokens: Tokens,
    *,
    attentive: AttentiveSettings | None = None,
) -> None:
    """Serve the console from the admin ``app`` at ``/console`` (its own session check:
    the admin app's bearer-token check lets ``/console`` through); with ``attentive``, a page
    shows the audit of Attentive's webhooks against the claims."""
    console = web.Application(
        middlewares=[guard.security_headers, guard.errors_as_pages, guard.require_session]
    )
    console[SESSIONS] = Sessions(tokens)
    console[SETTINGS] = settings
    console[TOKENS] = tokens
    console[THROTTLE] = LoginThrottle()
    console[BROKER] = CachedView(
        broker_view(
            settings.amqp_url.reveal(),
            settings.rabbitmq_management_url.reveal(),
            vhost=AmqpUrl.parse(settings.amqp_url.reveal().split(",")[0]).vhost,
            timeout=BROKER_TIMEOUT,
        ),
        ttl=BROKER_TTL,
    )
    if attentive is not None:
        console[ATTENTIVE] = attentive
    environment = aiohttp_jinja2.setup(
        console,
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters.update(FILTERS)
    console.router.add_static("/static", _HERE / "static", name="static", append_version=True)
    for add_routes in PAGES:
        add_routes(console)
    app.router.add_get(guard.PREFIX, _to_console)
    app.add_subapp(guard.PREFIX, console)


async def _to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently(f"{guard.PREFIX}/")


__all__ = ["add_console"]
