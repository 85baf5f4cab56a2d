"""The admin API: claims, parked events and their jobs, on its own listener, behind named
bearer tokens.

Requests without a known ``Authorization: Bearer <token>`` get 401 and nothing else: not even
whether a path exists. Only the API's OpenAPI document (``GET /admin/openapi.json``,
:mod:`router.admin.openapi`) is served without one. A known token's name and role are put on
the request (:data:`router.admin.tokens.CALLER`); a viewer asking for an operator's route gets
403 with the reason (:mod:`router.admin.tokens`). Every error a route raises is answered here,
as JSON with the status of its kind (:data:`router.errors.KINDS`). Each token is at least
:data:`~router.settings.MIN_ADMIN_TOKEN_LENGTH` characters, and the listener serves TLS when
its certificate and key are set (:mod:`router.tls`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from router.admin.apps import add_app_routes
from router.admin.claims import add_claim_routes
from router.admin.deadletters import add_deadletter_routes
from router.admin.history import add_history_routes
from router.admin.jobs import add_job_routes
from router.admin.openapi import DOCUMENT_PATH, add_document_route
from router.admin.responses import error_response, json_response
from router.admin.tokens import CALLER, Tokens, load_tokens
from router.apps.metrics import AppMetrics
from router.attentive.settings import AttentiveSettings
from router.claims.service import ClaimsService
from router.console.app import add_console
from router.console.guard import PREFIX as CONSOLE_PREFIX
from router.errors import RouterError
from router.parked.store import ParkedStore
from router.settings import Settings
from router.tls import server_context

log = structlog.get_logger("router.admin.app")

_TOKENS = web.AppKey("tokens", Tokens)
#: The largest request body the admin API reads.
MAX_BODY_BYTES = 64 * 1024


def create_admin_app(
    settings: Settings,
    service: ClaimsService | None = None,
    store: ParkedStore | None = None,
    *,
    attentive: AttentiveSettings | None = None,
    metrics_registry: CollectorRegistry | None = None,
) -> web.Application:
    """The admin application, and the console at ``/console``; it owns (opens, syncs, closes)
    the claims service and the parked-event store it is given (else those of the settings'
    database). With ``attentive`` (``ATTENTIVE_API_TOKEN`` set), the console shows the audit;
    with ``metrics_registry`` (the process's), the paused applications' gauges are kept there.
    :class:`~router.errors.ConfigError` without a token (each of at least
    :data:`~router.settings.MIN_ADMIN_TOKEN_LENGTH` characters) or with a malformed tokens
    file."""
    tokens = load_tokens(settings)
    app = web.Application(
        middlewares=[_require_token, _errors_as_json], client_max_size=MAX_BODY_BYTES
    )
    app[_TOKENS] = tokens
    add_claim_routes(app, settings, service)
    metrics = AppMetrics(metrics_registry) if metrics_registry is not None else None
    add_app_routes(app, settings, metrics=metrics)
    add_deadletter_routes(app, settings, store)
    add_job_routes(app)
    add_history_routes(app, settings)
    add_document_route(app)
    add_console(app, settings, tokens, attentive=attentive)
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
    if request.path == CONSOLE_PREFIX or request.path.startswith(CONSOLE_PREFIX + "/"):
        return await handler(request)  # the console checks its own sessions
    if request.path == DOCUMENT_PATH and request.method in ("GET", "HEAD"):
        return await handler(request)  # the OpenAPI document names nothing secret
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    caller = request.app[_TOKENS].caller(given.strip()) if scheme.lower() == "bearer" else None
    if caller is None:
        return json_response(
            {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"}
        )
    request[CALLER] = caller
    with structlog.contextvars.bound_contextvars(caller=caller.name):
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
        if error.status < 400:
            raise  # a redirect (the console's) keeps its Location and cookies
        allow = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
        return json_response({"error": error.reason.lower()}, status=error.status, headers=allow)
    except Exception:
        log.exception("admin_unhandled_error", path=request.path, method=request.method)
        return json_response({"error": "internal error"}, status=500)


__all__ = ["MAX_BODY_BYTES", "admin_site", "create_admin_app"]
