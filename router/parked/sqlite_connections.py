"""The connections of a SQLite parked-event store, kept from one call to the next.

Each call of :class:`~router.parked.sqlite.SqliteParkedStore` runs in a worker thread on a
connection of its own. Opening one per call read the schema again each time and, as the
file's last connection, checkpointed and removed the write-ahead log at every close: about an
eighth of the keeper's drain. So a call's connection is kept for the next call (a few at
most, each used by one call at a time, in whichever worker thread runs it), and closed when
the store closes. A call that failed may leave its connection in any state: it is closed.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

#: Connections kept between calls, at most.
KEPT = 4
#: Set on every connection: a page cache of up to 64 MiB (used as a batch of entries goes in
#: or a facet counts; filled only as far as needed).
PRAGMAS = ("PRAGMA cache_size = -65536",)


class Connections:
    """The connections of one store's file (raises :class:`sqlite3.Error` as sqlite3 does)."""

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._kept: list[sqlite3.Connection] = []
        self._open = True

    def take(self) -> sqlite3.Connection:
        """A connection kept from an earlier call, else a new one."""
        with contextlib.suppress(IndexError):
            return self._kept.pop()
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout,
            isolation_level=None,  # (autocommit between calls: a kept one holds no snapshot)
            check_same_thread=False,  # (one call at a time, in whichever worker thread)
        )
        try:
            for pragma in PRAGMAS:
                conn.execute(pragma)
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def give_back(self, conn: sqlite3.Connection, *, sound: bool) -> None:
        """``conn`` after its call: kept for the next when the call succeeded (``sound``)
        and there is room, else closed."""
        if sound and self._open and len(self._kept) < KEPT:
            self._kept.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Close the kept connections (a call under way closes its own when it ends)."""
        self._open = False
        kept, self._kept = self._kept, []
        for conn in kept:
            conn.close()


__all__ = ["KEPT", "PRAGMAS", "Connections"]
