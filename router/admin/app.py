"""The admin API: claims (and, later, dead letters), on its own listener, behind a bearer token.

Requests without the right ``Authorization: Bearer <ROUTER_ADMIN_TOKEN>`` get 401 and
nothing else: not even whether a path exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from router.admin.deadletters import add_deadletter_routes
from router.claims.bindings import Bindings, BrokerUnavailable
from router.claims.model import ClaimSpec
from router.claims.open import store_from_url
from router.claims.service import ClaimsService
from router.claims.store import Granted, Refused
from router.errors import ClaimStoreError, InvalidClaim
from router.settings import Settings

log = structlog.get_logger("router.admin.app")

CLAIMS = web.AppKey("claims", ClaimsService)
_TOKEN = web.AppKey("token", bytes)
#: Seconds between attempts to bind the stored claims while RabbitMQ is unreachable.
SYNC_RETRY_INTERVAL = 2.0


def create_admin_app(settings: Settings, service: ClaimsService | None = None) -> web.Application:
    """The admin application; it owns (opens, syncs, closes) the claims service it is given."""
    token = settings.require_admin_token()
    app = web.Application(middlewares=[_require_token, _errors_as_json], client_max_size=64 * 1024)
    app[_TOKEN] = token.encode()
    app[CLAIMS] = service or ClaimsService(
        store_from_url(settings.database_url),
        Bindings(settings.amqp_url, settings.names, timeout=settings.confirm_timeout * 2),
    )
    app.cleanup_ctx.append(_claims_lifecycle)
    app.router.add_get("/admin/claims", list_claims)
    app.router.add_post("/admin/claims", add_claims)
    app.router.add_delete("/admin/claims/{id}", remove_claim)
    add_deadletter_routes(app, settings)
    return app


async def _claims_lifecycle(app: web.Application) -> AsyncIterator[None]:
    service = app[CLAIMS]
    await service.store.open()
    syncing = asyncio.create_task(_sync_until_done(service))
    yield
    syncing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await syncing
    await service.store.close()


async def _sync_until_done(service: ClaimsService) -> None:
    """Bind every stored claim, retrying while RabbitMQ is unreachable."""
    while True:
        try:
            await service.sync()
            return
        except BrokerUnavailable as error:
            log.warning("claims_sync_retrying", error=str(error))
            await asyncio.sleep(SYNC_RETRY_INTERVAL)


# -- handlers ---------------------------------------------------------------------------


async def list_claims(request: web.Request) -> web.Response:
    """GET /admin/claims[?app=APP]"""
    claims = await request.app[CLAIMS].list(request.query.get("app"))
    return _json({"claims": [c.to_json() for c in claims]})


async def add_claims(request: web.Request) -> web.Response:
    """POST /admin/claims {"app", "events": [...], "company"?}: 201 granted, 409 conflicts."""
    wanted = _parse_claim_request(await request.read())
    try:
        outcome = await request.app[CLAIMS].claim(wanted)
    except BrokerUnavailable as error:
        return _json(
            {
                "error": "claim recorded but RabbitMQ could not be updated; ask again",
                "reason": str(error),
            },
            status=503,
            headers={"Retry-After": "5"},
        )
    match outcome:
        case Granted(claims=claims, created=created):
            return _json(
                {"claims": [c.to_json() for c in claims], "created": [c.id for c in created]},
                status=201 if created else 200,
            )
        case Refused(conflicts=conflicts):
            return _json(
                {
                    "error": "conflict",
                    "conflicts": [
                        {"wanted": str(c.wanted.pattern), **c.held.to_json()} for c in conflicts
                    ],
                },
                status=409,
            )
    raise AssertionError("grant returns Granted or Refused")  # pragma: no cover


async def remove_claim(request: web.Request) -> web.Response:
    """DELETE /admin/claims/{id}: 204, or 404 when there is no such claim."""
    try:
        claim_id = int(request.match_info["id"])
    except ValueError:
        raise InvalidClaim("a claim id is a number") from None
    try:
        removed = await request.app[CLAIMS].release(claim_id)
    except BrokerUnavailable as error:
        return _json(
            {"error": "RabbitMQ could not be updated; nothing removed", "reason": str(error)},
            status=503,
            headers={"Retry-After": "5"},
        )
    if removed is None:
        return _json({"error": f"no claim {claim_id}"}, status=404)
    return web.Response(status=204)


def _parse_claim_request(body: bytes) -> list[ClaimSpec]:
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidClaim("the body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidClaim('the body must be an object: {"app", "events": [...], "company"?}')
    app, events, company = data.get("app"), data.get("events"), data.get("company")
    if isinstance(events, str):
        events = [events]
    if not isinstance(app, str):
        raise InvalidClaim("'app' must be a string")
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise InvalidClaim("'events' must be a non-empty list of event patterns")
    if company is not None and not isinstance(company, str):
        raise InvalidClaim("'company' must be a string (omit it for all companies)")
    return [ClaimSpec.parse(app, pattern, company) for pattern in events]


# -- middleware -----------------------------------------------------------------------------

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _require_token(request: web.Request, handler: _Handler) -> web.StreamResponse:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), request.app[_TOKEN]
    ):
        return _json({"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)


@web.middleware
async def _errors_as_json(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except InvalidClaim as error:
        return _json({"error": str(error)}, status=400)
    except ClaimStoreError as error:
        log.error("claims_store_error", error=str(error))
        return _json({"error": "the claims database is unavailable"}, status=503)
    except web.HTTPException as error:
        return _json({"error": error.reason.lower()}, status=error.status)
    except Exception:
        log.exception("admin_unhandled_error", path=request.path, method=request.method)
        return _json({"error": "internal error"}, status=500)


def _json(
    payload: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers
    )


__all__ = ["CLAIMS", "create_admin_app"]
