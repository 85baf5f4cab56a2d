"""The append-only SQLite audit log: one row per SMS event, never updated, never deleted;
beside it, each subscriber's SMS subscription status.

The log's schema enforces it: ``message_id`` is UNIQUE and rows go in with ``INSERT OR
IGNORE`` (a redelivery of the same webhook is not a second row), and triggers abort any
UPDATE or DELETE. The status table holds one row per company and subscriber (the address the
subscription is held by: E.164 phone, else email, else ``external_id``, as the router's
subject key takes it), overwritten by each subscribe or unsubscribe the worker applies: the
runtime's newest wins (``newest="subscription"``) makes sure that is never an older one.
One connection, used from one thread of its own, so a handler never blocks the event loop
on disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.event import Event
from router.contract.ordering import normal_email, normal_phone, subject_of

_T = TypeVar("_T")

TABLE = "sms_audit"
#: Each subscriber's status: ``subscribed`` or ``unsubscribed``.
STATUS_TABLE = "sms_subscribers"
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
CREATE TABLE IF NOT EXISTS {STATUS_TABLE} (
    company_id  TEXT NOT NULL,
    subscriber  TEXT NOT NULL,
    status      TEXT NOT NULL,
    changed_at  TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    PRIMARY KEY (company_id, subscriber)
);
"""

_INSERT = f"""
INSERT OR IGNORE INTO {TABLE}
    (message_id, occurred_at, company_id, event_type, activity, subscriber_id, phone, detail)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
#: Unconditional: the runtime hands the handler only events newer than the last one applied.
_SET_STATUS = f"""
INSERT INTO {STATUS_TABLE} (company_id, subscriber, status, changed_at, message_id)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (company_id, subscriber) DO UPDATE SET
    status = excluded.status, changed_at = excluded.changed_at, message_id = excluded.message_id
"""
#: The status each subscription event sets.
STATUSES: dict[str, str] = {"sms.subscribed": "subscribed", "sms.unsubscribed": "unsubscribed"}

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


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A subscriber's new status, from a subscribe or unsubscribe."""

    company_id: str
    #: ``phone:+15555555555``, ``email:…`` or ``external_id:…``.
    subscriber: str
    status: str
    changed_at: str
    message_id: str

    @classmethod
    def from_event(cls, event: Event) -> StatusChange | None:
        """What ``event`` sets; None when it is no subscription event or names nobody."""
        status = STATUSES.get(event.type)
        subject = subject_of(event.type, event.company_id, event.payload)
        if status is None or subject is None:
            return None
        _, _, kind, identity = subject
        return cls(
            company_id=event.company_id,
            subscriber=f"{kind}:{identity}",
            status=status,
            changed_at=iso_utc(event.timestamp or datetime.now(tz=UTC)),
            message_id=event.message_id,
        )

    def row(self) -> tuple[str, ...]:
        return (self.company_id, self.subscriber, self.status, self.changed_at, self.message_id)


def subscriber_name(
    *, phone: str | None = None, email: str | None = None, external_id: str | None = None
) -> str | None:
    """The status table's name of a subscriber (the first given of phone, email, id)."""
    if phone is not None and (number := normal_phone(phone)) is not None:
        return f"phone:{number}"
    if email is not None and (address := normal_email(email)) is not None:
        return f"email:{address}"
    return None if external_id is None else f"external_id:{external_id}"


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
    """The worker's handle on the database: :meth:`open` at start-up, :meth:`close` at the end.

    Every call on the connection runs on one thread of its own, one after the other, so a
    handler cancelled while its write runs (a drain's deadline) never has another call, or the
    close, run on the connection alongside that write."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    async def open(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sms-audit")
        try:
            self._conn = await self._run(connect, self.path)
        except sqlite3.Error as error:
            await self.close()
            raise WorkerConfigError(
                f"SMS_AUDIT_DB={self.path}: cannot open the audit database: {error}"
            ) from None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._run(conn.close)  # after every write already handed to the thread
        if self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None

    async def append(self, entry: AuditEntry) -> bool:
        """Append ``entry``; False when its message id is already there (a redelivery)."""
        cursor = await self._run(self._open().execute, _INSERT, entry.row())
        return cursor.rowcount == 1

    async def set_status(self, change: StatusChange) -> None:
        """Make ``change`` the subscriber's status."""
        await self._run(self._open().execute, _SET_STATUS, change.row())

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the audit log is not open (on_startup has not run)")
        return self._conn

    async def _run(self, call: Callable[..., _T], *args: Any) -> _T:
        assert self._thread is not None, "opened first"
        return await asyncio.get_running_loop().run_in_executor(self._thread, call, *args)


def status_of(path: str | Path, company_id: str, subscriber: str) -> str | None:
    """The status of ``subscriber`` (:func:`subscriber_name`) at ``company_id``, if known."""
    conn = connect(path, read_only=True)
    try:
        found = conn.execute(
            f"SELECT status FROM {STATUS_TABLE} WHERE company_id = ? AND subscriber = ?",
            (company_id, subscriber),
        ).fetchone()
    finally:
        conn.close()
    return None if found is None else str(found["status"])


__all__ = [
    "ACTIVITIES",
    "DEFAULT_DB",
    "STATUSES",
    "STATUS_TABLE",
    "TABLE",
    "AuditEntry",
    "AuditLog",
    "StatusChange",
    "connect",
    "iso_utc",
    "status_of",
    "subscriber_name",
]
