"""What ops see of parked entries: the queries the CLI and the admin API build from their
filters, and the JSON shapes of an entry (summary and detail), a page and the facets.

Contact details are masked in everything here unless the caller passes ``reveal=True``: the
payload (:func:`~router.contract.masking.mask_payload`; a body that is not JSON as text), a
handler's error and traceback, which often quote the subscriber's phone or email. The CLI and
the admin API only choose who may reveal, and record that they did (:func:`record_reveal`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import structlog

from router.contract import envelope
from router.contract.masking import mask_payload, mask_text
from router.errors import InvalidInput, NotFound
from router.parked.jobs import AuditAction, AuditRecord
from router.parked.model import ParkedEvent, Place
from router.parked.query import Bucket, Facets, Page, Query
from router.parked.store import ParkedStore

log = structlog.get_logger("router.parked.views")

#: The longest entry id taken as one (a longer run of digits is a message id).
_MAX_ID_DIGITS = 18


def in_place(query: Query) -> Query:
    """``query`` when it names one parking place as ops do: a DLQ with its application,
    unrouted or invalid without one; else :class:`InvalidInput` naming the field."""
    if query.place is Place.DLQ and query.app is None:
        raise InvalidInput("is needed for a dead-letter queue", field="app")
    if query.place is not Place.DLQ and query.app is not None:
        raise InvalidInput("is only for a dead-letter queue", field="app")
    return query


def where(query: Query) -> str:
    """The parking place of ``query`` in words: ``the dlq of crm-sync``, ``unrouted``."""
    if query.place is Place.DLQ:
        return f"the dlq of {query.app}"
    return query.place.value if query.place is not None else "the parked-event store"


async def find(store: ParkedStore, query: Query, ref: str) -> ParkedEvent:
    """The entry ``ref`` names in ``query``'s place, whatever its state: an entry id (digits),
    else the newest entry of that message id; :class:`NotFound` when there is none."""
    ref = ref.strip()
    in_place = Query(place=query.place, app=query.app, state=None)
    if ref.isascii() and ref.isdigit() and len(ref) <= _MAX_ID_DIGITS:
        with contextlib.suppress(NotFound):
            entry = await store.get(int(ref))
            if in_place.matches(entry):
                return entry
    page = await store.page(
        Query(place=query.place, app=query.app, state=None, message_ids=frozenset({ref})), 1
    )
    if not page.entries:
        raise NotFound(f"no event {ref} in {where(query)}")
    return page.entries[0]


async def record_reveal(
    store: ParkedStore, who: str, entry: ParkedEvent, *, logger: Any = None
) -> None:
    """Record that ``who`` was shown ``entry``'s contact details: in the store's audit log,
    and as a structured log line (on ``logger``, else this module's)."""
    where = {"entry_id": entry.id, "message_id": entry.message_id, "place": entry.place.value}
    if entry.app is not None:
        where["app"] = entry.app
    await store.add_audit(
        AuditRecord(at=datetime.now(UTC), who=who, action=AuditAction.REVEAL, filter=where)
    )
    (logger if logger is not None else log).warning("parked_entry_revealed", who=who, **where)


# -- JSON shapes -------------------------------------------------------------------------------


def summary(entry: ParkedEvent, *, reveal: bool = False) -> dict[str, Any]:
    """A listed entry (a table row, an item of ``--json`` and of the API's pages); its error
    masked unless ``reveal``."""
    return {
        "id": entry.id,
        "message_id": entry.message_id,
        "type": entry.event_type,
        "company": entry.company,
        "attempts": entry.attempts,
        "error": _masked(entry.error, reveal),
        "reason": entry.reason,
        "parked_at": iso(entry.parked_at),
        "replays": entry.replays,
        "state": entry.state.value,
    }


def detail(entry: ParkedEvent, *, reveal: bool = False) -> dict[str, Any]:
    """Everything about an entry: the summary, where it came from, its properties, headers
    and payload; phone numbers and emails masked unless ``reveal``."""
    headers = {key: jsonable(value) for key, value in entry.headers.items()}
    if not reveal:
        for name in envelope.HANDLER_TEXT:
            if isinstance(headers.get(name), str):
                headers[name] = mask_text(headers[name])
    properties = {
        name: jsonable(value)
        for name, value in _properties(entry).items()
        if value is not None and name != "headers"
    }
    return {
        **summary(entry, reveal=reveal),
        "place": entry.place.value,
        "app": entry.app,
        "routing_key": entry.routing_key,
        "first_failed_at": iso(entry.first_failed_at),
        "stored_at": iso(entry.stored_at),
        "previous_id": entry.previous_id,
        "state_at": iso(entry.state_at),
        "state_by": entry.state_by,
        "traceback": _masked(entry.traceback, reveal),
        "properties": properties,
        "headers": headers,
        "payload": payload(entry.body, reveal=reveal),
    }


def page_json(page: Page, *, reveal: bool = False) -> dict[str, Any]:
    """A page: its entries newest first, and the cursor of the next (None: the last page)."""
    return {
        "entries": [summary(entry, reveal=reveal) for entry in page.entries],
        "next_cursor": page.next_cursor,
    }


def facets_json(facets: Facets) -> dict[str, Any]:
    """The counts by type, company, error kind, reason and day, largest first."""
    return {
        "total": facets.total,
        "types": _buckets(facets.types),
        "companies": _buckets(facets.companies),
        "errors": _buckets(facets.errors),
        "reasons": _buckets(facets.reasons),
        "days": _buckets(facets.days),
    }


#: The facets' names in :func:`facets_json`, as headings.
FACET_NAMES = ("types", "companies", "errors", "reasons", "days")


def payload(body: bytes, *, reveal: bool = False) -> Any:
    """The body as JSON when it is JSON, else as text; contact details masked unless
    ``reveal``."""
    try:
        value: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace")
        return text if reveal else mask_text(text)
    return value if reveal else mask_payload(value)


def iso(stamp: datetime | None) -> str | None:
    """A time as ISO 8601 in UTC to the millisecond (``2026-11-26T09:00:00.000Z``)."""
    if stamp is None:
        return None
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    """An AMQP field value as JSON can hold it: bytes as text, times as ISO 8601."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, datetime):
        return iso(value) if value.tzinfo else value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


def _properties(entry: ParkedEvent) -> dict[str, Any]:
    props = entry.properties
    return {
        "content_type": props.content_type,
        "content_encoding": props.content_encoding,
        "delivery_mode": props.delivery_mode,
        "priority": props.priority,
        "correlation_id": props.correlation_id,
        "reply_to": props.reply_to,
        "expiration": props.expiration,
        "message_id": props.message_id,
        "timestamp": props.timestamp,
        "type": props.type,
        "user_id": props.user_id,
        "app_id": props.app_id,
    }


def _masked(text: str | None, reveal: bool) -> str | None:
    return text if reveal or text is None else mask_text(text)


def _buckets(buckets: tuple[Bucket, ...]) -> list[dict[str, Any]]:
    return [{"value": bucket.value, "count": bucket.count} for bucket in buckets]


__all__ = [
    "FACET_NAMES",
    "detail",
    "facets_json",
    "find",
    "in_place",
    "iso",
    "jsonable",
    "page_json",
    "payload",
    "record_reveal",
    "summary",
    "where",
]
