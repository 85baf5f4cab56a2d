"""Both parked-event stores, SQLite and the real local PostgreSQL, held to the same stories:
the schema and its migrations, idempotent adds, links between entries of one message,
byte-exact round trips, marks, retention and stats.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from router.contract import envelope
from router.contract.names import DELIVERY_COUNT_HEADER
from router.errors import InvalidInput, NotFound
from router.parked import schema
from router.parked.model import ParkedEvent, Properties, State, parked_event
from router.parked.postgres import PostgresParkedStore
from router.parked.query import Query
from router.parked.schema import LATEST_VERSION, version_table
from router.parked.store import ParkedStore, ParkedStoreError
from tests.parked_stores import (
    EVERY_STATE,
    NOW,
    TIMEOUT,
    Backend,
    body_of,
    dead_letter,
    same,
    stored_id,
)

pytestmark = pytest.mark.database


async def test_an_empty_database_is_upgraded_to_the_latest_schema_once(backend: Backend) -> None:
    """Given a database with nothing in it, when two stores upgrade it at once and one again,
    then each migration was applied once and the store works."""
    first, second = await backend.opened(upgrade=False), await backend.opened(upgrade=False)
    assert await first.schema_version() == 0

    async with asyncio.timeout(TIMEOUT):
        versions = await asyncio.gather(first.upgrade(), second.upgrade())
        again = await first.upgrade()

    assert list(versions) == [LATEST_VERSION, LATEST_VERSION] and again == LATEST_VERSION
    assert await second.schema_version() == LATEST_VERSION
    applied = await backend.scalar(f"SELECT count(*) FROM {version_table(backend.table)}")
    assert applied == LATEST_VERSION
    assert await first.add_many([dead_letter(body_of("sms.sent"))]) == 1
    assert await second.count(Query()) == 1
    if backend.kind == "postgres":  # vacuumed early enough to count facets from an index
        settings = await backend.scalar(
            f"SELECT reloptions::text FROM pg_class WHERE relname = '{backend.table}'"
        )
        assert "autovacuum_vacuum_insert_scale_factor=0.02" in settings
    await first.close()
    await second.close()


async def test_a_store_refuses_entries_until_its_database_is_upgraded(backend: Backend) -> None:
    """Given a store on a database nobody upgraded, its calls are refused with a reason that
    says so; once another store upgraded the database, the same store works."""
    early = await backend.opened(upgrade=False)

    with pytest.raises(ParkedStoreError, match=r"schema version 0.*upgrade the database"):
        await early.add_many([dead_letter(body_of("sms.sent"))])
    with pytest.raises(ParkedStoreError, match="upgrade the database"):
        await early.page(Query())

    upgrader = await backend.opened()
    await upgrader.close()
    assert await early.add_many([dead_letter(body_of("sms.sent"))]) == 1
    await early.close()


async def test_a_database_at_the_previous_version_gets_only_the_next_migration(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a database at today's version holding an entry, when a release with one more
    migration upgrades it, then only that migration runs, the entry is still there, and
    stores of the old release refuse the newer database."""
    today = await backend.opened()
    await today.add_many([dead_letter(body_of("sms.sent"))])
    await today.close()

    def add_note(table: str, dialect: schema.Dialect) -> tuple[str, ...]:
        return (f"ALTER TABLE {table} ADD COLUMN note TEXT NULL",)

    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, add_note))
    monkeypatch.setattr(schema, "LATEST_VERSION", LATEST_VERSION + 1)
    behind = await backend.opened(upgrade=False)
    with pytest.raises(ParkedStoreError, match="upgrade the database"):
        await behind.count(Query())

    assert await behind.upgrade() == LATEST_VERSION + 1
    assert await behind.upgrade() == LATEST_VERSION + 1
    assert await behind.count(Query()) == 1
    await backend.execute(f"UPDATE {backend.table} SET note = 'kept'")
    applied = await backend.scalar(f"SELECT count(*) FROM {version_table(backend.table)}")
    assert applied == LATEST_VERSION + 1
    await behind.close()
    monkeypatch.undo()
    old_release = await backend.opened(upgrade=False)
    with pytest.raises(ParkedStoreError, match="upgrade the router"):
        await old_release.count(Query())
    await old_release.close()


async def test_a_database_of_a_newer_schema_is_refused(backend: Backend) -> None:
    """Given a database a newer router migrated further, this router neither reads it nor
    migrates it."""
    older = await backend.opened()
    await older.close()
    newer = LATEST_VERSION + 1
    await backend.execute(
        f"INSERT INTO {version_table(backend.table)} (version, applied_at) "
        f"VALUES ({newer}, {0 if backend.kind == 'sqlite' else 'now()'})"
    )

    store = await backend.opened(upgrade=False)
    with pytest.raises(ParkedStoreError, match=f"version {newer}, newer .*upgrade the router"):
        await store.count(Query())
    with pytest.raises(ParkedStoreError, match="upgrade the router"):
        await store.upgrade()
    await store.close()


async def test_an_entry_handed_over_twice_is_stored_once(store: ParkedStore) -> None:
    """Given a dead letter, when the keeper hands it over twice in a batch, again later, and
    once more as the broker redelivers it (counted), then it is stored once."""
    entry = dead_letter(body_of("sms.subscribed"))
    redelivered = parked_event(
        entry.body,
        Properties(
            message_id=entry.message_id,
            content_type="application/json",
            delivery_mode=2,
            timestamp=entry.properties.timestamp,
            headers={**entry.headers, DELIVERY_COUNT_HEADER: 2},
        ),
        place="dlq",
        app="alerts",
        routing_key="dead",
        seen_at=NOW + timedelta(minutes=5),
    )

    assert await store.add_many([entry, entry]) == 1
    assert await store.add_many([entry]) == 0
    assert await store.add_many([redelivered]) == 0

    assert await store.count(EVERY_STATE) == 1


async def test_two_keepers_adding_the_same_batch_at_once_store_it_once(backend: Backend) -> None:
    """Given two keepers (two stores on one database), when both add the same 200 entries at
    the same moment, then there are 200 entries."""
    batch = [dead_letter(body_of("sms.sent", n=n), message_id=f"m-{n}") for n in range(200)]
    one, two = await backend.opened(), await backend.opened()

    async with asyncio.timeout(TIMEOUT):
        added = await asyncio.gather(one.add_many(batch), two.add_many(batch))

    assert sorted(added) == [0, 200]
    assert await one.count(Query()) == 200
    await one.close()
    await two.close()


async def test_an_event_parked_again_after_a_replay_links_the_earlier_entry(
    store: ParkedStore,
) -> None:
    """Given an event dead-lettered, replayed, and dead-lettered twice again (the last two
    handed over in one batch), then it has three entries, each linked to the one before, and
    the same message id in another application's DLQ is not linked to them."""
    body = body_of("sms.subscribed")
    first = dead_letter(body, at=NOW)
    second = dead_letter(
        body, at=NOW + timedelta(hours=1), headers=envelope.replayed(first.headers)
    )
    third = dead_letter(
        body, at=NOW + timedelta(hours=2), headers=envelope.replayed(second.headers)
    )
    elsewhere = dead_letter(body, app="billing", at=NOW)

    assert await store.add_many([first]) == 1
    assert await store.add_many([second, third, elsewhere]) == 3

    entries = (await store.page(EVERY_STATE)).entries
    stored = {(e.app, e.replays): e for e in entries}
    one, two, three = (stored["alerts", n] for n in (0, 1, 2))
    assert one.previous_id is None
    assert two.previous_id == one.id
    assert three.previous_id == two.id
    assert stored["billing", 0].previous_id is None
    assert [e.id for e in entries if e.app == "alerts"] == [three.id, two.id, one.id]


async def test_body_and_properties_come_back_byte_exact(store: ParkedStore) -> None:
    """Given a delivery with a body that is not UTF-8 and headers of every AMQP kind (bytes,
    byte arrays, nested tables and arrays, times, decimals, non-ASCII), when it is stored and
    read back, then body and properties are what came, kinds and order included."""
    body = b'{"type":"sms.sent","note":"\xc3\xa9t\xc3\xa9 \xe2\x9c\x93"}\xff\x00 tail'
    when = datetime(2026, 11, 26, 9, 30, 15, tzinfo=UTC)
    headers = {
        "x-attentive-error": "ValueError: número inválido ✗",
        "x-death": [
            {"count": 2, "reason": "delivery_limit", "time": when, "routing-keys": ["sms.sent.c"]}
        ],
        "zürich-ключ": "値",
        "raw": b"\xfe\xff not utf-8",
        "array": bytearray(b"\x00\x01\x02"),
        "nested": {"deeper": {"list": [1, -2, 2**40, 0.5, Decimal("1.50"), None, True, False]}},
        "naive": datetime(2026, 1, 1, 0, 0),
        "a-key-like-a-marker": {"$bytes": "not base64"},
    }
    entry = parked_event(
        body,
        Properties(
            content_type="application/json",
            content_encoding="identity",
            headers=headers,
            delivery_mode=2,
            priority=3,
            correlation_id="corr-ü",
            reply_to="amq.rabbitmq.reply-to",
            expiration="60000",
            message_id="m-bytes",
            timestamp=when,
            type="attentive.event",
            user_id="guest",
            app_id="ingress",
        ),
        place="unrouted",
        app=None,
        routing_key="sms.sent.c",
        seen_at=NOW,
    )
    await store.add_many([entry])

    (listed,) = (await store.page(Query())).entries
    assert listed.id is not None
    for got in (listed, await store.get(listed.id)):
        assert got.body == body
        assert got.properties == entry.properties
        assert same(dict(got.headers), headers)
        assert got.fingerprint == entry.fingerprint
        assert got.properties.timestamp == when and got.parked_at == when  # unrouted: timestamp
        assert (got.place.value, got.app, got.message_id) == ("unrouted", None, "m-bytes")


async def test_every_field_an_investigation_reads_is_kept(store: ParkedStore) -> None:
    """Given a worker's dead letter, the stored entry has its type, company, reason, error,
    traceback, attempts, times and routing key as the headers said."""
    entry = dead_letter(
        body_of("email.opened", company="acme"), error="KeyError: 'email'", attempt=5
    )
    await store.add_many([entry])
    (got,) = (await store.page(Query())).entries
    assert got.id is not None

    assert (got.event_type, got.company, got.reason) == ("email.opened", "acme", "exhausted")
    assert got.error == "KeyError: 'email'" and got.error_kind == "KeyError"
    assert got.traceback is not None and got.traceback.endswith("KeyError: 'email'\n")
    assert (got.attempts, got.replays, got.routing_key) == (5, 0, "sms.subscribed.c1")
    assert got.parked_at == NOW and got.first_failed_at == NOW
    assert got.stored_at == NOW + timedelta(seconds=1)
    assert (got.state, got.state_at, got.state_by, got.previous_id) == (
        State.PARKED,
        None,
        None,
        None,
    )
    with pytest.raises(NotFound, match=f"no parked entry {got.id + 1000}"):
        await store.get(got.id + 1000)


async def test_marked_entries_leave_the_parked_listing_and_keep_who_and_when(
    store: ParkedStore,
) -> None:
    """Given three parked entries, when two are replayed and then two (one of them already
    replayed) purged, then each keeps its first mark, and the state filter finds them."""
    await store.add_many([dead_letter(body_of("sms.sent", n=n), message_id=f"m{n}") for n in "abc"])
    a, b, c = (
        stored_id(e)
        for e in sorted((await store.page(Query())).entries, key=lambda e: str(e.message_id))
    )
    before = datetime.now(UTC) - timedelta(seconds=5)

    assert await store.mark([a, b], State.REPLAYED, "job-7 (ops@example.com)") == 2
    assert await store.mark([b, c, c, 999_999], State.PURGED, "oncall") == 1

    def ids(entries: tuple[ParkedEvent, ...]) -> set[int]:
        return {stored_id(e) for e in entries}

    assert ids((await store.page(Query())).entries) == set()
    assert ids((await store.page(Query(state=State.REPLAYED))).entries) == {a, b}
    assert ids((await store.page(Query(state=State.PURGED))).entries) == {c}
    assert await store.count(EVERY_STATE) == 3
    replayed_b = await store.get(b)
    assert replayed_b.state is State.REPLAYED and replayed_b.state_by == "job-7 (ops@example.com)"
    assert replayed_b.state_at is not None
    assert before <= replayed_b.state_at <= datetime.now(UTC) + timedelta(seconds=5)
    with pytest.raises(InvalidInput, match="state must be replayed or purged"):
        await store.mark([a], State.PARKED, "oncall")
    with pytest.raises(InvalidInput, match="by must name who"):
        await store.mark([a], State.PURGED, " ")


async def test_retention_deletes_marked_entries_only_and_never_parked_ones(
    store: ParkedStore,
) -> None:
    """Given an entry parked a year ago and two marked today, when retention runs a month
    from now, then the marked ones are deleted and the parked one stays, however old."""
    old = dead_letter(body_of("sms.sent"), message_id="old", at=NOW - timedelta(days=365))
    await store.add_many(
        [old, *(dead_letter(body_of("sms.sent", n=n), message_id=n) for n in ("r", "p"))]
    )
    by_message = {e.message_id: stored_id(e) for e in (await store.page(Query())).entries}
    await store.mark([by_message["r"]], State.REPLAYED, "job")
    await store.mark([by_message["p"]], State.PURGED, "oncall")
    soon, later = (datetime.now(UTC) + timedelta(days=days) for days in (29, 31))

    assert await store.delete_expired(now=soon) == 0
    assert await store.delete_expired(timedelta(days=30), now=later) == 2
    assert await store.delete_expired(timedelta(seconds=1), now=later) == 0

    assert [e.message_id for e in (await store.page(EVERY_STATE)).entries] == ["old"]
    with pytest.raises(InvalidInput, match="retention must be a positive duration"):
        await store.delete_expired(timedelta(0))


async def test_stats_count_entries_and_date_the_oldest_parked_one(store: ParkedStore) -> None:
    """Given no entries, then three of which the oldest is purged, the stats follow."""
    empty = await store.stats()
    assert (empty.entries, empty.parked, empty.oldest_parked_at) == (0, 0, None)
    ages = {"a": 3, "b": 2, "c": 1}
    await store.add_many(
        [
            dead_letter(body_of("sms.sent", n=n), message_id=n, at=NOW - timedelta(days=d))
            for n, d in ages.items()
        ]
    )
    assert (await store.stats()).oldest_parked_at == NOW - timedelta(days=3)

    oldest = [stored_id(e) for e in (await store.page(Query())).entries if e.message_id == "a"]
    await store.mark(oldest, State.PURGED, "oncall")

    stats = await store.stats()
    assert (stats.entries, stats.parked) == (3, 2)
    assert stats.oldest_parked_at == NOW - timedelta(days=2)


async def test_a_store_that_is_not_open_refuses_calls(backend: Backend) -> None:
    store = backend.make()
    with pytest.raises(ParkedStoreError, match="not open"):
        await store.count(Query())
    opened = await backend.opened()
    await opened.close()
    with pytest.raises(ParkedStoreError, match="not open"):
        await opened.stats()


async def test_an_unreachable_postgresql_is_a_store_error() -> None:
    store = PostgresParkedStore("postgresql://postgres@127.0.0.1:1/test", timeout=5.0)
    with pytest.raises(ParkedStoreError, match="cannot connect to the parked-event database"):
        await store.open()
