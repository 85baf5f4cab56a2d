"""The admin API's claim routes, and the claims service they own.

    GET    /admin/claims[?app=APP]                          the claims
    POST   /admin/claims {"app", "events": [...], "company"?}  201 granted, 409 conflicts
    DELETE /admin/claims/{id}                               204, or 404 when there is none

Any token may list; granting and releasing are an operator's (a viewer gets 403).

At start-up every stored claim is bound at the broker again (retrying while RabbitMQ is
unreachable), so a rebuilt node gets its bindings back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from router.admin.openapi import add_route
from router.admin.responses import error_response, json_object, json_response
from router.admin.schemas_routes import ADD_CLAIMS, LIST_CLAIMS, REMOVE_CLAIM
from router.admin.tokens import operator_only
from router.claims.bindings import Bindings, BrokerUnavailable
from router.claims.model import ClaimSpec
from router.claims.open import store_from_url
from router.claims.service import ClaimsService
from router.claims.store import Granted, Refused
from router.errors import KINDS, Conflict, InvalidClaim, InvalidInput, NotFound
from router.settings import Settings

log = structlog.get_logger("router.admin.claims")

CLAIMS = web.AppKey("claims", ClaimsService)
#: Seconds between attempts to bind the stored claims while RabbitMQ is unreachable.
SYNC_RETRY_INTERVAL = 2.0
_CLAIM_BODY = 'an object: {"app", "events": [...], "company"?}'


def add_claim_routes(
    app: web.Application, settings: Settings, service: ClaimsService | None = None
) -> None:
    """Add the claim routes to the admin ``app``, which owns (opens, syncs, closes) the
    service: the one given, or one on the settings' database and broker."""
    app[CLAIMS] = service or ClaimsService(
        store_from_url(settings.database_url.reveal()),
        Bindings(settings.amqp_url.reveal(), settings.names, timeout=settings.confirm_timeout * 2),
    )
    app.cleanup_ctx.append(_claims_lifecycle)
    add_route(app, "GET", "/admin/claims", list_claims, LIST_CLAIMS)
    add_route(app, "POST", "/admin/claims", operator_only("claim events")(add_claims), ADD_CLAIMS)
    release = operator_only("release claims")(remove_claim)
    add_route(app, "DELETE", "/admin/claims/{id}", release, REMOVE_CLAIM)


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
    claims = await request.config_dict[CLAIMS].list(request.query.get("app"))
    return json_response({"claims": [c.to_json() for c in claims]})


async def add_claims(request: web.Request) -> web.Response:
    """POST /admin/claims {"app", "events": [...], "company"?}: 201 granted, 409 conflicts."""
    wanted = _claim_specs(await json_object(request, shape=_CLAIM_BODY))
    try:
        outcome = await request.config_dict[CLAIMS].claim(wanted)
    except BrokerUnavailable as error:
        return error_response(
            error, said="claim recorded but RabbitMQ could not be updated; ask again"
        )
    match outcome:
        case Granted(claims=claims, created=created):
            return json_response(
                {"claims": [c.to_json() for c in claims], "created": [c.id for c in created]},
                status=201 if created else 200,
            )
        case Refused(conflicts=conflicts):
            return json_response(
                {
                    "error": "conflict",
                    "conflicts": [
                        {"wanted": str(c.wanted.pattern), **c.held.to_json()} for c in conflicts
                    ],
                },
                status=KINDS[Conflict].http_status,
            )
    raise AssertionError("grant returns Granted or Refused")  # pragma: no cover


async def remove_claim(request: web.Request) -> web.Response:
    """DELETE /admin/claims/{id}: 204, or 404 when there is no such claim."""
    try:
        claim_id = int(request.match_info["id"])
    except ValueError:
        raise InvalidInput("a claim id is a number") from None
    try:
        removed = await request.config_dict[CLAIMS].release(claim_id)
    except BrokerUnavailable as error:
        return error_response(error, said="RabbitMQ could not be updated; nothing removed")
    if removed is None:
        raise NotFound(f"no claim {claim_id}")
    return web.Response(status=204)


def _claim_specs(data: dict[str, object]) -> list[ClaimSpec]:
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


__all__ = ["CLAIMS", "SYNC_RETRY_INTERVAL", "add_claim_routes"]
