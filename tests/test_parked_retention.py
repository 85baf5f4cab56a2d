"""Retention: the janitor deletes entries replayed or purged longer ago than the retention,
never one still parked, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from router.parked.janitor import Janitor
from router.parked.metrics import KeeperMetrics
from router.parked.model import State
from router.parked.query import Query
from router.parked.store import ParkedStore
from tests.parked_stores import EVERY_STATE, body_of, dead_letter, stored_id

pytestmark = pytest.mark.database

RETENTION = timedelta(days=30)


async def _three_entries(store: ParkedStore) -> tuple[int, int, int]:
    """One entry replayed, one purged, one still parked (marked now)."""
    await store.add_many(
        [dead_letter(body_of("sms.subscribed"), message_id=f"m-{n}") for n in range(3)]
    )
    page = await store.page(EVERY_STATE, limit=10)
    replayed, purged, parked = sorted(stored_id(entry) for entry in page.entries)
    assert await store.mark([replayed], State.REPLAYED, "ops") == 1
    assert await store.mark([purged], State.PURGED, "ops") == 1
    return replayed, purged, parked


async def test_marked_entries_go_after_the_retention_and_parked_ones_never(
    store: ParkedStore,
) -> None:
    # Given an entry replayed, one purged and one still parked
    replayed, purged, parked = await _three_entries(store)
    registry = CollectorRegistry()
    metrics = KeeperMetrics(registry)
    now = datetime.now(UTC)

    # When the janitor sweeps a day before the retention ends, nothing goes
    early = Janitor(store, RETENTION, 3600, metrics, clock=lambda: now + RETENTION - timedelta(1))
    assert await early.sweep() == 0
    assert await store.count(EVERY_STATE) == 3

    # When it sweeps after the retention, the replayed and the purged entries go
    late = Janitor(store, RETENTION, 3600, metrics, clock=lambda: now + RETENTION + timedelta(1))
    assert await late.sweep() == 2
    remaining = await store.page(EVERY_STATE, limit=10)
    assert [stored_id(entry) for entry in remaining.entries] == [parked]
    assert registry.get_sample_value("attentive_router_parked_entries_expired_total") == 2

    # And a parked entry stays whatever its age
    much_later = Janitor(store, RETENTION, 3600, clock=lambda: now + timedelta(days=3650))
    assert await much_later.sweep() == 0
    assert await store.count(Query()) == 1
    assert {replayed, purged}.isdisjoint({stored_id(e) for e in remaining.entries})


async def test_the_janitor_sweeps_at_start_and_stops_when_asked(store: ParkedStore) -> None:
    # Given entries whose retention has passed (the janitor's clock is a year ahead)
    await _three_entries(store)
    ahead = datetime.now(UTC) + timedelta(days=365)
    janitor = Janitor(store, RETENTION, interval=3600, clock=lambda: ahead)

    # When it runs, it sweeps at once, then waits for its interval or the stop
    stop = asyncio.Event()
    running = asyncio.create_task(janitor.run(stop))
    async with asyncio.timeout(30):
        while await store.count(EVERY_STATE) != 1:
            await asyncio.sleep(0.05)
    stop.set()
    async with asyncio.timeout(10):
        await running


async def test_a_store_that_fails_is_logged_and_swept_again_later(
    store: ParkedStore, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a store that can no longer be used
    await store.close()

    # Then a sweep counts nothing and says so, instead of stopping the keeper
    assert await Janitor(store, RETENTION, 3600).sweep() == 0
    assert "parked_retention_failed" in capsys.readouterr().out
