"""How many events are parked where: per parking place, application and reason. Pure.

:meth:`~router.parked.store.ParkedStore.places` counts the parked entries (not the replayed or
purged ones) of every (place, application, reason) that has any, with the oldest parked time,
in one grouped read of the index by reason (:func:`places_read`). :func:`parking_places` sums
the reasons of each place, as a list of places (each DLQ by application, unrouted, invalid)
shows them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from router.parked.model import Place, State
from router.parked.query import from_micros
from router.parked.sql import Read, Statement

#: The order places are listed in: the DLQs first, then unrouted, then invalid.
_PLACE_ORDER = {place: n for n, place in enumerate(Place)}


@dataclass(frozen=True, slots=True)
class PlaceCount:
    """The parked entries of one place, application (None: unrouted and invalid have none)
    and reason (None: entries without one): how many, and when the oldest was parked."""

    place: Place
    app: str | None
    reason: str | None
    count: int
    oldest_parked_at: datetime


@dataclass(frozen=True, slots=True)
class ParkingPlace:
    """One parking place (a DLQ is an application's): its parked entries over every reason,
    the oldest of them, and the counts by reason it sums (largest first)."""

    place: Place
    app: str | None
    count: int
    oldest_parked_at: datetime
    reasons: tuple[PlaceCount, ...]


def places_read(table: str, *, numbered: bool) -> Read:
    """The counts of parked entries by (place, application, reason), oldest parked time too.

    Read from the index by reason alone (place, application, state, reason, then parked time),
    grouped in its order, so nothing is sorted and no row is read: PostgreSQL picks it by
    itself; SQLite, which would rather find the parked entries by the index on state and then
    read each row and sort, is kept off that index by ``+state`` (the same test, not usable as
    an index's key).
    """
    statement = Statement(numbered)
    state = "state" if numbered else "+state"
    text = (
        f"SELECT place, app, reason, count(*), min(parked_at) FROM {table} "
        f"WHERE {state} = {statement.bind(State.PARKED.value)} "
        "GROUP BY place, app, state, reason"
    )
    return Read(text, statement.params)


def places_of(rows: Iterable[Sequence[Any]], *, native_times: bool) -> list[PlaceCount]:
    """The counts the rows of :func:`places_read` make, in the order of :func:`ordered`."""
    counts = [
        PlaceCount(
            place=Place(place),
            app=app or None,
            reason=reason,
            count=int(count),
            oldest_parked_at=oldest.astimezone(UTC) if native_times else from_micros(int(oldest)),
        )
        for place, app, reason, count, oldest in rows
    ]
    return sorted(counts, key=_order)


def parking_places(counts: Iterable[PlaceCount]) -> list[ParkingPlace]:
    """``counts`` summed over their reasons: one item a parking place, the DLQs first (by
    application), then unrouted, then invalid."""
    grouped: dict[tuple[Place, str | None], list[PlaceCount]] = {}
    for count in counts:
        grouped.setdefault((count.place, count.app), []).append(count)
    places = [
        ParkingPlace(
            place=place,
            app=app,
            count=sum(c.count for c in reasons),
            oldest_parked_at=min(c.oldest_parked_at for c in reasons),
            reasons=tuple(sorted(reasons, key=lambda c: (-c.count, c.reason or ""))),
        )
        for (place, app), reasons in grouped.items()
    ]
    return sorted(places, key=lambda p: (_PLACE_ORDER[p.place], p.app or ""))


def _order(count: PlaceCount) -> tuple[int, str, bool, str]:
    return (_PLACE_ORDER[count.place], count.app or "", count.reason is None, count.reason or "")


__all__ = ["ParkingPlace", "PlaceCount", "parking_places", "places_of", "places_read"]
