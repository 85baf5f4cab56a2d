"""The admin API's history routes: search the archive stream of accepted events.

::

    GET /admin/history?since=&until=&type=&company=&message_id=&limit=
        the first ``limit`` matching events of the window, oldest first (no payloads)
    GET /admin/history/{message_id}?since=&until=[&reveal=1]
        one event: headers and payload, contact details masked unless revealed (an
        operator's, recorded in the audit log)
    POST /admin/history/replay {"since", "until"?, "type"?, "company"?, "message_id"?,
                                "to_app", "limit"?, "rate"?, "dry_run"?}
        an operator's backfill: the window's matching events that ``to_app`` claims, to its
        queue alone, as a job (202 and the job, with ``unclaimed``: the matches that belong
        to other applications); 409 when ``to_app`` claims none of the events asked for

``since`` is needed (ISO 8601, or a span ago: ``1h``); ``until`` defaults to now. Each
request reads the stream on a connection of its own, from the timestamp offset ``since``:
nothing is consumed and no consumer notices. 503 when RabbitMQ or the archive is
unavailable.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from aiohttp import web

from router.admin.claims import CLAIMS
from router.admin.deadletters import (
    flag,
    job_accepted,
    number_or_none,
    request_body,
    store_of,
    unavailable_as_503,
    whole_or_none,
)
from router.admin.openapi import add_route
from router.admin.responses import json_response
from router.admin.schemas_routes import BACKFILL, LIST_HISTORY, SHOW_HISTORY
from router.admin.tokens import caller, forbidden, operator_only
from router.amqp.nodes import connect_first
from router.claims.model import validate_app
from router.errors import InvalidInput
from router.history import views
from router.history.backfill import request_backfill
from router.history.search import Search, find_event, search_archive
from router.settings import Settings

log = structlog.get_logger("router.admin.history")

_SETTINGS = web.AppKey("history_settings", Settings)
_BACKFILL_FIELDS = BACKFILL.body_fields()
_LIST_FIELDS = LIST_HISTORY.query_names()
_SHOW_FIELDS = SHOW_HISTORY.query_names()
_TRUE = ("1", "true", "yes")
_CONNECTION_NAME = "attentive-router admin (history)"


def add_history_routes(app: web.Application, settings: Settings) -> None:
    """Add ``GET /admin/history`` and ``GET /admin/history/{message_id}`` to ``app``."""
    app[_SETTINGS] = settings
    add_route(app, "GET", "/admin/history", list_history, LIST_HISTORY)
    show = unavailable_as_503(show_history)
    add_route(app, "GET", "/admin/history/{message_id}", show, SHOW_HISTORY)
    replay = operator_only("backfill events")(unavailable_as_503(backfill))
    add_route(app, "POST", "/admin/history/replay", replay, BACKFILL)


async def list_history(request: web.Request) -> web.Response:
    """GET /admin/history?<window and filters>: the matching events, oldest first."""
    search = Search.parse(_fields(request.query, _LIST_FIELDS))
    settings = request.config_dict[_SETTINGS]
    connection, _ = await connect_first(settings.amqp_url.reveal(), name=_CONNECTION_NAME)
    async with connection:
        found = await search_archive(connection, settings.names, search)
    return json_response({"filter": search.filters(), **views.found_json(found)})


async def show_history(request: web.Request) -> web.Response:
    """GET /admin/history/{message_id}?since=&until=[&reveal=1]: one archived event."""
    fields = _fields(request.query, _SHOW_FIELDS)
    reveal = (fields.pop("reveal", None) or "").lower() in _TRUE
    if reveal and (refused := forbidden(request, "reveal contact details")) is not None:
        return refused
    search = Search.parse({**fields, "message_id": request.match_info["message_id"]})
    settings = request.config_dict[_SETTINGS]
    connection, _ = await connect_first(settings.amqp_url.reveal(), name=_CONNECTION_NAME)
    async with connection:
        event = await find_event(connection, settings.names, search)
    if reveal:
        stream = settings.names.archive_stream
        await views.record_reveal(await store_of(request), caller(request).name, event, stream)
    return json_response(views.detail(event, reveal=reveal))


async def backfill(request: web.Request) -> web.Response:
    """POST /admin/history/replay: a backfill job of the archive's window to one app."""
    body = await request_body(request, _BACKFILL_FIELDS)
    texts = {name: _text(body, name) for name in ("since", "until", "type", "company")}
    search = Search.parse({**texts, "message_id": _text(body, "message_id")})
    to_app = _text(body, "to_app")
    if not to_app:
        raise InvalidInput("is needed: the application the events go to", field="to_app")
    app = validate_app(to_app)
    claims = await request.config_dict[CLAIMS].list(app)
    settings = request.config_dict[_SETTINGS]
    connection, _ = await connect_first(settings.amqp_url.reveal(), name=_CONNECTION_NAME)
    async with connection:
        wanted, plan = await request_backfill(
            connection,
            settings.names,
            search,
            app,
            claims,
            caller(request).name,
            limit=whole_or_none(body.get("limit")),
            rate=number_or_none(body.get("rate")),
            dry_run=flag(body, "dry_run"),
        )
    job = await (await store_of(request)).create_job(wanted)
    log.info(
        "backfill_created", job_id=job.id, app=app, matched=job.matched, by=wanted.requested_by
    )
    return job_accepted(job, unclaimed=plan.unclaimed)


def _text(body: Mapping[str, object], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidInput("must be a string", field=name)
    return value


def _fields(query: Mapping[str, str], known: frozenset[str]) -> dict[str, str | None]:
    """The query's parameters; :class:`InvalidInput` naming one it does not take."""
    for name in query:
        if name not in known:
            raise InvalidInput(f"is not a parameter here ({', '.join(sorted(known))})", field=name)
    return {name: query.get(name) for name in known}


__all__ = ["add_history_routes", "backfill", "list_history", "show_history"]
