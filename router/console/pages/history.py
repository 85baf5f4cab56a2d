"""The console's history: a window of the archive of accepted events, searched by type,
company and message id, and one archived event in full (contact details masked; an operator
may reveal them, and it is logged).

    GET  /console/history?since=1h&until=&type=&company=&message_id=&limit=
    GET  /console/history/{message_id}?since=&until=
    POST /console/history/{message_id}/reveal      operator: the same page, revealed

Each page reads the stream :mod:`router.history.search` reads, on a connection of its own,
from the timestamp offset ``since`` (the last hour unless given): nothing is consumed and no
consumer notices. A search costs the window it reads, so the form starts narrow. Bad input
is answered 400 on the page itself with the reason naming the field, as the admin API does;
an archive that cannot be read (RabbitMQ unreachable, no archive stream) 503, saying why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import orjson
import structlog
from aiohttp import web

from router.admin.deadletters import store_of, unavailable_as_503
from router.admin.tokens import Caller
from router.amqp.nodes import connect_first
from router.console import guard
from router.console.keys import SETTINGS
from router.console.render import render
from router.errors import InvalidInput, NotFound, Unavailable, codes_for
from router.history import views
from router.history.reader import Archived
from router.history.search import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Found,
    Search,
    find_event,
    search_archive,
)
from router.settings import Settings

log = structlog.get_logger("router.console.history")

#: The window a search covers when the page is opened without one.
DEFAULT_SINCE = "1h"
#: The fields of the search form, in the order a URL lists them.
FIELDS = ("since", "until", "type", "company", "message_id", "limit")
_CONNECTION_NAME = "attentive-router console (history)"
#: How much of a message id the list shows.
_ID_WIDTH = 16
#: What a page answers in place of the events when the search could not run.
_REFUSED = (InvalidInput, NotFound, Unavailable)


def add_routes(console: web.Application) -> None:
    """Add the history pages to the console."""
    console.router.add_get("/history", history)
    console.router.add_get("/history/{message_id}", event_page)
    console.router.add_post("/history/{message_id}/reveal", unavailable_as_503(reveal))


async def history(request: web.Request) -> web.Response:
    """GET /console/history?<search>: the form, and the window's matching events oldest
    first (no payloads), how many were read, and a link to more when more match."""
    form = _form(request.query)
    settings = request.config_dict[SETTINGS]
    context: dict[str, Any] = {
        "form": form,
        "limit_default": DEFAULT_LIMIT,
        "limit_max": MAX_LIMIT,
        "archive_off": not settings.archive,
        "stream": settings.names.archive_stream,
        "error": "",
        "search": None,
        "found": None,
        "rows": [],
        "more": "",
    }
    try:
        search = Search.parse(form)
        found = await _search(settings, search)
    except _REFUSED as error:
        context["error"] = _reason(request, error)
        return render(request, "history.html", context, status=codes_for(error).http_status)
    context.update(
        search=search,
        found=found,
        rows=[_Row(event, _event_path(event.message_id, search)) for event in found.events],
        more=_more(form, search) if found.more else "",
    )
    return render(request, "history.html", context)


async def event_page(request: web.Request) -> web.Response:
    """GET /console/history/{message_id}?since=&until=: one archived event, phone numbers
    and emails masked."""
    return await _event(request, request.query, revealed_to=None)


async def reveal(request: web.Request) -> web.Response:
    """POST /console/history/{message_id}/reveal (since, until): the event with its contact
    details (an operator's only, recorded in the audit log first); a page answered to this
    POST alone, never cached, so the revealed details cannot be bookmarked."""
    who = guard.require_operator(request, "reveal contact details")
    return await _event(request, await request.post(), revealed_to=who)


# -- the list ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    """An event in the list and its page."""

    event: Archived
    href: str

    @property
    def label(self) -> str:
        """The start of the message id (the link's title holds it whole)."""
        whole = self.event.message_id
        return whole if len(whole) <= _ID_WIDTH else whole[:_ID_WIDTH] + "…"


def _form(params: Mapping[str, Any]) -> dict[str, str]:
    """The search form's fields as given (``since`` the last hour when absent, not when
    left blank: a blank one is refused, naming it)."""
    form = {name: str(params.get(name, "") or "").strip() for name in FIELDS}
    if "since" not in params:
        form["since"] = DEFAULT_SINCE
    return form


def _more(form: Mapping[str, str], search: Search) -> str:
    """The same search with twice the limit (at most :data:`MAX_LIMIT`); "" at the most."""
    if search.limit >= MAX_LIMIT:
        return ""
    fields = {**form, "limit": str(min(search.limit * 2, MAX_LIMIT))}
    return "/console/history?" + urlencode({k: v for k, v in fields.items() if v})


# -- one event ----------------------------------------------------------------------------


async def _event(
    request: web.Request, params: Mapping[str, Any], *, revealed_to: Caller | None
) -> web.Response:
    """The page of the event the path names, in the window ``params`` give (the last hour
    unless they do); revealed, and the reveal audited, for ``revealed_to``."""
    settings = request.config_dict[SETTINGS]
    message_id = request.match_info["message_id"]
    fields = _form(params)
    context: dict[str, Any] = {"message_id": message_id, "error": "", "event": None}
    try:
        search = Search.parse(
            {"since": fields["since"], "until": fields["until"], "message_id": message_id}
        )
        event = await _find(settings, search)
    except _REFUSED as error:
        context["error"] = _reason(request, error)
        context["back"] = _list_path(fields)
        return render(request, "history_entry.html", context, status=codes_for(error).http_status)
    if revealed_to is not None:
        stream = settings.names.archive_stream
        await views.record_reveal(await store_of(request), revealed_to.name, event, stream)
    shown = views.detail(event, reveal=revealed_to is not None)
    window = _window(search)
    path = _event_path(message_id, search)
    context.update(
        event=event,
        revealed=revealed_to is not None,
        shown=shown,
        headers=[(name, _text(value)) for name, value in shown["headers"].items()],
        payload=_text(shown["payload"], indent=True),
        path=path,
        reveal_path=path.partition("?")[0] + "/reveal",
        window=window,
        back=_list_path(dict(window)),
    )
    return render(request, "history_entry.html", context)


def _event_path(message_id: str, search: Search) -> str:
    """The console page of ``message_id`` in ``search``'s window (its ends as moments, so
    the link finds the event later too)."""
    return f"/console/history/{quote(message_id, safe='')}?{urlencode(_window(search))}"


def _window(search: Search) -> list[tuple[str, str]]:
    """``since`` and ``until`` (when set) of ``search``, as moments to the microsecond."""
    ends = [("since", _moment(search.since))]
    if search.until is not None:
        ends.append(("until", _moment(search.until)))
    return ends


def _list_path(fields: Mapping[str, str]) -> str:
    window = {name: fields[name] for name in ("since", "until") if fields.get(name)}
    return "/console/history" + ("?" + urlencode(window) if window else "")


def _moment(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _text(value: Any, *, indent: bool = False) -> str:
    """A header's value or the payload as the page shows it: text as it is, else JSON."""
    if isinstance(value, str):
        return value
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if indent else 0)
    return orjson.dumps(value, option=option).decode()


# -- reading the archive ------------------------------------------------------------------


async def _search(settings: Settings, search: Search) -> Found:
    connection, _ = await connect_first(settings.amqp_url.reveal(), name=_CONNECTION_NAME)
    async with connection:
        return await search_archive(connection, settings.names, search)


async def _find(settings: Settings, search: Search) -> Archived:
    connection, _ = await connect_first(settings.amqp_url.reveal(), name=_CONNECTION_NAME)
    async with connection:
        return await find_event(connection, settings.names, search)


def _reason(request: web.Request, error: Exception) -> str:
    """What the page says of ``error`` (an outage is logged too)."""
    if isinstance(error, Unavailable):
        log.warning("console_history_unavailable", path=request.path, error=str(error))
    return str(error)


__all__ = ["DEFAULT_SINCE", "FIELDS", "add_routes", "event_page", "history", "reveal"]
