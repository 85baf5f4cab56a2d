"""The admin API's history routes: search the archive stream of accepted events.

::

    GET /admin/history?since=&until=&type=&company=&message_id=&limit=
        the first ``limit`` matching events of the window, oldest first (no payloads)
    GET /admin/history/{message_id}?since=&until=[&reveal=1]
        one event: headers and payload, contact details masked unless revealed (an
        operator's, recorded in the audit log)

``since`` is needed (ISO 8601, or a span ago: ``1h``); ``until`` defaults to now. Each
request reads the stream on a connection of its own, from the timestamp offset ``since``:
nothing is consumed and no consumer notices. 503 when RabbitMQ or the archive is
unavailable.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from router.admin.deadletters import store_of, unavailable_as_503
from router.admin.responses import json_response
from router.admin.tokens import caller, forbidden
from router.amqp.nodes import connect_first
from router.errors import InvalidInput
from router.history import views
from router.history.search import Search, find_event, search_archive
from router.settings import Settings

_SETTINGS = web.AppKey("history_settings", Settings)
_LIST_FIELDS = frozenset({"since", "until", "type", "company", "message_id", "limit"})
_SHOW_FIELDS = frozenset({"since", "until", "reveal"})
_TRUE = ("1", "true", "yes")
_CONNECTION_NAME = "attentive-router admin (history)"


def add_history_routes(app: web.Application, settings: Settings) -> None:
    """Add ``GET /admin/history`` and ``GET /admin/history/{message_id}`` to ``app``."""
    app[_SETTINGS] = settings
    app.router.add_get("/admin/history", list_history)
    app.router.add_get("/admin/history/{message_id}", unavailable_as_503(show_history))


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


def _fields(query: Mapping[str, str], known: frozenset[str]) -> dict[str, str | None]:
    """The query's parameters; :class:`InvalidInput` naming one it does not take."""
    for name in query:
        if name not in known:
            raise InvalidInput(f"is not a parameter here ({', '.join(sorted(known))})", field=name)
    return {name: query.get(name) for name in known}


__all__ = ["add_history_routes", "list_history", "show_history"]
