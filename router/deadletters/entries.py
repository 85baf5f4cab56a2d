"""What a parked event looks like to ops, which of them a filter picks, what an operation did."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage

from router.claims.model import EventPattern
from router.contract import envelope
from router.contract.masking import mask_payload, mask_text
from router.deadletters.places import Kind, Parked
from router.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Entry:
    """One parked event, as listed."""

    position: int
    message_id: str
    event_type: str | None
    company_id: str | None
    routing_key: str
    attempts: int | None
    error: str | None
    reason: str | None
    parked_at: datetime | None
    replays: int
    headers: Mapping[str, Any] = field(repr=False)
    body: bytes = field(repr=False)

    def summary(self, *, reveal: bool = False) -> dict[str, Any]:
        """The table row, for ``list`` and ``--json`` (contact details in errors masked)."""
        return {
            "position": self.position,
            "message_id": self.message_id,
            "type": self.event_type,
            "company": self.company_id,
            "attempts": self.attempts,
            "error": self.error if reveal or self.error is None else mask_text(self.error),
            "reason": self.reason,
            "parked_at": _iso(self.parked_at),
            "replays": self.replays,
        }

    def detail(self, *, reveal: bool = False) -> dict[str, Any]:
        """Everything about the event; phone numbers and emails masked unless ``reveal``."""
        try:
            payload: Any = orjson.loads(self.body)
            body: Any = payload if reveal else mask_payload(payload)
        except orjson.JSONDecodeError:
            text = self.body.decode("utf-8", "replace")
            body = text if reveal else mask_text(text)
        headers = {k: _jsonable(v) for k, v in self.headers.items()}
        if not reveal:  # handler errors often quote the subscriber's phone or email
            for name in envelope.HANDLER_TEXT:
                if isinstance(headers.get(name), str):
                    headers[name] = mask_text(headers[name])
        return {
            **self.summary(reveal=reveal),
            "routing_key": self.routing_key,
            "headers": headers,
            "payload": body,
        }


@dataclass(frozen=True, slots=True)
class Filter:
    """Which parked events an operation is about. Empty: all of them."""

    pattern: EventPattern | None = None
    company: str | None = None
    message_ids: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None
    error: str | None = None

    @classmethod
    def build(
        cls,
        *,
        event: str | None = None,
        company: str | None = None,
        message_ids: Iterable[str] = (),
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        error: str | None = None,
    ) -> Filter:
        """From user input; :class:`InvalidInput` with a one-line reason when malformed."""
        return cls(
            EventPattern.parse(event) if event else None,
            company or None,
            frozenset(message_ids),
            _when(since, "since"),
            _when(until, "until"),
            error or None,
        )

    def matches(self, entry: Entry) -> bool:
        if self.pattern is not None and not (
            entry.event_type is not None and self.pattern.matches(entry.event_type)
        ):
            return False
        if self.company is not None and entry.company_id != self.company:
            return False
        if self.message_ids and entry.message_id not in self.message_ids:
            return False
        if self.since is not None and (entry.parked_at is None or entry.parked_at < self.since):
            return False
        if self.until is not None and (entry.parked_at is None or entry.parked_at > self.until):
            return False
        return not (
            self.error is not None
            and (entry.error is None or self.error.lower() not in entry.error.lower())
        )


@dataclass(slots=True)
class Summary:
    """What an operation did. ``left`` is how many events are parked after it (after a replay:
    the queue's depth, so unrouted events that still have no owner count again)."""

    total: int = 0
    matched: int = 0
    replayed: int = 0
    purged: int = 0
    failed: int = 0
    left: int = 0
    dry_run: bool = False
    entries: list[Entry] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "matched": self.matched,
            "replayed": self.replayed,
            "purged": self.purged,
            "failed": self.failed,
            "left": self.left,
            "dry_run": self.dry_run,
        }


#: The filter that picks every event.
EVERYTHING = Filter()

#: Called as ``progress(done, total)`` while a walk goes.
Progress = Callable[[int, int], None]


def entry_from_message(parked: Parked, position: int, message: AbstractIncomingMessage) -> Entry:
    """What a listing shows of one parked message."""
    headers = dict(message.headers or {})
    body = message.body
    event_type, company = _type_and_company(body, headers)
    return Entry(
        position=position,
        message_id=message.message_id or "",
        event_type=event_type,
        company_id=company,
        routing_key=envelope.event_routing_key(headers) or message.routing_key or "",
        # on unrouted/invalid, x-delivery-count only counts how often they were listed
        attempts=envelope.attempts(headers, deliveries_count=parked.kind is Kind.DLQ),
        error=envelope.error(headers),
        reason=envelope.reason(headers),
        parked_at=_parked_at(parked.kind, message, headers),
        replays=envelope.replays(headers),
        headers=headers,
        body=body,
    )


def _type_and_company(body: bytes, headers: Mapping[str, Any]) -> tuple[str | None, str | None]:
    company = envelope.company(headers)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, company
    if not isinstance(payload, dict):
        return None, company
    event_type = payload.get("type")
    if company is None and isinstance(payload.get("company"), dict):
        company = _str(payload["company"].get("company_id"))
    return (event_type if isinstance(event_type, str) else None), company


def _parked_at(
    kind: Kind, message: AbstractIncomingMessage, headers: Mapping[str, Any]
) -> datetime | None:
    parked_at = envelope.parked_at(headers)
    if parked_at is None and kind is Kind.UNROUTED and message.timestamp is not None:
        stamp = message.timestamp
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return parked_at


def _when(value: str | datetime | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            "must be an ISO 8601 time such as 2026-11-26T09:00Z", field=name
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _str(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z") if value else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


__all__ = ["EVERYTHING", "Entry", "Filter", "Progress", "Summary", "entry_from_message"]
