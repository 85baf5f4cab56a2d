"""Claims in a SQLite file: the single-machine backend.

Every call opens its own connection in a worker thread (``asyncio.to_thread``), so one store
can be used by many tasks at once and many processes can share the file. ``grant`` starts
with ``BEGIN IMMEDIATE``: the write lock is taken before the claims are read, so two
processes can never both decide on the same picture. A busy timeout makes a writer wait for
the lock instead of failing.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from router.claims.model import Claim, ClaimSpec, EventPattern
from router.claims.store import Granted, Refused, decide
from router.errors import ClaimStoreError, InvalidClaim
from router.sqlite_files import immediate, wal

_T = TypeVar("_T")

#: How long a writer waits for another process's write lock before giving up (seconds).
DEFAULT_BUSY_TIMEOUT = 30.0

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS claims (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app TEXT NOT NULL,
        pattern TEXT NOT NULL,
        company TEXT NULL,
        created_at TEXT NOT NULL
    )
    """,
    """
    CREATE UNIQUE INDEX IF NOT EXISTS claims_scope
        ON claims (app, pattern, coalesce(company, ''))
    """,
)
_COLUMNS = "id, app, pattern, company, created_at"


class SqliteClaimStore:
    """A :class:`~router.claims.store.ClaimStore` over one SQLite file (created if missing)."""

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    ) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._opened = False

    def __repr__(self) -> str:
        return f"SqliteClaimStore({str(self.path)!r})"

    async def open(self) -> None:
        """Create the file, its directory and the schema if missing; switch to WAL."""
        try:
            await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise ClaimStoreError(
                f"cannot create the directory of claims database {self.path}: {_line(exc)}"
            ) from exc
        await self._run(self._create_schema, need_open=False)
        self._opened = True

    async def close(self) -> None:
        """Nothing stays connected between calls; later calls are refused."""
        self._opened = False

    async def list(self, app: str | None = None) -> builtins.list[Claim]:
        """Every claim (of ``app``), oldest first."""
        return await self._run(lambda conn: _read(conn, app))

    async def grant(self, wanted: Sequence[ClaimSpec]) -> Granted | Refused:
        """Grant all of ``wanted`` or none, under the database's write lock."""
        specs = tuple(wanted)
        return await self._run(lambda conn: _grant(conn, specs))

    async def remove(self, claim_id: int) -> Claim | None:
        """Delete a claim; the deleted claim, or None when there was none with that id."""
        return await self._run(lambda conn: _remove(conn, claim_id))

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        wal(conn, time.monotonic() + self.busy_timeout)
        with immediate(conn):
            for statement in _SCHEMA:
                conn.execute(statement)

    async def _run(self, work: Callable[[sqlite3.Connection], _T], *, need_open: bool = True) -> _T:
        if need_open and not self._opened:
            raise ClaimStoreError(f"claim store {self.path} is not open: call open() first")
        return await asyncio.to_thread(self._in_thread, work)

    def _in_thread(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise ClaimStoreError(f"cannot open claims database {self.path}: {_line(exc)}") from exc
        try:
            return work(conn)
        except sqlite3.Error as exc:
            raise ClaimStoreError(f"claims database {self.path}: {_line(exc)}") from exc
        finally:
            conn.close()


def _grant(conn: sqlite3.Connection, wanted: tuple[ClaimSpec, ...]) -> Granted | Refused:
    with immediate(conn):
        decision = decide(_read(conn, None), wanted)
        if decision.conflicts:
            return Refused(decision.conflicts)
        created = tuple(_insert(conn, spec) for spec in decision.to_insert)
    return Granted(claims=_in_order(wanted, decision.already_held + created), created=created)


def _insert(conn: sqlite3.Connection, spec: ClaimSpec) -> Claim:
    created_at = datetime.now(UTC)
    cursor = conn.execute(
        "INSERT INTO claims (app, pattern, company, created_at) VALUES (?, ?, ?, ?)",
        (spec.app, str(spec.pattern), spec.company, created_at.isoformat()),
    )
    claim_id = cursor.lastrowid
    if claim_id is None:  # pragma: no cover - sqlite3 always sets it after an INSERT
        raise ClaimStoreError("claims database did not return the id of an inserted claim")
    return Claim(spec.app, spec.pattern, spec.company, id=claim_id, created_at=created_at)


def _remove(conn: sqlite3.Connection, claim_id: int) -> Claim | None:
    with immediate(conn):
        row = conn.execute(f"SELECT {_COLUMNS} FROM claims WHERE id = ?", (claim_id,)).fetchone()
        if row is None:
            return None
        conn.execute("DELETE FROM claims WHERE id = ?", (claim_id,))
    return _claim(row)


def _read(conn: sqlite3.Connection, app: str | None) -> list[Claim]:
    if app is None:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM claims ORDER BY id").fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM claims WHERE app = ? ORDER BY id", (app,)
        ).fetchall()
    return [_claim(row) for row in rows]


def _claim(row: tuple[int, str, str, str | None, str]) -> Claim:
    claim_id, app, pattern, company, created_at = row
    try:
        parsed = EventPattern.parse(pattern)
    except InvalidClaim as exc:
        raise ClaimStoreError(f"claim {claim_id} in the database is unreadable: {exc}") from exc
    stamp = datetime.fromisoformat(created_at)
    if stamp.tzinfo is None:  # written by hand: the store itself always writes UTC
        stamp = stamp.replace(tzinfo=UTC)
    return Claim(app, parsed, company, id=claim_id, created_at=stamp)


def _in_order(wanted: Sequence[ClaimSpec], claims: Sequence[Claim]) -> tuple[Claim, ...]:
    """``claims`` in the order of the specs of ``wanted`` they answer, each once."""
    ordered: list[Claim] = []
    for spec in wanted:
        claim = next(claim for claim in claims if spec.same_as(claim))
        if claim not in ordered:
            ordered.append(claim)
    return tuple(ordered)


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


__all__ = ["DEFAULT_BUSY_TIMEOUT", "SqliteClaimStore"]
