"""The console's parked events: where events are parked, a filtered page of them with facets,
and one entry's detail (contact details masked; an operator may reveal them, and it is logged).

    GET  /console/parked?place=&app=&type=&company=&error=&reason=&since=&until=&cursor=
    GET  /console/parked/dlq/{app}/{ref}       GET  /console/parked/unrouted/{ref}   (invalid too)
    POST /console/parked/dlq/{app}/{ref}/reveal  ...  operator: the same page, revealed

The list's URL holds the whole filter (:class:`~router.console.filters.Filter`), so a link can
be pasted in an incident channel; the replay and purge buttons post that filter (or the
entries selected, by message id) to ``/console/actions/...``. An entry's ``ref`` is its id or a
message id (the newest entry of it), as the admin API takes it (:func:`router.parked.views.find`).
Everything is read through the admin app's parked-event store; while its database cannot be
reached, each page is a 503.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web

from router.admin.deadletters import store_of, unavailable_as_503
from router.console import guard
from router.console.filters import Filter
from router.console.render import render
from router.errors import InvalidInput
from router.parked import views
from router.parked.model import ParkedEvent, Place
from router.parked.places import ParkingPlace, parking_places
from router.parked.query import DEFAULT_PAGE_SIZE, Bucket, Facets, Query
from router.parked.store import ParkedStore

#: How much of an error's first line the list shows.
_ERROR_WIDTH = 120
#: Each facet's heading and the filter field its buckets set (days set since and until).
_FACETS = (
    ("types", "Types", "type"),
    ("companies", "Companies", "company"),
    ("errors", "Errors", "error"),
    ("reasons", "Reasons", "reason"),
    ("days", "Days (UTC)", ""),
)
_DAY = timedelta(days=1)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PlaceHandler = Callable[[web.Request, Place], Awaitable[web.Response]]


def add_routes(console: web.Application) -> None:
    """Add the parked events pages to the console."""
    console.router.add_get("/parked", unavailable_as_503(parked))
    for place in Place:
        base = "/parked/dlq/{app}/{ref}" if place is Place.DLQ else f"/parked/{place.value}/{{ref}}"
        console.router.add_get(base, _in(entry_page, place))
        console.router.add_post(f"{base}/reveal", _in(reveal, place))


async def parked(request: web.Request) -> web.Response:
    """GET /console/parked?<filter>&cursor=: the parking places, the filter and its facets,
    and a page of its entries newest first (the first DLQ with entries when no place is
    given, else unrouted)."""
    store = await store_of(request)
    places = parking_places(await store.places())
    chosen = _with_place(Filter.from_params(request.query), places)
    context: dict[str, Any] = {
        "filter": chosen,
        "places": _place_links(places, chosen),
        "apps": sorted({p.app for p in places if p.app is not None}),
        "nothing_parked": not places,
        "invalid": chosen.place == Place.INVALID.value,
        "hidden": chosen.params(with_ids=False),
        "clear": Filter(place=chosen.place, app=chosen.app).url(),
        "error": "",
        "matched": 0,
        "facets": [],
        "rows": [],
        "next": "",
        "first": "",
        "where": "",
    }
    try:
        found = await _listing(store, chosen, request.query.get("cursor") or None)
    except InvalidInput as error:
        context["error"] = str(error)
        return render(request, "parked.html", context, status=400)
    context.update(found)
    return render(request, "parked.html", context)


async def entry_page(request: web.Request, place: Place) -> web.Response:
    """GET /console/parked/.../{ref}: one entry, phone numbers and emails masked."""
    store = await store_of(request)
    return _detail(request, await _entry(request, place, store), revealed=False)


async def reveal(request: web.Request, place: Place) -> web.Response:
    """POST /console/parked/.../{ref}/reveal: the entry with its contact details (an
    operator's only, recorded in the audit log and logged with who); a page answered to this
    POST alone, never cached, so the revealed details cannot be bookmarked."""
    who = guard.require_operator(request, "reveal contact details")
    store = await store_of(request)
    found = await _entry(request, place, store)
    await views.record_reveal(store, who.name, found)
    return _detail(request, found, revealed=True)


# -- the list ----------------------------------------------------------------------------


def _with_place(chosen: Filter, places: Sequence[ParkingPlace]) -> Filter:
    """``chosen``, or, when it names no place (or a DLQ but no application), the first DLQ
    with parked entries, else unrouted."""
    if chosen.place not in ("", Place.DLQ.value) or chosen.app:
        return chosen
    first = next((p for p in places if p.place is Place.DLQ), None)
    if first is None:
        return dataclasses.replace(chosen, place=Place.UNROUTED.value, app="")
    return dataclasses.replace(chosen, place=Place.DLQ.value, app=first.app or "")


@dataclass(frozen=True, slots=True)
class _PlaceLink:
    """A parking place in the list beside the page: its name, count, oldest, link."""

    label: str
    count: int
    oldest: datetime | None
    href: str
    current: bool


def _place_links(places: Sequence[ParkingPlace], chosen: Filter) -> list[_PlaceLink]:
    """Every DLQ with parked entries (and the one shown, even empty), unrouted and invalid
    always, each with its link."""
    counted = {(p.place.value, p.app or ""): p for p in places}
    keys = [key for key in counted if key[0] == Place.DLQ.value]
    if chosen.place == Place.DLQ.value and (Place.DLQ.value, chosen.app) not in counted:
        keys.append((Place.DLQ.value, chosen.app))
    keys = [*sorted(keys), (Place.UNROUTED.value, ""), (Place.INVALID.value, "")]
    links = []
    for place, app in keys:
        found = counted.get((place, app))
        links.append(
            _PlaceLink(
                label=f"{app} (dlq)" if app else place,
                count=found.count if found else 0,
                oldest=found.oldest_parked_at if found else None,
                href=Filter(place=place, app=app).url(),
                current=(place, app) == (chosen.place, chosen.app),
            )
        )
    return links


async def _listing(store: ParkedStore, chosen: Filter, cursor: str | None) -> dict[str, Any]:
    """The page of ``chosen``'s entries after ``cursor``, how many match and the facets;
    :class:`InvalidInput` naming a bad field or cursor."""
    query = chosen.query()
    page, matched, facets = await asyncio.gather(
        store.page(query, DEFAULT_PAGE_SIZE, cursor), store.count(query), store.facets(query)
    )
    return {
        "matched": matched,
        "facets": _facet_groups(facets, chosen),
        "rows": [_row(entry, query) for entry in page.entries],
        "next": chosen.url(cursor=page.next_cursor) if page.next_cursor else "",
        "first": chosen.url() if cursor else "",
        "where": views.where(query),
    }


@dataclass(frozen=True, slots=True)
class _FacetLink:
    """One bucket of a facet: its value, count, and the link that adds it to the filter
    (empty for the bucket of entries without a value, which no filter picks)."""

    label: str
    count: int
    href: str


def _facet_groups(facets: Facets, chosen: Filter) -> list[tuple[str, list[_FacetLink]]]:
    """Each facet that has buckets, as (heading, links)."""
    groups = []
    for name, heading, field in _FACETS:
        buckets: tuple[Bucket, ...] = getattr(facets, name)
        links = [_facet_link(bucket, field, chosen) for bucket in buckets]
        if links:
            groups.append((heading, links))
    return groups


def _facet_link(bucket: Bucket, field: str, chosen: Filter) -> _FacetLink:
    if bucket.value is None:
        return _FacetLink("(none)", bucket.count, "")
    if field:
        return _FacetLink(bucket.value, bucket.count, chosen.url(**{field: bucket.value}))
    start = datetime.combine(date.fromisoformat(bucket.value), time())
    since = start.strftime("%Y-%m-%dT%H:%MZ")
    until = (start + _DAY - timedelta(microseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return _FacetLink(bucket.value, bucket.count, chosen.url(since=since, until=until))


@dataclass(frozen=True, slots=True)
class _Row:
    """An entry in the list: the entry, its masked error's first line, its page."""

    entry: ParkedEvent
    error: str
    href: str


def _row(entry: ParkedEvent, query: Query) -> _Row:
    error = str(views.summary(entry)["error"] or "")
    line = error.splitlines()[0] if error else ""
    if len(line) > _ERROR_WIDTH:
        line = line[: _ERROR_WIDTH - 1] + "…"
    return _Row(entry, line, _entry_path(query.place or entry.place, entry.app, entry.id))


# -- one entry ----------------------------------------------------------------------------


def _entry_path(place: Place, app: str | None, ref: object) -> str:
    """The console path of an entry of ``place`` (``app``'s DLQ)."""
    name = quote(str(ref), safe="")
    if place is Place.DLQ:
        return f"/console/parked/dlq/{quote(app or '', safe='')}/{name}"
    return f"/console/parked/{place.value}/{name}"


def _in(handler: _PlaceHandler, place: Place) -> _Handler:
    """``handler`` for the entries of ``place``, a database outage answered as 503."""

    @functools.wraps(handler)
    @unavailable_as_503
    async def answer(request: web.Request) -> web.StreamResponse:
        return await handler(request, place)

    return answer


async def _entry(request: web.Request, place: Place, store: ParkedStore) -> ParkedEvent:
    """The entry the path names in ``place``; NotFound (404) when there is none there."""
    query = views.in_place(Query.build(place=place, app=request.match_info.get("app")))
    return await views.find(store, query, request.match_info["ref"])


def _detail(request: web.Request, entry: ParkedEvent, *, revealed: bool) -> web.Response:
    """The entry's page: facts, error and traceback, properties, headers and payload (masked
    unless ``revealed``)."""
    shown = views.detail(entry, reveal=revealed)
    chosen = Filter(place=entry.place.value, app=entry.app or "")
    path = _entry_path(entry.place, entry.app, entry.id)
    context = {
        "entry": entry,
        "shown": shown,
        "revealed": revealed,
        "properties": [(name, _text(value)) for name, value in shown["properties"].items()],
        "headers": [(name, _text(value)) for name, value in shown["headers"].items()],
        "payload": _text(shown["payload"], indent=True),
        "back": chosen.url(),
        "where": views.where(chosen.query()),
        "path": path,
        "reveal_path": f"{path}/reveal",
        "previous": _entry_path(entry.place, entry.app, entry.previous_id)
        if entry.previous_id is not None
        else "",
        "hidden": chosen.params(with_ids=False),
    }
    return render(request, "parked_entry.html", context)


def _text(value: Any, *, indent: bool = False) -> str:
    """A value as the page shows it: text as it is, anything else as JSON."""
    if isinstance(value, str):
        return value
    option = orjson.OPT_INDENT_2 if indent else 0
    return orjson.dumps(value, option=option | orjson.OPT_NON_STR_KEYS).decode()


__all__ = ["add_routes", "entry_page", "parked", "reveal"]
