"""The append-only SQLite audit log: one row per SMS event, never updated, never deleted.

The schema enforces it: ``message_id`` is UNIQUE and rows go in with ``INSERT OR IGNORE`` (a
redelivery of the same webhook is not a second row), and triggers abort any UPDATE or DELETE.
One connection, used from one thread at a time (``asyncio.to_thread`` under a lock), so a
handler never blocks the event loop on disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.event import Event

TABLE = "sms_audit"
#: Where the log lives unless SMS_AUDIT_DB (or --db) says otherwise.
DEFAULT_DB = "sms-audit.db"
#: How much of a message text or link URL a row keeps.
DETAIL_MAX = 160

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id    TEXT NOT NULL UNIQUE,
    occurred_at   TEXT NOT NULL,
    company_id    TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    activity      TEXT NOT NULL,
    subscriber_id TEXT,
    phone         TEXT,
    detail        TEXT
);
CREATE INDEX IF NOT EXISTS {TABLE}_occurred_at ON {TABLE} (occurred_at);
CREATE INDEX IF NOT EXISTS {TABLE}_phone ON {TABLE} (phone, occurred_at);
CREATE INDEX IF NOT EXISTS {TABLE}_subscriber ON {TABLE} (subscriber_id, occurred_at);
CREATE TRIGGER IF NOT EXISTS {TABLE}_no_update BEFORE UPDATE ON {TABLE}
BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only'); END;
CREATE TRIGGER IF NOT EXISTS {TABLE}_no_delete BEFORE DELETE ON {TABLE}
BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only'); END;
"""

_INSERT = f"""
INSERT OR IGNORE INTO {TABLE}
    (message_id, occurred_at, company_id, event_type, activity, subscriber_id, phone, detail)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""

#: What a subscriber did, by event type; types Attentive adds later are "other".
ACTIVITIES: dict[str, str] = {
    "sms.subscribed": "subscribed",
    "sms.unsubscribed": "unsubscribed",
    "sms.sent": "sent",
    "sms.message_link_click": "clicked",
    "sms.inbound_message": "inbound",
}


def iso_utc(moment: datetime) -> str:
    """``2021-09-29T19:52:58.104Z``: fixed width, so text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row to append."""

    message_id: str
    occurred_at: str
    company_id: str
    event_type: str
    activity: str
    subscriber_id: str | None
    phone: str | None
    detail: str | None

    @classmethod
    def from_event(cls, event: Event, *, now: datetime | None = None) -> AuditEntry:
        subscriber = event.subscriber
        external_id = subscriber.get("external_id")
        phone = subscriber.get("phone")
        return cls(
            message_id=event.message_id,
            occurred_at=iso_utc(event.timestamp or now or datetime.now(tz=UTC)),
            company_id=event.company_id,
            event_type=event.type,
            activity=ACTIVITIES.get(event.type, "other"),
            subscriber_id=None if external_id is None else str(external_id),
            phone=phone if isinstance(phone, str) and phone else None,
            detail=_detail(event.payload),
        )

    def row(self) -> tuple[str | None, ...]:
        return (
            self.message_id,
            self.occurred_at,
            self.company_id,
            self.event_type,
            self.activity,
            self.subscriber_id,
            self.phone,
            self.detail,
        )


def _detail(payload: Mapping[str, Any]) -> str | None:
    """The link clicked, else the message text, else the sign-up creative's name."""
    for section, key in (("link", "url"), ("message", "text"), ("creative", "name")):
        part = payload.get(section)
        value = part.get(key) if isinstance(part, dict) else None
        if isinstance(value, str) and value:
            return value if len(value) <= DETAIL_MAX else value[: DETAIL_MAX - 1] + "…"
    return None


def connect(path: str | Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection to the audit database (created with its schema unless ``read_only``)."""
    if read_only:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        return conn
    conn = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")  # readers (the query CLI) never block writes
        conn.executescript(SCHEMA)
    except sqlite3.Error:
        conn.close()
        raise
    return conn


class AuditLog:
    """The worker's handle on the database: :meth:`open` at start-up, :meth:`close` at the end."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        try:
            self._conn = await asyncio.to_thread(connect, self.path)
        except sqlite3.Error as error:
            raise WorkerConfigError(
                f"SMS_AUDIT_DB={self.path}: cannot open the audit database: {error}"
            ) from None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            async with self._lock:
                await asyncio.to_thread(conn.close)

    async def append(self, entry: AuditEntry) -> bool:
        """Append ``entry``; False when its message id is already there (a redelivery)."""
        async with self._lock:
            if self._conn is None:
                raise RuntimeError("the audit log is not open (on_startup has not run)")
            cursor = await asyncio.to_thread(self._conn.execute, _INSERT, entry.row())
            return cursor.rowcount == 1


__all__ = ["ACTIVITIES", "DEFAULT_DB", "TABLE", "AuditEntry", "AuditLog", "connect", "iso_utc"]
