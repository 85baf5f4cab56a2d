"""The SQLite parked-event store keeps its calls' connections for the next calls while it is
open, and that changes nothing a caller can see but the cost: the write-ahead log stays
between calls (a connection closed after each call was the file's last one and removed it
every time), a store sees what another store on the file wrote at once, a call that failed
leaves nothing behind, and closing the store lets go of the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from router.parked.model import Place
from router.parked.query import Query
from router.parked.sqlite import SqliteParkedStore
from router.parked.store import ParkedStoreError
from tests.parked_stores import EVERY_STATE, body_of, dead_letter

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def path(tmp_path: Path) -> Path:
    return tmp_path / "router.db"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteParkedStore]:
    opened = SqliteParkedStore(path)
    await opened.open()
    await opened.upgrade()
    yield opened
    await opened.close()


def wal_of(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


async def test_the_write_ahead_log_stays_between_calls_and_goes_when_the_store_closes(
    store: SqliteParkedStore, path: Path
) -> None:
    await store.add_many([dead_letter(body_of("sms.subscribed"))])

    assert wal_of(path).exists()  # a connection is kept: the file's log is not checkpointed away
    assert await store.count(EVERY_STATE) == 1

    await store.close()

    assert not wal_of(path).exists()  # the last connection checkpointed the log and removed it


async def test_a_store_sees_at_once_what_another_store_on_the_file_wrote(
    store: SqliteParkedStore, path: Path
) -> None:
    assert await store.count(EVERY_STATE) == 0  # (its connection is kept after this read)
    other = SqliteParkedStore(path)
    await other.open()
    try:
        await other.add_many(
            [dead_letter(body_of("sms.sent"), message_id=f"m-{n}") for n in (1, 2)]
        )
    finally:
        await other.close()

    assert await store.count(EVERY_STATE) == 2
    assert await store.count(Query.build(place=Place.DLQ, app="alerts")) == 2


async def test_calls_at_once_each_get_a_connection_and_all_succeed(
    store: SqliteParkedStore,
) -> None:
    entries = [dead_letter(body_of("email.opened"), message_id=f"m-{n}") for n in range(20)]

    added = await asyncio.gather(*(store.add_many([entry]) for entry in entries))
    counted = await asyncio.gather(*(store.count(EVERY_STATE) for _ in range(20)))

    assert sum(added) == 20
    assert counted == [20] * 20


async def test_a_call_that_failed_leaves_the_store_working(
    store: SqliteParkedStore, path: Path
) -> None:
    await store.add_many([dead_letter(body_of("sms.subscribed"))])
    with pytest.raises(ParkedStoreError, match="no such table"):
        await store._run(lambda conn: conn.execute("SELECT 1 FROM no_such_table").fetchall())

    await store.add_many([dead_letter(body_of("sms.subscribed"), message_id="m-2")])

    assert await store.count(EVERY_STATE) == 2


async def test_a_closed_store_refuses_calls_and_holds_no_connection(
    store: SqliteParkedStore, path: Path
) -> None:
    await asyncio.gather(*(store.count(EVERY_STATE) for _ in range(3)))
    assert holds(path)  # (the connections kept between calls)

    await store.close()

    with pytest.raises(ParkedStoreError, match="not open"):
        await store.count(EVERY_STATE)
    assert not holds(path)


def holds(path: Path) -> bool:
    """Whether this process has ``path`` open (Linux)."""
    files: set[Path] = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # (one closed meanwhile)
            files.add(Path(os.readlink(fd)))
    return path.resolve() in files
