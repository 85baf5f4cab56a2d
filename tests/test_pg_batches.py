"""A PostgreSQL store's calls made together are sent together (issue 29, item 6: the cost of
newest wins in PostgreSQL): each caller gets its own row, a batch is one transaction whose
failure is every caller's, and two batches of overlapping keys never deadlock."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest

from consumers.runtime.newest import Recorded
from consumers.runtime.newest_postgres import PostgresNewestStore
from consumers.runtime.newest_stores import Leased, NewestStoreError
from consumers.runtime.store_connections import PgBatch, PgTable
from tests.databases import POSTGRES_URL, drop_table

pytestmark = pytest.mark.database

#: The longest any one wait in these tests may take (seconds).
TIMEOUT = 30.0
APP, FAMILY = "sms-audit", "subscription"
T0 = 1_700_000_000_000


async def _within(call: Awaitable[Any]) -> Any:
    async with asyncio.timeout(TIMEOUT):
        return await call


@pytest.fixture
async def table() -> AsyncIterator[PgTable]:
    """An open table of this test's own (its schema: one integer column), dropped after."""
    name = f"test_batch_{uuid.uuid4().hex[:16]}"
    opened = PgTable(POSTGRES_URL, name, error=NewestStoreError, timeout=10.0, prune_interval=60.0)
    await _within(opened.open([f"CREATE TABLE IF NOT EXISTS {name} (n int)"]))
    yield opened
    await _within(opened.close())
    await drop_table(name)


async def test_calls_made_together_are_one_transaction_and_each_gets_its_own_row(
    table: PgTable,
) -> None:
    # Given a statement that answers a row for even numbers only, with its transaction's id
    batch = PgBatch(
        table,
        "SELECT $1::int * 10 AS answer, txid_current() AS tx, $2::int AS call "
        "WHERE $1::int % 2 = 0",
        "answering",
        order=1,
    )

    # When 40 calls are made at once, in a random order
    numbers = random.sample(range(40), 40)
    rows = await _within(asyncio.gather(*(batch.call(n) for n in numbers)))

    # Then each got its own answer (None where the statement returned no row), all from one
    # transaction: one batch; and a call made alone is answered too
    assert [None if row is None else row["answer"] for row in rows] == [
        n * 10 if n % 2 == 0 else None for n in numbers
    ]
    assert len({row["tx"] for row in rows if row is not None}) == 1
    alone = await _within(batch.call(4))
    assert alone["answer"] == 40
    await batch.close()


async def test_calls_made_while_a_batch_is_in_flight_go_together_as_the_next_one(
    table: PgTable,
) -> None:
    # Given a statement that takes a while (50 ms)
    batch = PgBatch(
        table,
        "SELECT $1::int AS answer, txid_current() AS tx, pg_sleep(0.05) AS slept, $2::int AS call",
        "answering",
        order=1,
    )

    # When five calls are made at once, and while they are in flight ten more, each in a turn
    # of the loop of its own
    first = asyncio.gather(*(batch.call(n) for n in range(5)))
    await asyncio.sleep(0.01)
    later: list[asyncio.Future[Any]] = []
    for n in range(5, 15):
        later.append(asyncio.ensure_future(batch.call(n)))
        await asyncio.sleep(0)
    rows = [*await _within(first), *await _within(asyncio.gather(*later))]

    # Then each got its own answer, in two batches (two transactions): the ten waited for the
    # first to be answered and went together
    assert [row["answer"] for row in rows] == list(range(15))
    assert len({row["tx"] for row in rows[:5]}) == 1
    assert len({row["tx"] for row in rows[5:]}) == 1
    assert rows[0]["tx"] != rows[5]["tx"]
    await batch.close()


async def test_a_batch_that_fails_fails_each_of_its_calls_with_the_stores_error(
    table: PgTable,
) -> None:
    # Given a statement that fails for one argument (a division by zero)
    batch = PgBatch(table, "SELECT 10 / $1::int AS answer, $2::int AS call", "dividing", order=1)

    # When five calls are made at once, one of them failing, Then all five fail with the
    # store's one-line error (they were one transaction), and the next calls work
    answers = await _within(
        asyncio.gather(*(batch.call(n) for n in (1, 2, 0, 5, 10)), return_exceptions=True)
    )
    assert all(isinstance(answer, NewestStoreError) for answer in answers)
    assert "dividing" in str(answers[0])
    assert "division by zero" in str(answers[0])
    rows = await _within(asyncio.gather(batch.call(2), batch.call(5)))
    assert [row["answer"] for row in rows] == [5, 2]
    await batch.close()


async def test_two_replicas_taking_the_same_keys_in_opposite_orders_never_deadlock() -> None:
    # Given two replicas' stores on one table, and 60 keys
    name = f"test_batch_{uuid.uuid4().hex[:16]}"
    stores = [PostgresNewestStore(POSTGRES_URL, table=name) for _ in range(2)]
    for store in stores:
        await _within(store.open())
    keys = [f"k{n:03d}" for n in range(400)]
    try:
        for round_ in range(5):
            # When both take every key's lease at once, one in the keys' order, the other in
            # the reverse order (each replica's takes of a turn sent as one batch)
            async def take(store: PostgresNewestStore, owner: str, order: list[str]) -> list[Any]:
                return list(
                    await asyncio.gather(
                        *(store.acquire_and_read(APP, FAMILY, k, owner, 30.0) for k in order)
                    )
                )

            firsts, seconds = await _within(
                asyncio.gather(
                    take(stores[0], f"first-{round_}", keys),
                    take(stores[1], f"second-{round_}", keys[::-1]),
                )
            )

            # Then neither failed (no deadlock), and each key went to exactly one of them
            taken = [
                (first is not None) + (second is not None)
                for first, second in zip(firsts, seconds[::-1], strict=True)
            ]
            assert taken == [1] * len(keys)
            assert all(isinstance(t, Leased) for t in firsts + seconds if t is not None)

            # And each releases what it took, recording an event
            await _within(
                asyncio.gather(
                    *(
                        stores[0].record_and_release(
                            APP, FAMILY, k, f"first-{round_}", Recorded(T0)
                        )
                        for k, t in zip(keys, firsts, strict=True)
                        if t is not None
                    ),
                    *(
                        stores[1].record_and_release(
                            APP, FAMILY, k, f"second-{round_}", Recorded(T0)
                        )
                        for k, t in zip(keys[::-1], seconds, strict=True)
                        if t is not None
                    ),
                )
            )
        assert all([await stores[0].newest(APP, FAMILY, k) == Recorded(T0) for k in keys])
    finally:
        for store in stores:
            await _within(store.close())
        await drop_table(name)
