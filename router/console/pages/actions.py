"""Replay and purge from the console: a count first, a confirmation that says what will happen,
then a job in the parked-event store (which a keeper runs) and its page.

The parked events page posts its filter (:class:`~router.console.filters.Filter`: the current
filter, or the entries selected by message id) to::

    POST /console/actions/replay     operator: the count and the confirmation; with
                                     ``confirm=1`` (and ``limit``, ``rate``), the job
    POST /console/actions/purge      operator: the count and a confirmation that asks for the
                                     count to be typed back (``typed``); with ``confirm=1``
                                     and the right count, the job

A created job is answered with a redirect (303) to ``/console/jobs/{id}``. The job is made as
the admin API makes it (:class:`~router.parked.jobs.JobRequest`, the store's ``create_job``),
asked for by the caller's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from multidict import MultiMapping

from router.admin.deadletters import store_of, unavailable_as_503
from router.console import guard
from router.console.filters import Filter
from router.console.keys import SETTINGS
from router.console.render import render
from router.contract.names import Names
from router.errors import InvalidInput
from router.parked.jobs import JobKind, JobRequest
from router.parked.model import Place
from router.parked.query import Query
from router.parked.store import ParkedStore

log = structlog.get_logger("router.console.actions")

_CONFIRMED = "1"


def add_routes(console: web.Application) -> None:
    """Add the replay and purge actions to the console."""
    console.router.add_post("/actions/replay", unavailable_as_503(replay))
    console.router.add_post("/actions/purge", unavailable_as_503(purge))


async def replay(request: web.Request) -> web.StreamResponse:
    """POST /console/actions/replay: how many entries a replay of the filter covers and where
    they go; with ``confirm=1``, the job (a 303 to its page)."""
    asked = await _Asked.read(request, JobKind.REPLAY)
    if not asked.confirmed:
        return asked.page()
    try:
        limit = _whole(asked.form.get("limit"), "limit")
        wanted = asked.job(limit=limit, rate=_number(asked.form.get("rate"), "rate"))
    except InvalidInput as error:
        return asked.page(error=str(error), status=400)
    return await asked.start(wanted)


async def purge(request: web.Request) -> web.StreamResponse:
    """POST /console/actions/purge: how many entries a purge of the filter covers; with
    ``confirm=1`` and that count typed back (``typed``), the job (a 303 to its page)."""
    asked = await _Asked.read(request, JobKind.PURGE)
    if not asked.confirmed:
        return asked.page()
    matched = asked.matched
    if str(asked.form.get("shown", "")) != str(matched):
        note = f"The count changed since: {matched:,} entries match now. Type the new count."
        return asked.page(note=note, status=409)
    if _digits(asked.form.get("typed")) != str(matched):
        error = f"That is not the count: type {matched:,} to purge them."
        return asked.page(error=error, status=400)
    return await asked.start(asked.job())


@dataclass(frozen=True, slots=True)
class _Asked:
    """A replay or purge an operator asks for: the form, its filter and query, and how many
    entries match now."""

    request: web.Request
    kind: JobKind
    who: str
    form: MultiMapping[Any]
    chosen: Filter
    query: Query
    store: ParkedStore
    matched: int

    @classmethod
    async def read(cls, request: web.Request, kind: JobKind) -> _Asked:
        """The request's; 403 for a viewer, 400 for a bad filter or an invalid replay."""
        who = guard.require_operator(request, f"{kind.value} events")
        form = await request.post()
        chosen = Filter.from_params(form)
        if form.get("selected") and not chosen.message_ids:
            raise InvalidInput(f"tick the events to {kind.value} first (none was selected)")
        if kind is JobKind.REPLAY and chosen.parking_place is Place.INVALID:
            raise InvalidInput("invalid events cannot be replayed, only purged")
        query = chosen.query()
        store = await store_of(request)
        matched = await store.count(query)
        return cls(request, kind, who.name, form, chosen, query, store, matched)

    @property
    def confirmed(self) -> bool:
        """Whether the confirmation was answered (and there is something to do)."""
        return self.form.get("confirm") == _CONFIRMED and self.matched > 0

    def job(self, *, limit: int | None = None, rate: float | None = None) -> JobRequest:
        return JobRequest.build(self.kind, self.query, self.who, limit=limit, rate=rate)

    async def start(self, wanted: JobRequest) -> web.StreamResponse:
        """Create the job; a 303 to its page."""
        job = await self.store.create_job(wanted)
        kind, matched = job.kind.value, job.matched
        log.info("parked_job_created", job_id=job.id, kind=kind, matched=matched, by=self.who)
        raise web.HTTPSeeOther(f"{guard.PREFIX}/jobs/{job.id}")

    def page(self, *, error: str = "", note: str = "", status: int = 200) -> web.Response:
        """The confirmation (again, with an ``error`` or a ``note``)."""
        place = self.chosen.parking_place
        to = ""
        if self.kind is JobKind.REPLAY:
            to = destination(self.request.config_dict[SETTINGS].names, place, self.chosen.app)
        context = {
            "kind": self.kind.value,
            "matched": self.matched,
            "where": self.chosen.describe(),
            "destination": to,
            "unrouted": place is Place.UNROUTED,
            "fields": self.chosen.params(),
            "back": self.chosen.url(),
            "limit": str(self.form.get("limit", "")),
            "rate": str(self.form.get("rate", "")),
            "error": error,
            "note": note,
        }
        return render(self.request, "confirm.html", context, status=status)


def destination(names: Names, place: Place | None, app: str | None) -> str:
    """Where a replay of ``place``'s entries goes, as ops name it: a DLQ's application queue
    (through its requeue exchange), else the events exchange (see
    :func:`router.parked.replay.destination`)."""
    if place is Place.DLQ and app:
        return names.app_queue(app)
    return names.events_exchange


def _digits(raw: object) -> str:
    """A typed count without its separators (``1,234`` is ``1234``)."""
    return "".join(str(raw or "").replace(",", "").split())


def _whole(raw: object, name: str) -> int | None:
    text = _digits(raw)
    if not text:
        return None
    if not text.isascii() or not text.isdigit():
        raise InvalidInput(f"must be a whole number of 1 or more, not {raw!r}", field=name)
    return int(text)


def _number(raw: object, name: str) -> float | None:
    text = str(raw or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise InvalidInput(
            f"must be a number of events a second, not {raw!r}", field=name
        ) from None


__all__ = ["add_routes", "destination"]
