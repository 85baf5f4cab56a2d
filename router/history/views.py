"""What ops see of archived events: a row of a search, one event in full, and the record
that someone was shown an event's contact details.

The payload is masked (:func:`router.parked.views.payload`) unless the caller passes
``reveal=True``; the CLI and the admin API choose who may reveal, and call
:func:`record_reveal` when they do, as for parked events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog

from router.history.reader import Archived
from router.history.search import Found
from router.parked.jobs import AuditAction, AuditRecord
from router.parked.store import ParkedStore
from router.parked.views import iso, jsonable, payload

log = structlog.get_logger("router.history.views")


def summary(event: Archived) -> dict[str, Any]:
    """A row of a search: where it is in the archive and what it is (no personal data)."""
    return {
        "offset": event.offset,
        "message_id": event.message_id,
        "type": event.event_type,
        "company": event.company,
        "routing_key": event.routing_key,
        "time": iso(event.timestamp),
    }


def detail(event: Archived, *, reveal: bool = False) -> dict[str, Any]:
    """One event in full: its row, headers and payload, contact details masked unless
    ``reveal``."""
    return {
        **summary(event),
        "content_type": event.content_type,
        "headers": {key: jsonable(value) for key, value in event.headers.items()},
        "payload": payload(event.body, reveal=reveal),
    }


def found_json(found: Found) -> dict[str, Any]:
    """A search's result: its rows oldest first, whether more match, how many were read."""
    return {
        "events": [summary(event) for event in found.events],
        "more": found.more,
        "scanned": found.scanned,
    }


async def record_reveal(
    store: ParkedStore, who: str, event: Archived, stream: str, *, logger: Any = None
) -> None:
    """Record that ``who`` was shown ``event``'s contact details: in the audit log (of the
    parked-event store, beside the parked events' reveals) and as a structured log line."""
    where = {"archive": stream, "message_id": event.message_id, "offset": event.offset}
    await store.add_audit(
        AuditRecord(at=datetime.now(UTC), who=who, action=AuditAction.REVEAL, filter=where)
    )
    (logger if logger is not None else log).warning("archived_event_revealed", who=who, **where)


__all__ = ["detail", "found_json", "record_reveal", "summary"]
