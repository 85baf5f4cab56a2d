"""What the parked-event store keeps of one dead letter, and how it is made from a delivery.
Pure.

A :class:`ParkedEvent` keeps the delivery byte-exact (its raw body and every AMQP property,
headers included: see :mod:`router.parked.fields` for how header values are kept), and beside
it what ops filter and facet on, read once through :mod:`router.contract.envelope` when the
event is parked: place, application, type, company, message id, reason, error, attempts,
when it first failed and when it was parked, how often it was replayed (the traceback is read
from its header when asked for). The store adds its id, the link to the earlier entry of the
same message, and its state.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
from pamqp.commands import Basic

from router.claims.model import validate_app
from router.contract import envelope
from router.contract.events import Routable, is_event_type, parse
from router.contract.names import (
    ACQUIRED_COUNT_HEADER,
    DELIVERY_COUNT_HEADER,
    FIRST_FAILED_AT_HEADER,
    TRACEBACK_HEADER,
)
from router.errors import InvalidInput
from router.parked.fields import decode_table, decode_value, encode_table, encode_value

#: Counted by a quorum queue at each delivery (``x-acquired-count`` on RabbitMQ 4): the same
#: message delivered twice differs only there, so a fingerprint leaves them out.
PER_DELIVERY_HEADERS = frozenset({DELIVERY_COUNT_HEADER, ACQUIRED_COUNT_HEADER})
#: The error facet's bucket: the exception's class name in a worker's ``Type: message``.
_ERROR_KIND_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)(?::|$)")
_ERROR_KIND_LENGTH = 80


class Place(StrEnum):
    """Where an event was parked: an application's DLQ, unrouted (no owner), invalid."""

    DLQ = "dlq"
    UNROUTED = "unrouted"
    INVALID = "invalid"


class State(StrEnum):
    """Where an entry stands: still parked, replayed by a job, or purged by ops."""

    PARKED = "parked"
    REPLAYED = "replayed"
    PURGED = "purged"


@dataclass(frozen=True, slots=True)
class Properties:
    """Every AMQP basic property of a delivery, as the broker gave it (None: not set)."""

    content_type: str | None = None
    content_encoding: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    #: As AMQP carries it: milliseconds, as text.
    expiration: str | None = None
    message_id: str | None = None
    timestamp: datetime | None = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None

    @classmethod
    def from_amqp(cls, properties: Basic.Properties) -> Properties:
        """From pamqp's (aiormq's, aio-pika's ``message.properties``) basic properties."""
        return cls(
            content_type=properties.content_type,
            content_encoding=properties.content_encoding,
            headers=dict(properties.headers or {}),
            delivery_mode=properties.delivery_mode,
            priority=properties.priority,
            correlation_id=properties.correlation_id,
            reply_to=properties.reply_to,
            expiration=properties.expiration,
            message_id=properties.message_id,
            timestamp=properties.timestamp,
            type=properties.message_type,
            user_id=properties.user_id,
            app_id=properties.app_id,
        )

    def as_amqp(self) -> Basic.Properties:
        """The same properties for a publish: what a replay sends (after changing headers).

        A header string that was not UTF-8 (``bytes``, which pamqp cannot send) goes as a
        byte array of the same bytes.
        """
        return Basic.Properties(
            content_type=self.content_type,
            content_encoding=self.content_encoding,
            headers=_sendable(dict(self.headers)) or None,
            delivery_mode=self.delivery_mode,
            priority=self.priority,
            correlation_id=self.correlation_id,
            reply_to=self.reply_to,
            expiration=self.expiration,
            message_id=self.message_id,
            timestamp=self.timestamp,
            message_type=self.type,
            user_id=self.user_id,
            app_id=self.app_id,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON object of the properties that are set; :meth:`from_json` reads it back."""
        data: dict[str, Any] = {}
        for name in _PROPERTY_NAMES:
            value = getattr(self, name)
            if name == "headers":
                data[name] = encode_table(value)
            elif value is not None:
                data[name] = encode_value(value)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Properties:
        """The properties :meth:`to_json` wrote."""
        values = {name: decode_value(value) for name, value in data.items() if name != "headers"}
        unknown = set(values) - set(_PROPERTY_NAMES)
        if unknown:
            raise InvalidInput(f"has unknown names {sorted(unknown)}", field="properties")
        return cls(headers=decode_table(data.get("headers", {})), **values)

    def fingerprint_json(self) -> bytes:
        """The properties without the per-delivery counts, as canonical JSON."""
        data = self.to_json()
        data["headers"] = {
            k: v for k, v in data["headers"].items() if k not in PER_DELIVERY_HEADERS
        }
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


_PROPERTY_NAMES = tuple(f.name for f in fields(Properties))


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    """One parked event: the delivery as it came, what ops filter on, and where it stands."""

    place: Place
    #: The application whose DLQ it came from (None for unrouted and invalid).
    app: str | None
    body: bytes = field(repr=False)
    properties: Properties = field(repr=False)
    #: The event's routing key on the events exchange (else the delivery's own).
    routing_key: str
    message_id: str | None
    event_type: str | None
    company: str | None
    #: Why it was parked: exhausted, rejected, no-handler, RabbitMQ's delivery_limit...
    reason: str | None
    #: The last error (a worker's ``Type: message``; for invalid, why), masked by its writer.
    error: str | None
    attempts: int | None
    first_failed_at: datetime | None
    #: When it was dead-lettered (else RabbitMQ's first death, else when it was received).
    parked_at: datetime
    #: When the store was handed it.
    stored_at: datetime
    #: How often ops replayed it before it was parked this time.
    replays: int
    #: The store's id (None until stored).
    id: int | None = None
    #: The store's earlier entry of the same message (place, app, message id), if any.
    previous_id: int | None = None
    state: State = State.PARKED
    #: When the state last changed, and who changed it (None while parked).
    state_at: datetime | None = None
    state_by: str | None = None

    @property
    def headers(self) -> Mapping[str, Any]:
        return self.properties.headers

    @property
    def traceback(self) -> str | None:
        """The last frames of the worker's traceback (masked by the worker), from its header."""
        return _text(self.headers.get(TRACEBACK_HEADER))

    @property
    def channel(self) -> str | None:
        """The first word of the type (``sms`` of ``sms.subscribed``), for ``sms.*``."""
        return None if self.event_type is None else self.event_type.split(".", 1)[0]

    @property
    def error_kind(self) -> str | None:
        """The error's facet bucket: the exception's class name, else its first line (cut)."""
        return error_kind(self.error)

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of place, application, properties (per-delivery counts left out) and body.

        The same message delivered twice has one fingerprint; one dead-lettered again after
        a replay has another (its replay count and dead-letter time differ).
        """
        digest = hashlib.sha256()
        for part in (self.place.value, self.app or "", self.properties.fingerprint_json()):
            digest.update(part.encode() if isinstance(part, str) else part)
            digest.update(b"\0")
        digest.update(self.body)
        return digest.digest()


def parked_event(
    body: bytes,
    properties: Basic.Properties | Properties,
    *,
    place: Place | str,
    app: str | None,
    routing_key: str,
    seen_at: datetime,
) -> ParkedEvent:
    """The entry for one delivery from a parking queue, as the keeper hands it to the store.

    ``routing_key`` is the delivery's (the event's own, from its header, wins) and
    ``seen_at`` when the keeper got it: the parked time when no header says one.
    :class:`InvalidInput` when ``app`` is missing for a DLQ or given for another place.
    """
    try:
        place = Place(place)
    except ValueError:
        raise InvalidInput(
            f"must be dlq, unrouted or invalid, not {place!r}", field="place"
        ) from None
    if place is Place.DLQ:
        validate_app(app or "")
    elif app is not None:
        raise InvalidInput(f"is only for a DLQ, not for {place.value}", field="app")
    props = properties if isinstance(properties, Properties) else Properties.from_amqp(properties)
    headers = props.headers
    event_type, company = _type_and_company(body)
    return ParkedEvent(
        place=place,
        app=app,
        body=body,
        properties=props,
        routing_key=envelope.event_routing_key(headers) or routing_key,
        message_id=props.message_id or None,
        event_type=event_type,
        company=envelope.company(headers) or company,
        reason=envelope.reason(headers),
        error=envelope.error(headers),
        # on unrouted and invalid, a delivery count only says how often the queue was read
        attempts=envelope.attempts(headers, deliveries_count=place is Place.DLQ),
        first_failed_at=_time(_text(headers.get(FIRST_FAILED_AT_HEADER))),
        parked_at=_utc(envelope.parked_at(headers) or _received(place, props) or seen_at),
        stored_at=_utc(seen_at),
        replays=envelope.replays(headers),
    )


def _sendable(value: Any) -> Any:
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, list):
        return [_sendable(item) for item in value]
    if isinstance(value, dict):
        return {key: _sendable(item) for key, item in value.items()}
    return value


def _received(place: Place, properties: Properties) -> datetime | None:
    """When the ingress published an unrouted event (its AMQP timestamp)."""
    return properties.timestamp if place is Place.UNROUTED else None


def error_kind(error: str | None) -> str | None:
    """The facet bucket of an error text: see :attr:`ParkedEvent.error_kind`."""
    if not error:
        return None
    first = error.strip().split("\n", 1)[0]
    match = _ERROR_KIND_RE.match(first)
    return match.group(1) if match else first[:_ERROR_KIND_LENGTH]


def _type_and_company(body: bytes) -> tuple[str | None, str | None]:
    read = parse(body)
    if isinstance(read, Routable):
        return read.type, read.company_id
    with contextlib.suppress(orjson.JSONDecodeError):
        payload = orjson.loads(body)
        if isinstance(payload, dict) and is_event_type(payload.get("type")):
            return str(payload["type"]), None
    return None, None


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    with contextlib.suppress(ValueError):
        return _utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    return None


def _utc(stamp: datetime) -> datetime:
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


__all__ = [
    "PER_DELIVERY_HEADERS",
    "ParkedEvent",
    "Place",
    "Properties",
    "State",
    "error_kind",
    "parked_event",
]
