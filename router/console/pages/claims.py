"""The console's claims page: who owns which event type for which company, and the claims.

    GET  /console/claims                the matrix, the claims, the grant form
    POST /console/claims                grant (an operator's): 303 back, or 409 naming the holder
    GET  /console/claims/{id}/release   what releasing the claim means, and the button
    POST /console/claims/{id}/release   release (an operator's): 303 back

The matrix has a row per event type (the documented ones, then any other type that unrouted
events or exact claims name) and a column for all companies and for each company a claim
names; a cell holds the applications whose claims cover it (:meth:`EventPattern.matches`,
:func:`companies_overlap`, as routing decides). A type with events in ``unrouted`` and no
owner for all companies stands out: its events have nowhere to go. Grants and releases go
through the admin API's :class:`~router.claims.service.ClaimsService`, so they are refused,
bound and logged exactly as there; after a change the browser is sent back to the page
(POST-redirect-GET), so reloading it changes nothing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiMapping

from router.admin.claims import CLAIMS
from router.admin.deadletters import store_of, unavailable_as_503
from router.claims.bindings import BrokerUnavailable
from router.claims.model import Claim, ClaimSpec, PatternKind, companies_overlap
from router.claims.service import ClaimsService
from router.claims.store import Conflict, Granted, Refused
from router.console import guard
from router.console.filters import Filter
from router.console.render import render
from router.contract.events import EVENT_TYPES, KNOWN_TYPES
from router.errors import ClaimStoreError, InvalidClaim, InvalidInput, NotFound, Unavailable
from router.parked.model import Place
from router.parked.query import Query

#: The page's path.
PATH = f"{guard.PREFIX}/claims"
#: How many event types of unrouted entries the page counts (the documented ones and more).
_UNROUTED_TYPES = 200
#: The longest free-text patterns field the grant form takes.
_MAX_PATTERNS = 2000
_SEPARATORS = re.compile(r"[\s,]+")
_CLAIMS_DOWN = "the claims database is unavailable"
_DONE = frozenset({"granted", "held", "released"})

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(console: web.Application) -> None:
    """Add this page's routes to the console."""
    console.router.add_get("/claims", claims_page)
    console.router.add_post("/claims", grant)
    console.router.add_get("/claims/{id}/release", release_page)
    console.router.add_post("/claims/{id}/release", release)


# -- the matrix (pure) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cell:
    """Who owns one event type for one company (or for all companies)."""

    apps: tuple[str, ...]
    #: Owned through a claim for all companies, not one for this company.
    inherited: bool = False


@dataclass(frozen=True, slots=True)
class Row:
    """One event type: its cells (all companies first) and its events in ``unrouted``."""

    event_type: str
    cells: tuple[Cell, ...]
    unrouted: int
    #: Whether Attentive documents the type.
    known: bool

    @property
    def unclaimed(self) -> bool:
        """Events of this type arrive, and no application takes them for all companies."""
        return self.unrouted > 0 and not self.cells[0].apps

    @property
    def owned_for(self) -> tuple[int, ...]:
        """The indexes of the company columns (from 0) where an application owns the type."""
        return tuple(i for i, cell in enumerate(self.cells[1:]) if cell.apps)


@dataclass(frozen=True, slots=True)
class Matrix:
    """Event types by companies: the company columns after "all companies", and the rows."""

    companies: tuple[str, ...]
    rows: tuple[Row, ...]

    @property
    def unclaimed(self) -> tuple[Row, ...]:
        return tuple(row for row in self.rows if row.unclaimed)


def build_matrix(claims: Sequence[Claim], unrouted: Mapping[str, int]) -> Matrix:
    """The matrix of ``claims``, with ``unrouted`` (events parked there, by type)."""
    companies = tuple(sorted({c.company for c in claims if c.company is not None}))
    named = {str(c.pattern) for c in claims if c.pattern.kind is PatternKind.EXACT}
    others = sorted((set(unrouted) | named) - KNOWN_TYPES)
    rows = tuple(
        Row(
            event_type,
            (_cell(claims, event_type, None), *(_cell(claims, event_type, c) for c in companies)),
            unrouted.get(event_type, 0),
            event_type in KNOWN_TYPES,
        )
        for event_type in (*EVENT_TYPES, *others)
    )
    return Matrix(companies, rows)


def _cell(claims: Iterable[Claim], event_type: str, company: str | None) -> Cell:
    covering = [c for c in claims if c.pattern.matches(event_type)]
    if company is None:
        return Cell(_apps(c for c in covering if c.company is None))
    own = _apps(
        c for c in covering if c.company is not None and companies_overlap(c.company, company)
    )
    if own:
        return Cell(own)
    everywhere = _apps(c for c in covering if c.company is None)
    return Cell(everywhere, inherited=bool(everywhere))


def _apps(claims: Iterable[Claim]) -> tuple[str, ...]:
    return tuple(sorted({c.app for c in claims}))


def refusal(app: str, conflict: Conflict) -> str:
    """What a refused grant says about one conflict (the command line's words)."""
    held = conflict.held
    return (
        f"refused: {app} {conflict.wanted.pattern} conflicts with claim {held.id} of "
        f"application {held.app!r} ({held.pattern}, {scope(held.company)})"
    )


def scope(company: str | None) -> str:
    return f"company {company}" if company else "all companies"


# -- the grant form ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrantForm:
    """The grant form as the user filled it in (kept to show it again after a refusal)."""

    app: str = ""
    events: tuple[str, ...] = ()
    patterns: str = ""
    company: str = ""

    @classmethod
    def from_form(cls, form: MultiMapping[Any]) -> GrantForm:
        return cls(
            app=str(form.get("app", "")).strip(),
            events=tuple(str(e) for e in form.getall("event", [])),
            patterns=str(form.get("patterns", ""))[:_MAX_PATTERNS].strip(),
            company=str(form.get("company", "")).strip(),
        )

    def specs(self) -> list[ClaimSpec]:
        """The claims asked for; :class:`InvalidClaim` saying what is missing or malformed."""
        if not self.app:
            raise InvalidClaim("name the application that is to own the events")
        wanted = [*self.events, *(p for p in _SEPARATORS.split(self.patterns) if p)]
        if not wanted:
            raise InvalidClaim("choose at least one event type, or write a pattern (sms.*, *)")
        company = self.company or None
        return [ClaimSpec.parse(self.app, pattern, company) for pattern in dict.fromkeys(wanted)]


# -- handlers ---------------------------------------------------------------------------


def _claims_errors(handler: _Handler) -> _Handler:
    """``handler``, with the parked store's errors as 503 and the claims database's too,
    without their details (which name files and hosts)."""

    @functools.wraps(handler)
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ClaimStoreError:
            raise Unavailable(_CLAIMS_DOWN) from None

    return unavailable_as_503(answer)


@_claims_errors
async def claims_page(request: web.Request) -> web.Response:
    """GET /console/claims[?done=granted|held|released&id=N...]"""
    return await _page(request, GrantForm(), refused=(), status=200)


@_claims_errors
async def grant(request: web.Request) -> web.StreamResponse:
    """POST /console/claims (app, event..., patterns, company): 303 back to the page once
    granted; the page again with 409 and the holders named when refused."""
    guard.require_operator(request, "grant claims")
    form = GrantForm.from_form(await request.post())
    wanted = form.specs()
    try:
        outcome = await _service(request).claim(wanted)
    except BrokerUnavailable as error:
        raise Unavailable(
            f"the claim is recorded but RabbitMQ could not be updated ({error}): grant it again"
        ) from None
    match outcome:
        case Granted(created=created):
            done = "granted" if created else "held"
            raise web.HTTPSeeOther(_back(done, [c.id for c in created]))
        case Refused(conflicts=conflicts):
            lines = tuple(dict.fromkeys(refusal(form.app, c) for c in conflicts))
            return await _page(request, form, refused=lines, status=409)
    raise AssertionError("grant returns Granted or Refused")  # pragma: no cover


@_claims_errors
async def release_page(request: web.Request) -> web.Response:
    """GET /console/claims/{id}/release: what releasing means, and the button that does it."""
    guard.require_operator(request, "release claims")
    claim = await _claim(request)
    context = {"claim": claim, "scope": scope(claim.company)}
    return render(request, "claims_release.html", context)


@_claims_errors
async def release(request: web.Request) -> web.StreamResponse:
    """POST /console/claims/{id}/release: 303 back to the page once released."""
    guard.require_operator(request, "release claims")
    claim_id = _claim_id(request)
    try:
        removed = await _service(request).release(claim_id)
    except BrokerUnavailable as error:
        raise Unavailable(f"RabbitMQ could not be updated ({error}): nothing removed") from None
    if removed is None:
        raise NotFound(f"no claim {claim_id}: it may have been released already")
    raise web.HTTPSeeOther(_back("released", [claim_id]))


async def _page(
    request: web.Request, form: GrantForm, *, refused: tuple[str, ...], status: int
) -> web.Response:
    claims = await _service(request).list()
    store = await store_of(request)
    facets = await store.facets(Query(place=Place.UNROUTED), _UNROUTED_TYPES)
    unrouted = {b.value: b.count for b in facets.types if b.value is not None}
    context = {
        "matrix": build_matrix(claims, unrouted),
        "claims": claims,
        "done": _done(request, claims),
        "form": form,
        "refused": refused,
        "event_types": EVENT_TYPES,
        "scope": scope,
        "dlq_url": lambda app: Filter(place=Place.DLQ.value, app=app).url(),
        "unrouted_url": lambda t: Filter(place=Place.UNROUTED.value, type=t).url(),
    }
    return render(request, "claims.html", context, status=status)


def _done(request: web.Request, claims: Sequence[Claim]) -> dict[str, Any] | None:
    """What the change before this page did (from the redirect's query), or None."""
    done = request.query.get("done", "")
    if done not in _DONE:
        return None
    ids = [int(i) for i in request.query.getall("id", []) if i.isdigit()]
    return {"what": done, "ids": ids, "claims": [c for c in claims if c.id in ids]}


def _back(done: str, ids: Iterable[int]) -> str:
    return f"{PATH}?" + urlencode([("done", done), *(("id", str(i)) for i in ids)])


def _claim_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit():
        raise InvalidInput("a claim id is a number")
    return int(raw)


async def _claim(request: web.Request) -> Claim:
    claim_id = _claim_id(request)
    claim = next((c for c in await _service(request).list() if c.id == claim_id), None)
    if claim is None:
        raise NotFound(f"no claim {claim_id}: it may have been released already")
    return claim


def _service(request: web.Request) -> ClaimsService:
    return request.config_dict[CLAIMS]


__all__ = [
    "PATH",
    "Cell",
    "GrantForm",
    "Matrix",
    "Row",
    "add_routes",
    "build_matrix",
    "refusal",
    "scope",
]
