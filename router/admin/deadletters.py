"""The admin API's dead-letter routes: list, show, replay and purge parked events.

Behind the admin app's bearer-token middleware. Each parking place has the same routes::

    GET  /admin/dlq/{app}                GET  /admin/unrouted             GET  /admin/invalid
    GET  /admin/dlq/{app}/{message_id}   GET  /admin/unrouted/{id}        GET  /admin/invalid/{id}
    POST /admin/dlq/{app}/replay         POST /admin/unrouted/replay      (invalid: 400)
    POST /admin/dlq/{app}/purge          POST /admin/unrouted/purge       POST /admin/invalid/purge

Filters (query parameters of a list, the ``filter`` object of a replay or purge): ``type``,
``company``, ``message_id`` (repeatable / a list), ``since``, ``until``, ``error``.
Answers: 400 for bad input, 404 for an unknown queue or event, 503 when RabbitMQ cannot be
reached (nothing was changed that was not reported): the admin app answers the errors.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web

from router.admin.responses import json_object, json_response
from router.deadletters import DeadLetters, Filter, Kind, Parked
from router.errors import InvalidInput
from router.settings import Settings

log = structlog.get_logger("router.admin.deadletters")

DEADLETTERS = web.AppKey("deadletters", DeadLetters)
_FILTER_KEYS = frozenset({"type", "company", "message_id", "since", "until", "error"})
_TRUE = frozenset({"1", "true", "yes", "on"})

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_deadletter_routes(app: web.Application, settings: Settings) -> None:
    """Add the dead-letter routes to the admin ``app`` (whose middleware checks the token)."""
    app[DEADLETTERS] = DeadLetters(settings.amqp_url.reveal(), settings.names)
    for kind, base in (
        (Kind.DLQ, "/admin/dlq/{app}"),
        (Kind.UNROUTED, "/admin/unrouted"),
        (Kind.INVALID, "/admin/invalid"),
    ):
        app.router.add_get(base, _route(list_parked, kind))
        app.router.add_post(base + "/replay", _route(replay_parked, kind))
        app.router.add_post(base + "/purge", _route(purge_parked, kind))
        app.router.add_get(base + "/{message_id}", _route(show_parked, kind))


def _route(
    handler: Callable[[web.Request, Parked], Awaitable[web.Response]], kind: Kind
) -> _Handler:
    """The handler for one parking place (the application's, for a DLQ)."""

    @functools.wraps(handler)
    async def answer(request: web.Request) -> web.StreamResponse:
        parked = request.app[DEADLETTERS].parked(kind, request.match_info.get("app"))
        return await handler(request, parked)

    return answer


# -- handlers ---------------------------------------------------------------------------


async def list_parked(request: web.Request, parked: Parked) -> web.Response:
    """GET ...?type=&company=&message_id=&since=&until=&error=: the matching entries."""
    query = request.query
    unknown = set(query) - _FILTER_KEYS
    if unknown:
        raise InvalidInput(f"unknown query parameter {sorted(unknown)[0]!r}")
    where = _filter(
        {key: query.get(key) for key in _FILTER_KEYS - {"message_id"}}
        | {"message_id": query.getall("message_id", [])}
    )
    summary = await request.app[DEADLETTERS].list(parked, where)
    return json_response(
        {
            "queue": parked.queue,
            "total": summary.total,
            "matched": summary.matched,
            "entries": [entry.summary() for entry in summary.entries],
        }
    )


async def show_parked(request: web.Request, parked: Parked) -> web.Response:
    """GET .../{message_id}[?reveal=1]: one event, phone numbers and emails masked."""
    reveal = request.query.get("reveal", "").lower() in _TRUE
    entry = await request.app[DEADLETTERS].show(parked, request.match_info["message_id"])
    return json_response(entry.detail(reveal=reveal))


async def replay_parked(request: web.Request, parked: Parked) -> web.Response:
    """POST .../replay {"filter", "limit", "rate", "dry_run"}: the summary."""
    if parked.replay_exchange is None:
        raise InvalidInput(f"events in {parked.queue} cannot be replayed, only purged")
    body = await _body(request, {"filter", "limit", "rate", "dry_run"})
    limit = body.get("limit")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise InvalidInput("'limit' must be a whole number of at least 1")
    rate = body.get("rate")
    if rate is not None and (
        type(rate) not in (int, float) or not math.isfinite(rate) or rate <= 0
    ):
        raise InvalidInput("'rate' must be a positive number of events per second")
    dry_run = _flag(body, "dry_run")
    summary = await request.app[DEADLETTERS].replay(
        parked, _filter(body.get("filter")), limit=limit, rate=rate, dry_run=dry_run
    )
    log.info("deadletters_replayed", queue=parked.queue, **summary.to_json())
    return json_response({"queue": parked.queue, **summary.to_json()})


async def purge_parked(request: web.Request, parked: Parked) -> web.Response:
    """POST .../purge {"filter", "confirm": true}: without confirm, only count (dry run)."""
    body = await _body(request, {"filter", "confirm"})
    confirm = _flag(body, "confirm")
    summary = await request.app[DEADLETTERS].purge(
        parked, _filter(body.get("filter")), dry_run=not confirm
    )
    if confirm:
        log.warning("deadletters_purged", queue=parked.queue, **summary.to_json())
    return json_response({"queue": parked.queue, **summary.to_json()})


# -- input ----------------------------------------------------------------------------------


async def _body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    data = await json_object(request, required=False)
    unknown = set(data) - allowed
    if unknown:
        raise InvalidInput(f"unknown field {sorted(unknown)[0]!r}; allowed: {', '.join(allowed)}")
    return data


def _flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"'{name}' must be true or false")
    return value


def _filter(raw: object) -> Filter:
    """A :class:`Filter` from the filter keys; :class:`InvalidInput` when malformed."""
    if raw is None:
        return Filter()
    if not isinstance(raw, Mapping):
        raise InvalidInput("'filter' must be an object")
    unknown = set(raw) - _FILTER_KEYS
    if unknown:
        raise InvalidInput(
            f"unknown filter {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(_FILTER_KEYS))}"
        )
    texts: dict[str, str | None] = {}
    for key in _FILTER_KEYS - {"message_id"}:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"filter {key!r} must be a string")
        texts[key] = value
    ids = raw.get("message_id") or []
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InvalidInput("filter 'message_id' must be a string or a list of strings")
    return Filter.build(
        event=texts["type"],
        company=texts["company"],
        message_ids=ids,
        since=texts["since"],
        until=texts["until"],
        error=texts["error"],
    )


__all__ = ["DEADLETTERS", "add_deadletter_routes"]
