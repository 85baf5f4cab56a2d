"""The admin API's application routes: paused by hand or not, breaker, queue; pause and resume.

    GET  /admin/apps                          every application (claimed, or ever paused)
    GET  /admin/apps/{app}                    one (never paused: running, 200; workers ask this)
    POST /admin/apps/{app}/pause {"reason"?}  an operator's: stored, told to every replica
    POST /admin/apps/{app}/resume             an operator's; resuming a running one is a no-op

A pause or resume answers 200 with the application as ``GET`` shows it, and ``changed``,
``notified`` (whether RabbitMQ confirmed the control message) and a ``warning`` when something
beside failed. ``"by"`` in the body (the command line sends ``cli:<login>``) is recorded
beside the token's name, never instead of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web

from router.admin.claims import CLAIMS
from router.admin.deadletters import request_body, store_of
from router.admin.openapi import add_route
from router.admin.responses import json_response
from router.admin.schemas_routes import LIST_APPS, PAUSE_APP, RESUME_APP, SHOW_APP
from router.admin.tokens import caller, operator_only
from router.apps.metrics import AppMetrics, refresh
from router.apps.open import app_store_from_url
from router.apps.service import AppsService, Audit
from router.apps.store import AppStoreError
from router.errors import InvalidInput, Unavailable
from router.parked.jobs import AuditRecord
from router.settings import Settings

log = structlog.get_logger("router.admin.apps")

#: The admin app's applications service.
APPS = web.AppKey("apps", AppsService)
_METRICS = web.AppKey("app_metrics", AppMetrics)
#: What the API says instead of the store's own error, which names files and tables.
UNAVAILABLE = "the application state database is unavailable"
_BY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_app_routes(
    app: web.Application,
    settings: Settings,
    service: AppsService | None = None,
    *,
    metrics: AppMetrics | None = None,
) -> None:
    """Add the application routes to the admin ``app`` (after the claim routes: the claimed
    applications are listed too), which owns (opens, closes) the service: the one given, or
    one on the settings' database and broker. With ``metrics``, their gauges are refreshed
    while the app runs."""

    async def claimed() -> set[str]:
        return {claim.app for claim in await app[CLAIMS].list()}

    app[APPS] = service or AppsService(
        app_store_from_url(settings.database_url.reveal()),
        settings.amqp_url.reveal(),
        settings.names,
        known_apps=claimed,
    )
    if metrics is not None:
        app[_METRICS] = metrics
    app.cleanup_ctx.append(_apps_lifecycle)
    add_route(app, "GET", "/admin/apps", store_errors(list_apps), LIST_APPS)
    add_route(app, "GET", "/admin/apps/{app}", store_errors(show_app), SHOW_APP)
    pause = operator_only("pause applications")(store_errors(pause_app))
    add_route(app, "POST", "/admin/apps/{app}/pause", pause, PAUSE_APP)
    resume = operator_only("resume applications")(store_errors(resume_app))
    add_route(app, "POST", "/admin/apps/{app}/resume", resume, RESUME_APP)


async def _apps_lifecycle(app: web.Application) -> AsyncIterator[None]:
    store = app[APPS].store
    await store.open()
    metrics = app.get(_METRICS)
    refreshing = asyncio.create_task(refresh(store, metrics)) if metrics is not None else None
    yield
    if refreshing is not None:
        refreshing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refreshing
    await store.close()


def store_errors(handler: _Handler) -> _Handler:
    """``handler``, with the state store's errors answered as 503 without their details
    (logged): they name files, hosts and tables."""

    @functools.wraps(handler)
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except AppStoreError as error:
            log.warning("app_store_failed", path=request.path, error=str(error))
            raise Unavailable(UNAVAILABLE) from None

    return answer


def audit_of(request: web.Request) -> Audit:
    """How a change is audited: in the admin app's parked-event store's audit log."""

    async def audit(record: AuditRecord) -> None:
        await (await store_of(request)).add_audit(record)

    return audit


def who_of(request: web.Request, by: object = None) -> str:
    """Who changes an application: the token's name, after the ``by`` a client names (``cli:alice
    via admin``); :class:`InvalidInput` for a ``by`` that is not a short name."""
    name = caller(request).name
    if by is None or by == "":
        return name
    if not isinstance(by, str) or not _BY.fullmatch(by):
        raise InvalidInput("is a name of letters, digits and . _ @ : - (up to 64)", field="by")
    return f"{by} via {name}"


# -- handlers ---------------------------------------------------------------------------


async def list_apps(request: web.Request) -> web.Response:
    """GET /admin/apps"""
    statuses = await request.config_dict[APPS].list()
    return json_response({"apps": [status.to_json() for status in statuses]})


async def show_app(request: web.Request) -> web.Response:
    """GET /admin/apps/{app}: 200 for any well-formed name (never paused: running)."""
    status = await request.config_dict[APPS].status(request.match_info["app"])
    return json_response(status.to_json())


async def pause_app(request: web.Request) -> web.Response:
    """POST /admin/apps/{app}/pause {"reason"?, "by"?}"""
    body = await request_body(request, PAUSE_APP.body_fields())
    outcome = await request.config_dict[APPS].pause(
        request.match_info["app"],
        by=who_of(request, body.get("by")),
        reason=body.get("reason"),
        audit=audit_of(request),
    )
    return json_response(outcome.to_json())


async def resume_app(request: web.Request) -> web.Response:
    """POST /admin/apps/{app}/resume {"by"?}"""
    body = await request_body(request, RESUME_APP.body_fields())
    outcome = await request.config_dict[APPS].resume(
        request.match_info["app"], by=who_of(request, body.get("by")), audit=audit_of(request)
    )
    return json_response(outcome.to_json())


__all__ = ["APPS", "UNAVAILABLE", "add_app_routes", "audit_of", "store_errors", "who_of"]
