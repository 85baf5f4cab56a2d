"""Both parked-event stores answer every filter, page and facet as the reference in Python
(:meth:`router.parked.query.Query.matches`) does, over a varied set of entries; pages stay
whole while entries arrive between them; each filtered page is read from an index in order.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pamqp.commands import Basic

from router.contract.events import EVENT_TYPES
from router.errors import InvalidInput
from router.parked import sql
from router.parked.model import ParkedEvent, State, parked_event
from router.parked.query import Bucket, Cursor, Query
from router.parked.store import ParkedStore
from tests.parked_stores import (
    EVERY_STATE,
    NOW,
    Backend,
    backend_for,
    body_of,
    dead_letter,
    stored_id,
)

pytestmark = pytest.mark.database

ERRORS = (
    "ValueError: bad phone",
    "valueerror: lower case",
    "KeyError: 'email'",
    "TimeoutError: the CRM took 30 s",
    "RuntimeError: ÉCHEC de l'envoi",
    "crm answered 500",
)
REASONS = ("exhausted", "rejected", "no-handler")


def varied(count: int, seed: int, *, start: int = 0) -> list[ParkedEvent]:
    """``count`` entries over every place, two applications, the 11 types, five companies,
    six errors, three reasons and ten days; a few share a parked time to the microsecond."""
    rng = random.Random(seed)
    made: list[ParkedEvent] = []
    for n in range(start, start + count):
        at = NOW - timedelta(days=rng.randrange(10), seconds=rng.randrange(86_400))
        if n % 17 == 0 and made:
            at = made[-1].parked_at
        kind = rng.choice(("dlq", "dlq", "dlq", "unrouted", "invalid"))
        event_type = rng.choice(EVENT_TYPES)
        company = f"c{rng.randrange(5)}"
        if kind == "dlq":
            made.append(
                dead_letter(
                    body_of(event_type, company, n=n),
                    app=rng.choice(("alerts", "billing")),
                    message_id=f"m-{n}",
                    error=rng.choice(ERRORS),
                    reason=rng.choice(REASONS),
                    at=at,
                )
            )
            continue
        headers: dict[str, Any] = {}
        if kind == "invalid":
            headers["x-attentive-invalid-reason"] = "no 'company.company_id'"
        body = body_of(None if kind == "invalid" and n % 2 else event_type, company, n=n)
        properties = Basic.Properties(message_id=f"m-{n}", timestamp=at, headers=headers)
        made.append(
            parked_event(body, properties, place=kind, app=None, routing_key="k", seen_at=at)
        )
    return made


async def stored_with_marks(store: ParkedStore, entries: list[ParkedEvent]) -> list[ParkedEvent]:
    """Store ``entries``, mark every 7th replayed and every 11th purged; every entry as
    stored, newest first (checked against a sort here)."""
    assert await store.add_many(entries) == len(entries)
    first = (await store.page(EVERY_STATE, limit=1000)).entries
    await store.mark([stored_id(e) for e in first[::7]], State.REPLAYED, "job")
    await store.mark([stored_id(e) for e in first[::11]], State.PURGED, "oncall")
    everything = list((await store.page(EVERY_STATE, limit=1000)).entries)
    assert len(everything) == len(entries)
    assert everything == sorted(everything, key=lambda e: (e.parked_at, stored_id(e)), reverse=True)
    return everything


QUERIES = [
    Query(),
    EVERY_STATE,
    Query.build(state="replayed"),
    Query.build(state="purged"),
    Query.build(place="dlq"),
    Query.build(place="unrouted"),
    Query.build(place="invalid"),
    Query.build(place="dlq", app="alerts"),
    Query.build(app="billing", state=None),
    Query.build(event="sms.subscribed"),
    Query.build(event="email.*"),
    Query.build(event="*"),
    Query.build(place="invalid", event="*", state=None),
    Query.build(company="c3"),
    Query.build(error="VALUEERROR"),
    Query.build(error="échec"),
    Query.build(error="crm"),
    Query.build(reason="rejected"),
    Query.build(since=NOW - timedelta(days=3)),
    Query.build(until=NOW - timedelta(days=6)),
    Query.build(since=NOW - timedelta(days=5), until=NOW - timedelta(days=4)),
    Query.build(message_ids=["m-3", "m-4", "m-5", "m-300", "nope"], state=None),
    Query.build(place="dlq", app="alerts", event="sms.*", company="c1", error="error"),
    Query.build(place="dlq", app="billing", reason="exhausted", since=NOW - timedelta(days=7)),
]


@pytest.mark.parametrize("query", QUERIES, ids=[str(n) for n in range(len(QUERIES))])
async def test_every_filter_picks_what_the_reference_picks(
    store: ParkedStore, query: Query
) -> None:
    """Given 400 varied entries (some marked), a query's page and count are the reference's."""
    everything = await stored_with_marks(store, varied(400, seed=7))
    expected = [e for e in everything if query.matches(e)]
    assert expected, "every query here should find something"

    page = await store.page(query, limit=1000)

    assert [e.id for e in page.entries] == [e.id for e in expected]
    assert page.next_cursor is None
    assert await store.count(query) == len(expected)


async def test_pages_of_1000_entries_have_no_gap_and_no_repeat_while_entries_arrive(
    store: ParkedStore,
) -> None:
    """Given 1,000 parked entries, when ops page through 50 at a time while the keeper adds
    entries between pages (newer than all, and older than the page just read), then every
    entry that was there comes once, newest first, and so does every later one that is older
    than where the reader stood."""
    await store.add_many(varied(1000, seed=11))
    before = {stored_id(e) for e in (await store.page(Query(), limit=1000)).entries}
    assert len(before) == 1000
    seen: list[ParkedEvent] = []
    must_come: set[int] = set()
    cursor: str | None = None
    arrivals = 0
    for _ in range(100):
        page = await store.page(Query(), limit=50, cursor=cursor)
        seen.extend(page.entries)
        cursor = page.next_cursor
        if cursor is None:
            break
        stood = Cursor.decode(cursor).parked_at
        newer = dead_letter(body_of("sms.sent", n=arrivals), message_id=f"new-{arrivals}")
        older = dead_letter(
            body_of("sms.sent", n=-arrivals),
            message_id=f"old-{arrivals}",
            at=stood - timedelta(microseconds=1 + arrivals),
        )
        assert await store.add_many([newer, older]) == 2
        (stored,) = (await store.page(Query.build(message_ids=[older.message_id or ""]))).entries
        must_come.add(stored_id(stored))
        arrivals += 1

    ids = [stored_id(e) for e in seen]
    assert cursor is None and arrivals >= 19
    assert len(ids) == len(set(ids)), "an entry came twice"
    assert before <= set(ids), "an entry was skipped"
    assert must_come <= set(ids)
    order = [(e.parked_at, stored_id(e)) for e in seen]
    assert order == sorted(order, reverse=True)


async def test_entries_parked_at_the_same_moment_page_by_id(store: ParkedStore) -> None:
    """Given 30 entries parked at the same microsecond, pages of 7 give each once, newest
    (highest id) first."""
    await store.add_many(
        [dead_letter(body_of("sms.sent", n=n), message_id=f"m{n}") for n in range(30)]
    )
    ids: list[int] = []
    cursor: str | None = None
    for _ in range(10):
        page = await store.page(Query(), limit=7, cursor=cursor)
        ids.extend(stored_id(e) for e in page.entries)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(ids) == 30 and ids == sorted(set(ids), reverse=True)


async def test_facets_count_what_the_reference_counts(store: ParkedStore) -> None:
    """Given 400 varied entries, the facets of a few queries are the reference's counts:
    largest first, cut at the size asked for; days all there, newest first."""
    everything = await stored_with_marks(store, varied(400, seed=3))
    facet_of: dict[str, Callable[[ParkedEvent], str | None]] = {
        "types": lambda e: e.event_type,
        "companies": lambda e: e.company,
        "errors": lambda e: e.error_kind,
        "reasons": lambda e: e.reason,
    }
    for query, size in (
        (Query(), 4),
        (Query.build(place="dlq", app="alerts"), 20),
        (Query.build(error="crm", state=None), 2),
    ):
        picked = [e for e in everything if query.matches(e)]

        facets = await store.facets(query, size=size)

        assert facets.total == len(picked)
        for name, value_of in facet_of.items():
            counted = Counter(value_of(e) for e in picked)
            expected = sorted(
                (Bucket(value, n) for value, n in counted.items()),
                key=lambda b: (-b.count, b.value is None, b.value or ""),
            )[:size]
            assert getattr(facets, name) == tuple(expected), name
        days = Counter(e.parked_at.date().isoformat() for e in picked)
        assert facets.days == tuple(Bucket(day, days[day]) for day in sorted(days, reverse=True))
    assert (await store.facets(Query.build(company="nobody"))).days == ()


async def test_a_page_size_or_cursor_the_store_does_not_serve_is_refused(
    store: ParkedStore,
) -> None:
    for limit in (0, 1001):
        with pytest.raises(InvalidInput, match="limit must be between 1 and 1000"):
            await store.page(Query(), limit=limit)
    with pytest.raises(InvalidInput, match="cursor is not a cursor this store gave"):
        await store.page(Query(), cursor="not-a-cursor")
    with pytest.raises(InvalidInput, match="size must be"):
        await store.facets(Query(), size=0)


SCOPED = [
    Query.build(place="dlq", app="alerts"),
    Query.build(place="dlq", app="alerts", event="sms.subscribed"),
    Query.build(place="dlq", app="alerts", event="sms.*"),
    Query.build(place="dlq", app="alerts", company="c1"),
    Query.build(place="dlq", app="alerts", reason="rejected"),
    Query.build(place="dlq", app="alerts", since=NOW - timedelta(days=1)),
    Query.build(place="unrouted"),
    Query.build(place="invalid", state="purged"),
]


@pytest.mark.parametrize("query", SCOPED, ids=[str(n) for n in range(len(SCOPED))])
async def test_a_filtered_page_is_read_in_order_from_an_index(
    backend: Backend, query: Query
) -> None:
    """Each filter of a listing has an index that gives its page in order: the plan of a
    page after a cursor reads an index and sorts nothing (PostgreSQL is told to avoid table
    scans, which it would rather do on a table this small)."""
    opened = await backend.opened()
    await opened.close()
    statement = sql.Statement(numbered=backend.kind == "postgres")
    after = Cursor(NOW, 9)
    text = (
        f"SELECT {sql.COLUMNS} FROM {backend.table} {sql.where(query, statement, after)} "
        f"{sql.ORDER} LIMIT 51"
    )

    plan = await backend.explain(text, statement.params)

    if backend.kind == "postgres":
        assert "Index" in plan and "Sort" not in plan, plan
    else:
        assert "USING INDEX" in plan and "TEMP B-TREE" not in plan, plan


FACETED = [
    Query.build(place="dlq", app="alerts"),
    Query.build(place="dlq", app="alerts", event="sms.*", company="c1", reason="rejected"),
    Query.build(place="invalid", since=NOW - timedelta(days=1), state=None),
    Query(),
]


@pytest.mark.parametrize("query", FACETED, ids=[str(n) for n in range(len(FACETED))])
async def test_facets_of_indexed_filters_are_counted_from_an_index_alone(
    tmp_path: Path, query: Query
) -> None:
    """SQLite counts the facets of a listing filtered by indexed columns from an index that
    carries every facet column: no entry's row is read."""
    async for place in backend_for("sqlite", tmp_path):
        opened = await place.opened()
        await opened.close()
        read = sql.facets_read(place.table, query, numbered=False, day="date(parked_at)")

        plan = await place.explain(read.text, read.params)

        assert "USING COVERING INDEX" in plan and " SCAN parked_events" not in plan, plan
