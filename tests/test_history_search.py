"""Searching the archive: a window of time read from the stream's timestamp offset, filtered
by type, company and message id, never consuming and never disturbing consumers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection, AbstractRobustConnection

from router.contract.names import Names
from router.errors import InvalidInput, Unavailable
from router.history.search import Search, search_archive
from router.settings import Settings
from tests.conftest import AMQP_URL, Client, MakeIngress, archive_on, depth
from tests.test_history_archive import post_event

pytestmark = pytest.mark.broker


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings with the archive on, as the router runs by default."""
    return archive_on(settings)


@pytest.fixture
async def reader(test_id: str) -> AsyncIterator[AbstractConnection]:
    """A connection for searching, as the CLI and the admin API have one of their own."""
    connection = await aio_pika.connect(
        AMQP_URL, client_properties={"connection_name": f"{test_id} (search)"}
    )
    async with connection:
        yield connection


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


async def next_second() -> datetime:
    """Wait into the next whole second (the archive's timestamps are to the second); it."""
    now = datetime.now(UTC)
    await asyncio.sleep(1.05 - now.microsecond / 1e6)
    return datetime.now(UTC).replace(microsecond=0)


async def test_a_search_finds_the_windows_events_that_match_its_filters(
    ingress: Client, reader: AbstractConnection, names: Names
) -> None:
    """Given six events of two types and two companies in the archive, when searching the
    last minute, then all six come back oldest first; by type pattern, company or message id
    only those; with a limit, the first ones and a note that more match."""
    posted = [
        await post_event(ingress, event_type, company)
        for event_type, company in (
            ("sms.sent", "acme"),
            ("email.opened", "acme"),
            ("sms.subscribed", "globex"),
            ("sms.sent", "globex"),
            ("email.sent", "acme"),
            ("sms.sent", "acme"),
        )
    ]

    found = await search_archive(reader, names, Search(since=ago(60)))
    assert [e.message_id for e in found.events] == posted
    assert not found.more and found.scanned == 6
    assert found.events[0].event_type == "sms.sent" and found.events[2].company == "globex"

    by = Search.parse
    sms = await search_archive(reader, names, by({"since": "1m", "type": "sms.*"}))
    assert [e.message_id for e in sms.events] == [posted[i] for i in (0, 2, 3, 5)]
    globex = await search_archive(reader, names, by({"since": "1m", "company": "globex"}))
    assert [e.message_id for e in globex.events] == posted[2:4]
    one = await search_archive(reader, names, by({"since": "1m", "message_id": posted[4]}))
    assert [e.message_id for e in one.events] == [posted[4]]
    first = await search_archive(reader, names, by({"since": "1m", "limit": "2"}))
    assert [e.message_id for e in first.events] == posted[:2] and first.more


async def test_the_window_ends_where_until_says_and_starts_where_since_says(
    ingress: Client, reader: AbstractConnection, names: Names
) -> None:
    """Given two events, then a later second, then two more, when searching until that
    second, then only the first two come; from that second on, only the last two."""
    before = [await post_event(ingress, "sms.sent") for _ in range(2)]
    boundary = await next_second()
    await next_second()
    after = [await post_event(ingress, "email.sent") for _ in range(2)]

    early = await search_archive(reader, names, Search(since=ago(60), until=boundary))
    late = await search_archive(reader, names, Search(since=boundary))

    assert [e.message_id for e in early.events] == before
    assert [e.message_id for e in late.events] == after


async def test_a_search_neither_consumes_nor_disturbs_a_consumer(
    ingress: Client, reader: AbstractConnection, amqp: AbstractRobustConnection, names: Names
) -> None:
    """Given events in the archive (and unrouted), when searching twice, then both searches
    find them all, unrouted still holds them, and no search consumer is left on the stream."""
    posted = [await post_event(ingress, "sms.sent") for _ in range(3)]

    for _ in range(2):
        found = await search_archive(reader, names, Search(since=ago(60)))
        assert [e.message_id for e in found.events] == posted

    assert await depth(amqp, names.unrouted_queue) == 3
    channel = await amqp.channel()
    stream = await channel.declare_queue(names.archive_stream, passive=True)
    assert stream.declaration_result.consumer_count == 0


async def test_a_window_with_nothing_in_it_is_empty(
    ingress: Client, reader: AbstractConnection, names: Names
) -> None:
    """Given an empty archive, a search finds nothing; given events, a window that starts
    after them finds nothing either (and neither waits for events to come)."""
    assert (await search_archive(reader, names, Search(since=ago(60)))).events == []
    await post_event(ingress, "sms.sent")
    start = await next_second()
    assert (await search_archive(reader, names, Search(since=start))).events == []


async def test_without_an_archive_a_search_is_unavailable(
    make_ingress: MakeIngress, settings: Settings, reader: AbstractConnection, names: Names
) -> None:
    """Given ROUTER_ARCHIVE=off from the start, a search says the archive is unavailable."""
    await make_ingress(replace(settings, archive=False))
    with pytest.raises(Unavailable, match="no archive"):
        await search_archive(reader, names, Search(since=ago(60)))


def test_a_search_is_parsed_from_fields_naming_the_wrong_one() -> None:
    """since is needed; times are ISO 8601 or a span ago; until after since; the type a
    pattern; the limit a number within bounds."""
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    search = Search.parse(
        {"since": "2h", "until": "2026-12-07T11:30Z", "type": "sms.*", "limit": "5"}, now=now
    )
    assert search.since == datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    assert search.until == datetime(2026, 12, 7, 11, 30, tzinfo=UTC)
    assert search.filters() == {
        "since": "2026-12-07T10:00:00+00:00",
        "until": "2026-12-07T11:30:00+00:00",
        "type": "sms.*",
    }
    for fields, field in (
        ({}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"since": "1h", "until": "2h"}, "until"),
        ({"since": "1h", "type": "sms"}, "type"),
        ({"since": "1h", "limit": "0"}, "limit"),
    ):
        with pytest.raises(InvalidInput) as refused:
            Search.parse(fields, now=now)
        assert refused.value.field == field
