"""How many events are parked where: the store's counts per place, application and reason,
on SQLite and PostgreSQL, read from an index without sorting."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from pamqp.commands import Basic

from router.parked.model import ParkedEvent, Place, State, parked_event
from router.parked.places import ParkingPlace, PlaceCount, parking_places, places_read
from router.parked.query import Query
from router.parked.store import ParkedStore
from tests.environment import no_router_environment
from tests.parked_stores import NOW, POSTGRES_URL, TIMEOUT, Backend, body_of, dead_letter

#: ``no_router_environment``, autouse: no ROUTER_* variable of the shell counts.
__all__ = ["no_router_environment"]

pytestmark = pytest.mark.database


def _dlq(app: str, n: int, *, reason: str = "exhausted", hours_ago: int) -> ParkedEvent:
    """An entry of ``app``'s DLQ, parked ``hours_ago`` hours before NOW for ``reason``."""
    at = NOW - timedelta(hours=hours_ago)
    body = body_of("sms.sent", n=n)
    return dead_letter(body, app=app, message_id=f"{app}-{n}", reason=reason, at=at)


def _elsewhere(place: str, n: int, *, hours_ago: int) -> ParkedEvent:
    """An unrouted or invalid entry (no application, no reason), parked ``hours_ago`` hours
    before NOW."""
    at = NOW - timedelta(hours=hours_ago)
    headers: dict[str, Any] = {}
    if place == "invalid":
        headers["x-attentive-invalid-reason"] = "no 'company.company_id'"
    properties = Basic.Properties(message_id=f"{place}-{n}", timestamp=at, headers=headers)
    body = body_of("sms.sent", n=n)
    return parked_event(body, properties, place=place, app=None, routing_key="k", seen_at=at)


async def _park(store: ParkedStore, parked: list[ParkedEvent], **marked: list[ParkedEvent]) -> None:
    """Store every entry; mark those of ``replayed=`` and ``purged=`` so."""
    every = [*parked, *(entry for entries in marked.values() for entry in entries)]
    assert await store.add_many(every) == len(every)
    for state, entries in marked.items():
        ids = {entry.message_id for entry in entries if entry.message_id is not None}
        stored = (await store.page(Query(message_ids=frozenset(ids)), limit=1000)).entries
        assert await store.mark([e.id for e in stored if e.id is not None], State(state), "job")


async def test_places_count_the_parked_entries_of_each_place_application_and_reason(
    store: ParkedStore,
) -> None:
    """Given entries in two DLQs (one with two reasons), unrouted and invalid ones, and some
    replayed or purged (a third DLQ has no entry left parked), when the store counts the
    places, then each (place, application, reason) with parked entries has its count and its
    oldest parked time, the marked entries left out; summed per place, the DLQs come first
    by application, then unrouted, then invalid."""
    await _park(
        store,
        [
            _dlq("alerts", 1, hours_ago=3),
            _dlq("alerts", 2, hours_ago=1),
            _dlq("alerts", 3, reason="rejected", hours_ago=8),
            _dlq("alerts", 4, reason="rejected", hours_ago=2),
            _dlq("crm-sync", 1, hours_ago=10),
            _elsewhere("unrouted", 1, hours_ago=4),
            _elsewhere("unrouted", 2, hours_ago=6),
            _elsewhere("invalid", 1, hours_ago=7),
        ],
        replayed=[_dlq("alerts", 5, hours_ago=30), _dlq("billing", 1, hours_ago=2)],
        purged=[_dlq("crm-sync", 2, hours_ago=20), _elsewhere("invalid", 2, hours_ago=9)],
    )

    counts = await store.places()

    hours = [NOW - timedelta(hours=h) for h in range(11)]
    assert counts == [
        PlaceCount(Place.DLQ, "alerts", "exhausted", 2, hours[3]),
        PlaceCount(Place.DLQ, "alerts", "rejected", 2, hours[8]),
        PlaceCount(Place.DLQ, "crm-sync", "exhausted", 1, hours[10]),
        PlaceCount(Place.UNROUTED, None, None, 2, hours[6]),
        PlaceCount(Place.INVALID, None, None, 1, hours[7]),
    ]
    assert parking_places(counts) == [
        ParkingPlace(Place.DLQ, "alerts", 4, hours[8], tuple(counts[:2])),
        ParkingPlace(Place.DLQ, "crm-sync", 1, hours[10], (counts[2],)),
        ParkingPlace(Place.UNROUTED, None, 2, hours[6], (counts[3],)),
        ParkingPlace(Place.INVALID, None, 1, hours[7], (counts[4],)),
    ]
    assert sum(count.count for count in counts) == (await store.stats()).parked


async def test_an_empty_store_has_no_places(store: ParkedStore) -> None:
    """Given a store with nothing parked (one entry, replayed), when it counts the places,
    then there is none."""
    await _park(store, [], replayed=[_dlq("alerts", 1, hours_ago=1)])

    assert await store.places() == []
    assert parking_places([]) == []


async def test_places_are_counted_from_the_index_by_reason_without_sorting(
    backend: Backend,
) -> None:
    """Given a store with entries, when each database plans the count of the places, then
    it reads the index by reason alone, in its order: SQLite on its own choice; PostgreSQL
    when sorting, hashing and reading the table are all costed out (it chooses that index
    by itself once a table holds more than a handful of entries)."""
    opened = await backend.opened()
    try:
        await _park(opened, [_dlq("alerts", n, hours_ago=n) for n in range(1, 4)])
    finally:
        await opened.close()
    read = places_read(backend.table, numbered=backend.kind == "postgres")

    if backend.kind == "sqlite":
        plan = await backend.explain(read.text, read.params)
        assert f"USING COVERING INDEX {backend.table}_by_reason" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
        return
    conn = await asyncpg.connect(POSTGRES_URL, timeout=TIMEOUT)
    try:
        await conn.execute(
            "SET enable_seqscan = off; SET enable_bitmapscan = off; "
            "SET enable_sort = off; SET enable_hashagg = off"
        )
        rows = await conn.fetch(f"EXPLAIN {read.text}", *read.params, timeout=TIMEOUT)
    finally:
        await conn.close(timeout=TIMEOUT)
    plan = " | ".join(str(row[0]) for row in rows)
    assert f"using {backend.table}_by_reason" in plan, plan
    assert "Sort" not in plan and "Seq Scan" not in plan, plan
