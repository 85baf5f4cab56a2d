"""The admin API: claims and parked events, on its own listener, behind a bearer token.

Requests without the right ``Authorization: Bearer <ROUTER_ADMIN_TOKEN>`` get 401 and
nothing else: not even whether a path exists. Every error a route raises is answered here,
as JSON with the status of its kind (:data:`router.errors.KINDS`). The token is at least
:data:`~router.settings.MIN_ADMIN_TOKEN_LENGTH` characters, and the listener serves TLS when
its certificate and key are set (:mod:`router.tls`).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from router.admin.claims import add_claim_routes
from router.admin.deadletters import add_deadletter_routes
from router.admin.responses import error_response, json_response
from router.claims.service import ClaimsService
from router.errors import RouterError
from router.settings import Settings
from router.tls import server_context

log = structlog.get_logger("router.admin.app")

_TOKEN = web.AppKey("token", bytes)
#: The largest request body the admin API reads.
MAX_BODY_BYTES = 64 * 1024


def create_admin_app(settings: Settings, service: ClaimsService | None = None) -> web.Application:
    """The admin application; it owns (opens, syncs, closes) the claims service it is given.
    :class:`~router.errors.ConfigError` without a token (of at least
    :data:`~router.settings.MIN_ADMIN_TOKEN_LENGTH` characters)."""
    token = settings.require_admin_token()
    app = web.Application(
        middlewares=[_require_token, _errors_as_json], client_max_size=MAX_BODY_BYTES
    )
    app[_TOKEN] = token.encode()
    add_claim_routes(app, settings, service)
    add_deadletter_routes(app, settings)
    return app


def admin_site(runner: web.AppRunner, settings: Settings) -> web.TCPSite:
    """The admin listener on ``settings.admin_host``:``admin_port``: HTTPS when the settings
    name a certificate and key (:class:`~router.errors.ConfigError` if they cannot be
    loaded), else plain HTTP."""
    context = server_context(settings.admin_tls_cert, settings.admin_tls_key)
    return web.TCPSite(runner, settings.admin_host, settings.admin_port, ssl_context=context)


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _require_token(request: web.Request, handler: _Handler) -> web.StreamResponse:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), request.app[_TOKEN]
    ):
        return json_response(
            {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"}
        )
    return await handler(request)


@web.middleware
async def _errors_as_json(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RouterError as error:
        response = error_response(error)
        if response.status >= 500:
            log.warning(
                "admin_request_failed",
                method=request.method,
                path=request.path,
                status=response.status,
                error=str(error),
            )
        return response
    except web.HTTPException as error:
        return json_response({"error": error.reason.lower()}, status=error.status)
    except Exception:
        log.exception("admin_unhandled_error", path=request.path, method=request.method)
        return json_response({"error": "internal error"}, status=500)


__all__ = ["MAX_BODY_BYTES", "admin_site", "create_admin_app"]
