"""What every SQLite file of the router goes through (the claims, the parked events, the
applications' states): the switch to write-ahead logging and the write transaction. Pure
sqlite3, run in a worker thread by the store that calls it."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that takes the write lock before it reads anything: committed
    when the block ends, rolled back when it raises."""
    conn.execute("BEGIN IMMEDIATE")
    with conn:  # the connection commits on leaving, or rolls back on an exception
        yield


def wal(conn: sqlite3.Connection, deadline: float) -> None:
    """Switch the file to WAL. The switch takes an exclusive lock that the busy handler does
    not always wait for when several processes open a new file at once: retry until
    ``deadline`` (a :func:`time.monotonic` reading)."""
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


__all__ = ["immediate", "wal"]
