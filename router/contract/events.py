"""Attentive's event types and the parsing of a webhook body into a routable event.

Pure: no I/O. :func:`parse` returns either a :class:`Routable` or an :class:`Unusable` saying
why the (authentic) body cannot be routed, so the ingress decides with a ``match``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from router.contract.names import MAX_ROUTING_KEY_BYTES, routing_key

#: The event types Attentive documents. Others that look like event types are still routed.
EVENT_TYPES: tuple[str, ...] = (
    "sms.subscribed",
    "sms.unsubscribed",
    "sms.sent",
    "sms.message_link_click",
    "sms.inbound_message",
    "email.subscribed",
    "email.unsubscribed",
    "email.sent",
    "email.opened",
    "email.message_link_click",
    "custom_attribute.set",
)
KNOWN_TYPES: frozenset[str] = frozenset(EVENT_TYPES)

#: A well-formed type: dot-separated lowercase words (letters, digits, '_'), at least two.
_TYPE_RE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
#: 9999-12-31T23:59:59.999Z: a later "timestamp" is not one (and would not fit a datetime).
_MAX_TIMESTAMP_MS = 253_402_300_799_999


@dataclass(slots=True)
class Routable:
    """A webhook body that can be routed. (Made once per webhook and never changed; not a
    frozen dataclass, whose ``__init__`` costs three times as much.)"""

    type: str
    company_id: str
    #: Attentive's ``timestamp`` (Unix milliseconds), when the body carries a usable one.
    timestamp_ms: int | None
    #: Hex SHA-256 of the raw body: identical on every retry of the same delivery.
    message_id: str
    routing_key: str
    #: The parsed body, for what else the ingress reads of it (the ordering keys) without
    #: parsing it again; it holds contact details, so it is kept out of ``repr``.
    payload: dict[str, Any] = field(repr=False, compare=False)

    @property
    def known(self) -> bool:
        """Whether the type is one of the 11 Attentive documents."""
        return self.type in KNOWN_TYPES


@dataclass(frozen=True, slots=True)
class Unusable:
    """An authentic body the router cannot route, and why."""

    reason: str
    message_id: str


def message_id(body: bytes) -> str:
    """The idempotency key of a webhook: hex SHA-256 of its raw body."""
    return hashlib.sha256(body).hexdigest()


def is_event_type(value: object) -> bool:
    """Whether ``value`` is a well-formed event type (known to us or not)."""
    return isinstance(value, str) and _TYPE_RE.fullmatch(value) is not None


def parse(body: bytes) -> Routable | Unusable:
    """Read the type, company and timestamp of a webhook body."""
    mid = message_id(body)
    try:
        payload: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Unusable("body is not valid JSON", mid)
    if not isinstance(payload, dict):
        return Unusable("body is not a JSON object", mid)
    event_type = payload.get("type")
    if event_type is None:
        return Unusable("no 'type'", mid)
    known = type(event_type) is str and event_type in KNOWN_TYPES  # (no pattern to match)
    if not known and not is_event_type(event_type):
        return Unusable("'type' is not dot-separated lowercase words", mid)
    company = payload.get("company")
    company_id = company.get("company_id") if isinstance(company, dict) else None
    if not isinstance(company_id, str) or not company_id:
        return Unusable("no 'company.company_id'", mid)
    key = routing_key(event_type, company_id)
    if len(key.encode("utf-8")) > MAX_ROUTING_KEY_BYTES:
        return Unusable("type and company id are too long for a routing key", mid)
    timestamp = payload.get("timestamp")
    usable = type(timestamp) is int and 0 <= timestamp <= _MAX_TIMESTAMP_MS
    timestamp_ms = timestamp if usable else None
    return Routable(event_type, company_id, timestamp_ms, mid, key, payload)


__all__ = [
    "EVENT_TYPES",
    "KNOWN_TYPES",
    "Routable",
    "Unusable",
    "is_event_type",
    "message_id",
    "parse",
]
