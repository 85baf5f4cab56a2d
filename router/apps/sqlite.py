"""Paused applications in the claims' SQLite file: the single-machine backend.

Every call opens its own connection in a worker thread, as the claim store does, so tasks and
processes share the file; a change starts with ``BEGIN IMMEDIATE`` (the write lock before the
read), so two processes never both decide on the same row.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from router.apps.model import AppState, decide
from router.apps.store import AppStoreError, Change
from router.pg import one_line
from router.sqlite_files import immediate

_T = TypeVar("_T")

#: The table's name in the file (the claims are in ``claims`` beside it).
TABLE = "app_states"
_SCHEMA = f"""
    CREATE TABLE IF NOT EXISTS {TABLE} (
        app TEXT PRIMARY KEY,
        paused INTEGER NOT NULL,
        since TEXT NOT NULL,
        changed_by TEXT NOT NULL,
        reason TEXT NOT NULL
    )
"""
_COLUMNS = "app, paused, since, changed_by, reason"


class SqliteAppStore:
    """An :class:`~router.apps.store.AppStateStore` in one SQLite file (created if missing)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._opened = False

    def __repr__(self) -> str:
        return f"SqliteAppStore({str(self.path)!r})"

    async def open(self) -> None:
        """Create the file, its directory and the table if missing."""
        try:
            await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise AppStoreError(
                f"cannot create the directory of {self.path}: {one_line(exc)}"
            ) from exc
        await self._run(lambda conn: conn.execute(_SCHEMA), need_open=False)
        self._opened = True

    async def close(self) -> None:
        """Nothing stays connected between calls; later calls are refused."""
        self._opened = False

    async def get(self, app: str) -> AppState:
        return await self._run(lambda conn: _read(conn, app))

    async def list(self) -> builtins.list[AppState]:
        rows = await self._run(
            lambda conn: conn.execute(f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY app").fetchall()
        )
        return [_state(row) for row in rows]

    async def change(self, app: str, *, paused: bool, by: str, reason: str, at: datetime) -> Change:
        def work(conn: sqlite3.Connection) -> Change:
            with immediate(conn):
                before = _read(conn, app)
                after = decide(before, paused=paused, by=by, reason=reason, at=at)
                if after != before:
                    conn.execute(
                        f"INSERT OR REPLACE INTO {TABLE} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                        (app, int(paused), at.astimezone(UTC).isoformat(), after.by, after.reason),
                    )
            return Change(before, after)

        return await self._run(work)

    async def _run(self, work: Callable[[sqlite3.Connection], _T], *, need_open: bool = True) -> _T:
        if need_open and not self._opened:
            raise AppStoreError(f"app store {self.path} is not open: call open() first")
        return await asyncio.to_thread(self._in_thread, work)

    def _in_thread(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise AppStoreError(f"cannot open {self.path}: {one_line(exc)}") from exc
        try:
            return work(conn)
        except sqlite3.Error as exc:
            raise AppStoreError(f"{self.path} ({TABLE}): {one_line(exc)}") from exc
        finally:
            conn.close()


def _read(conn: sqlite3.Connection, app: str) -> AppState:
    row = conn.execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE app = ?", (app,)).fetchone()
    return AppState(app) if row is None else _state(row)


def _state(row: tuple[str, int, str, str, str]) -> AppState:
    app, paused, since, by, reason = row
    stamp = datetime.fromisoformat(since)
    if stamp.tzinfo is None:  # written by hand: the store itself always writes UTC
        stamp = stamp.replace(tzinfo=UTC)
    return AppState(app, bool(paused), stamp, by, reason)


__all__ = ["TABLE", "SqliteAppStore"]
