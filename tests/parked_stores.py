"""What the parked-store tests share: a store of each backend on a place of its own, and
entries made the way the keeper will make them (a body and AMQP properties through
:func:`router.parked.model.parked_event`).

A SQLite store is a file under ``tmp_path``; a PostgreSQL store is a table named for the test
(``test_parked_<uuid>``), dropped with its version table afterwards. ``ROUTER_TEST_POSTGRES_URL``
points the PostgreSQL half elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from pamqp.commands import Basic

from router.contract import envelope
from router.parked.model import ParkedEvent, parked_event
from router.parked.postgres import PostgresParkedStore
from router.parked.query import Query
from router.parked.schema import audit_table, jobs_table, version_table
from router.parked.sqlite import SqliteParkedStore
from router.parked.store import ParkedStore

POSTGRES_URL = os.environ.get(
    "ROUTER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
#: The longest any one wait in these tests may take (seconds).
TIMEOUT = 60.0
#: A fixed "now" the entries are parked around, so days and ages do not depend on the clock.
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
#: Entries of any state (a query's state is ``parked`` unless it says otherwise).
EVERY_STATE = Query(state=None)


@dataclass(frozen=True)
class Backend:
    """Where one test's entries live; :meth:`make` gives another store on the same place."""

    kind: str
    #: The SQLite file, or the PostgreSQL table.
    location: str
    table: str

    def make(self) -> ParkedStore:
        if self.kind == "sqlite":
            return SqliteParkedStore(self.location, table=self.table)
        return PostgresParkedStore(POSTGRES_URL, table=self.table)

    async def opened(self, *, upgrade: bool = True) -> ParkedStore:
        store = self.make()
        async with asyncio.timeout(TIMEOUT):
            await store.open()
            if upgrade:
                await store.upgrade()
        return store

    async def execute(self, statement: str) -> None:
        """Run SQL on the place directly, as an operator (or an older release) would."""
        if self.kind == "sqlite":
            with closing(sqlite3.connect(self.location, isolation_level=None)) as conn:
                conn.execute(statement)
            return
        conn = await asyncpg.connect(POSTGRES_URL, timeout=TIMEOUT)
        try:
            await conn.execute(statement, timeout=TIMEOUT)
        finally:
            await conn.close(timeout=TIMEOUT)

    async def explain(self, query: str, params: list[Any]) -> str:
        """The plan the database makes for ``query`` (one line a step, joined)."""
        if self.kind == "sqlite":
            with closing(sqlite3.connect(self.location)) as conn:
                rows = conn.execute(f"EXPLAIN QUERY PLAN {query}", params).fetchall()
            return " | ".join(str(row[-1]) for row in rows)
        conn = await asyncpg.connect(POSTGRES_URL, timeout=TIMEOUT)
        try:
            await conn.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
            rows = await conn.fetch(f"EXPLAIN {query}", *params, timeout=TIMEOUT)
        finally:
            await conn.close(timeout=TIMEOUT)
        return " | ".join(str(row[0]) for row in rows)

    async def scalar(self, query: str) -> Any:
        """The first column of the first row of ``query``, read directly."""
        if self.kind == "sqlite":
            with closing(sqlite3.connect(self.location)) as conn:
                return conn.execute(query).fetchone()[0]
        conn = await asyncpg.connect(POSTGRES_URL, timeout=TIMEOUT)
        try:
            return await conn.fetchval(query, timeout=TIMEOUT)
        finally:
            await conn.close(timeout=TIMEOUT)


async def backend_for(kind: str, tmp_path: Path) -> AsyncIterator[Backend]:
    """A place no other test uses: a file in a directory yet to be made, or new tables."""
    if kind == "sqlite":
        yield Backend("sqlite", str(tmp_path / "not-yet" / "router.db"), "parked_events")
        return
    table = f"test_parked_{uuid.uuid4().hex[:16]}"
    yield Backend("postgres", POSTGRES_URL, table)
    await Backend("postgres", POSTGRES_URL, table).execute(
        f"DROP TABLE IF EXISTS {table}, {version_table(table)}, "
        f"{jobs_table(table)}, {audit_table(table)}"
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async for made in backend_for(request.param, tmp_path):
        yield made


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[ParkedStore]:
    """An opened, upgraded store on the test's own place, closed afterwards."""
    opened = await backend.opened()
    yield opened
    await opened.close()


def body_of(event_type: str | None, company: str = "c1", **extra: Any) -> bytes:
    """A webhook body (a JSON object with the type and company, like Attentive's)."""
    payload: dict[str, Any] = {"company": {"company_id": company}, **extra}
    if event_type is not None:
        payload["type"] = event_type
    return orjson.dumps(payload)


def dead_letter(
    body: bytes,
    *,
    app: str = "alerts",
    message_id: str | None = "m-1",
    error: str = "ValueError: the CRM said no",
    reason: str = "exhausted",
    at: datetime = NOW,
    headers: Mapping[str, Any] | None = None,
    attempt: int = 3,
) -> ParkedEvent:
    """The entry of a delivery a worker of ``app`` dead-lettered at ``at``, as the keeper
    makes it from the DLQ delivery."""
    stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    written = envelope.dead_lettered(
        dict(headers or {}),
        "sms.subscribed.c1",
        attempt=attempt,
        error=error,
        traceback=f'Traceback (most recent call last):\n  File "h.py"\n{error}\n',
        reason=reason,
        app=app,
        now=stamp,
    )
    properties = Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id=message_id,
        timestamp=at.replace(microsecond=0) - timedelta(seconds=30),
        headers=written,
    )
    return parked_event(
        body,
        properties,
        place="dlq",
        app=app,
        routing_key="dead",
        seen_at=at + timedelta(seconds=1),
    )


def stored_id(entry: ParkedEvent) -> int:
    """The id of an entry read from a store (which always has one)."""
    assert entry.id is not None, entry
    return entry.id


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (``True`` is not ``1``, ``bytes`` not
    ``bytearray``), dict keys in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, datetime):
        return bool(a == b and a.utcoffset() == b.utcoffset())
    if isinstance(a, float):
        return repr(a) == repr(b)
    return bool(a == b)


__all__ = [
    "EVERY_STATE",
    "NOW",
    "POSTGRES_URL",
    "TIMEOUT",
    "Backend",
    "backend",
    "backend_for",
    "body_of",
    "dead_letter",
    "same",
    "store",
    "stored_id",
]
