"""The admin API's parked-event routes: list, facets, show, replay and purge, on the store.

Behind the admin app's bearer-token middleware. Each parking place has the same routes::

    GET  /admin/dlq/{app}                GET  /admin/unrouted             GET  /admin/invalid
    GET  /admin/dlq/{app}/facets         GET  /admin/unrouted/facets      GET  /admin/invalid/facets
    GET  /admin/dlq/{app}/{ref}          GET  /admin/unrouted/{ref}       GET  /admin/invalid/{ref}
    POST /admin/dlq/{app}/replay         POST /admin/unrouted/replay      (invalid: 400)
    POST /admin/dlq/{app}/purge          POST /admin/unrouted/purge       POST /admin/invalid/purge

Filters (query parameters of a list or facets, the ``filter`` object of a replay or purge):
``type``, ``company``, ``message_id`` (repeatable / a list), ``since``, ``until``, ``error``,
``reason``. A list takes ``limit`` (1-1000, 50) and ``cursor`` (the ``next_cursor`` of the
page before); pages go newest first. ``{ref}`` is an entry id or a message id (its newest
entry). ``?reveal=1`` shows contact details: an operator's, and logged. A replay or a purge
creates a job and answers 202 with it (:mod:`router.admin.jobs`); only an operator may.

The store is opened when the app starts and closed when it stops; while its database cannot
be reached, every route answers 503 (and opening is tried again at the next request).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from multidict import MultiMapping

from router.admin.openapi import add_route
from router.admin.responses import json_object, json_response
from router.admin.schemas_routes import (
    FACETS_PARKED,
    FILTERS,
    LIST_PARKED,
    PURGE_PARKED,
    REPLAY_PARKED,
    SHOW_PARKED,
)
from router.admin.tokens import caller, forbidden, operator_only
from router.errors import InvalidInput, Unavailable
from router.parked import views
from router.parked.jobs import Job, JobKind, JobRequest
from router.parked.model import Place
from router.parked.open import parked_store_from_url
from router.parked.query import DEFAULT_FACET_SIZE, DEFAULT_PAGE_SIZE, Query
from router.parked.store import ParkedStore, ParkedStoreError
from router.settings import Settings

log = structlog.get_logger("router.admin.deadletters")

_FILTER_KEYS = frozenset(param.name for param in FILTERS)
_TRUE = frozenset({"1", "true", "yes", "on"})

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PlaceHandler = Callable[[web.Request, Place, str | None], Awaitable[web.StreamResponse]]


class StoreHolder:
    """The admin app's parked-event store: opened at start, and again at a later request
    while its database could not be reached."""

    def __init__(self, store: ParkedStore) -> None:
        self.store = store
        self._opened = False
        self._lock = asyncio.Lock()

    async def get(self) -> ParkedStore:
        """The opened store; :class:`ParkedStoreError` when it cannot be opened now."""
        if not self._opened:
            async with self._lock:
                if not self._opened:
                    await self.store.open()
                    self._opened = True
        return self.store

    async def open_or_warn(self) -> None:
        try:
            await self.get()
        except ParkedStoreError as error:
            log.warning("parked_store_unavailable", error=str(error))

    async def close(self) -> None:
        if self._opened:
            self._opened = False
            with contextlib.suppress(ParkedStoreError):
                await self.store.close()


#: The admin app's parked-event store.
STORE = web.AppKey("parked_store", StoreHolder)
#: What the API says instead of the store's own error, which names hosts and tables.
UNAVAILABLE = "the parked-event database is unavailable"


async def store_of(request: web.Request) -> ParkedStore:
    """The app's opened store; :class:`~router.errors.Unavailable` (503) when its database
    cannot be reached (see :func:`unavailable_as_503`)."""
    return await request.config_dict[STORE].get()


def unavailable_as_503(handler: _Handler) -> _Handler:
    """``handler``, with the store's errors answered as 503 without their details (logged)."""

    @functools.wraps(handler)
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ParkedStoreError as error:
            log.warning("parked_store_failed", path=request.path, error=str(error))
            raise Unavailable(UNAVAILABLE) from None

    return answer


def add_deadletter_routes(
    app: web.Application, settings: Settings, store: ParkedStore | None = None
) -> None:
    """Add the parked-event routes to the admin ``app`` (whose middleware checks the token);
    the app owns (opens, closes) ``store``, else one on the settings' database."""
    app[STORE] = StoreHolder(store or parked_store_from_url(settings.database_url.reveal()))
    app.cleanup_ctx.append(_store_lifecycle)
    for place, base in (
        (Place.DLQ, "/admin/dlq/{app}"),
        (Place.UNROUTED, "/admin/unrouted"),
        (Place.INVALID, "/admin/invalid"),
    ):
        add_route(app, "GET", base, _route(list_parked, place), LIST_PARKED)
        add_route(app, "GET", base + "/facets", _route(facets_parked, place), FACETS_PARKED)
        replay = operator_only("replay events")(_route(replay_parked, place))
        add_route(app, "POST", base + "/replay", replay, REPLAY_PARKED)
        purge = operator_only("purge events")(_route(purge_parked, place))
        add_route(app, "POST", base + "/purge", purge, PURGE_PARKED)
        add_route(app, "GET", base + "/{ref}", _route(show_parked, place), SHOW_PARKED)


async def _store_lifecycle(app: web.Application) -> AsyncIterator[None]:
    holder = app[STORE]
    await holder.open_or_warn()
    yield
    await holder.close()


def _route(handler: _PlaceHandler, place: Place) -> _Handler:
    """The handler for one parking place (the application's, for a DLQ)."""

    @functools.wraps(handler)
    @unavailable_as_503
    async def answer(request: web.Request) -> web.StreamResponse:
        return await handler(request, place, request.match_info.get("app"))

    return answer


async def create_job(
    request: web.Request,
    kind: JobKind,
    query: Query,
    *,
    limit: object = None,
    rate: object = None,
    dry_run: bool = False,
) -> web.Response:
    """Create a replay or purge job of ``query``'s entries, asked for by the caller; 202 and
    the job (a keeper runs it: follow it at ``/admin/jobs/{id}``)."""
    who = caller(request).name
    wanted = JobRequest.build(
        kind, query, who, limit=whole_or_none(limit), rate=number_or_none(rate), dry_run=dry_run
    )
    job = await (await store_of(request)).create_job(wanted)
    log.info("parked_job_created", job_id=job.id, kind=kind.value, matched=job.matched, by=who)
    return job_accepted(job)


def job_accepted(job: Job, **extra: object) -> web.Response:
    """202 and ``job`` (with ``extra`` fields), and where to follow it."""
    return json_response(
        job.to_json(datetime.now(UTC)) | extra,
        status=202,
        headers={"Location": f"/admin/jobs/{job.id}"},
    )


# -- handlers ---------------------------------------------------------------------------


async def list_parked(request: web.Request, place: Place, app: str | None) -> web.Response:
    """GET ...?type=&company=&message_id=&since=&until=&error=&reason=&limit=&cursor=:
    a page of the matching entries, newest first, and how many match."""
    query = _query_of(place, app, request.query, extra=LIST_PARKED.query_names())
    limit = _whole(request.query.get("limit"), "limit", DEFAULT_PAGE_SIZE)
    store = await store_of(request)
    page, matched = await asyncio.gather(
        store.page(query, limit, request.query.get("cursor") or None), store.count(query)
    )
    return json_response(
        {"place": place.value, "app": app, "matched": matched, **views.page_json(page)}
    )


async def facets_parked(request: web.Request, place: Place, app: str | None) -> web.Response:
    """GET .../facets?<filters>&size=: counts by type, company, error kind, reason and day."""
    query = _query_of(place, app, request.query, extra=FACETS_PARKED.query_names())
    size = _whole(request.query.get("size"), "size", DEFAULT_FACET_SIZE)
    facets = await (await store_of(request)).facets(query, size)
    return json_response({"place": place.value, "app": app, **views.facets_json(facets)})


async def show_parked(request: web.Request, place: Place, app: str | None) -> web.Response:
    """GET .../{ref}[?reveal=1]: one entry, phone numbers and emails masked unless revealed
    (an operator's, logged)."""
    reveal = request.query.get("reveal", "").lower() in _TRUE
    if reveal and (refused := forbidden(request, "reveal contact details")) is not None:
        return refused
    store = await store_of(request)
    in_place = views.in_place(Query.build(place=place, app=app))
    entry = await views.find(store, in_place, request.match_info["ref"])
    if reveal:
        await views.record_reveal(store, caller(request).name, entry)
    return json_response(views.detail(entry, reveal=reveal))


async def replay_parked(request: web.Request, place: Place, app: str | None) -> web.Response:
    """POST .../replay {"filter", "limit", "rate", "dry_run"}: 202 and the job."""
    if place is Place.INVALID:
        raise InvalidInput("invalid events cannot be replayed, only purged")
    body = await request_body(request, REPLAY_PARKED.body_fields())
    return await create_job(
        request,
        JobKind.REPLAY,
        _filter(place, app, body.get("filter")),
        limit=body.get("limit"),
        rate=body.get("rate"),
        dry_run=flag(body, "dry_run"),
    )


async def purge_parked(request: web.Request, place: Place, app: str | None) -> web.Response:
    """POST .../purge {"filter", "confirm": true}: 202 and the job (a dry run, which only
    counts, without confirm)."""
    body = await request_body(request, PURGE_PARKED.body_fields())
    return await create_job(
        request,
        JobKind.PURGE,
        _filter(place, app, body.get("filter")),
        dry_run=not flag(body, "confirm"),
    )


# -- input ----------------------------------------------------------------------------------


def _query_of(
    place: Place, app: str | None, params: MultiMapping[str], *, extra: AbstractSet[str]
) -> Query:
    unknown = set(params) - _FILTER_KEYS - extra
    if unknown:
        raise InvalidInput(f"unknown query parameter {sorted(unknown)[0]!r}")
    ids = params.getall("message_id", [])
    return _build(place, app, {key: params.get(key) for key in _FILTER_KEYS}, ids)


def _filter(place: Place, app: str | None, raw: object) -> Query:
    """The query of a replay's or purge's ``filter`` object; :class:`InvalidInput` when
    malformed."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InvalidInput("'filter' must be an object")
    unknown = set(raw) - _FILTER_KEYS
    if unknown:
        raise InvalidInput(
            f"unknown filter {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(_FILTER_KEYS))}"
        )
    texts: dict[str, Any] = {}
    for key in _FILTER_KEYS - {"message_id"}:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"filter {key!r} must be a string")
        texts[key] = value
    ids = raw.get("message_id")
    if ids is None or ids == "":
        ids = []
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InvalidInput("filter 'message_id' must be a string or a list of strings")
    return _build(place, app, texts, ids)


def _build(place: Place, app: str | None, texts: Mapping[str, Any], ids: list[str]) -> Query:
    return views.in_place(
        Query.build(
            place=place,
            app=app,
            event=texts.get("type"),
            company=texts.get("company"),
            message_ids=ids,
            since=texts.get("since"),
            until=texts.get("until"),
            error=texts.get("error"),
            reason=texts.get("reason"),
        )
    )


def _whole(raw: str | None, name: str, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"must be a whole number, not {raw!r}", field=name) from None


def whole_or_none(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput("must be a whole number of at least 1", field="limit")
    return value


def number_or_none(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput("must be a positive number of events per second", field="rate")
    return float(value)


async def request_body(request: web.Request, allowed: AbstractSet[str]) -> dict[str, Any]:
    data = await json_object(request, required=False)
    unknown = set(data) - allowed
    if unknown:
        raise InvalidInput(
            f"unknown field {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(allowed))}"
        )
    return data


def flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"'{name}' must be true or false")
    return value


__all__ = [
    "STORE",
    "UNAVAILABLE",
    "StoreHolder",
    "add_deadletter_routes",
    "create_job",
    "flag",
    "job_accepted",
    "number_or_none",
    "request_body",
    "store_of",
    "unavailable_as_503",
    "whole_or_none",
]
