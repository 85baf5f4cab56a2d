"""The bytes of an AMQP 0-9-1 publish, built without a general-purpose marshaller.

The ingress publishes one message per webhook, and at saturation encoding that message with
pamqp (a Basic.Publish, a content header with a header table, a body frame) cost more CPU
than parsing the HTTP request. Everything here is precomputed where it can be: the method
frame per exchange and routing key, the property flags, the frame prefixes. What is left per
message is a handful of ``struct.pack`` calls and one join.

:func:`publish_frames` is checked against pamqp's own unmarshaller in tests/test_amqp_frames.py.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pamqp import encode as pamqp_encode

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = b"\xce"
#: Frame type, channel and payload size ahead of every frame's payload.
FRAME_PREFIX = struct.Struct(">BHI")
#: The frame prefix and the end octet: what a frame adds to its payload.
FRAME_OVERHEAD = FRAME_PREFIX.size + 1

BASIC_CLASS = 60
BASIC_PUBLISH = 40
BASIC_ACK = 80
BASIC_NACK = 120

_SHORT = struct.Struct(">H")
_LONG = struct.Struct(">I")
_LONGLONG = struct.Struct(">Q")
_SIGNED_LONGLONG = struct.Struct(">q")
#: class-id, weight, body size, property flags.
_HEADER_START = struct.Struct(">HHQH")
#: A content header frame's prefix, _HEADER_START and the content type's length.
_HEADER_FRAME_START = struct.Struct(">BHIHHQHB")
#: Delivery mode, then the message id's length.
_MODE_AND_LENGTH = struct.Struct(">BB")

# Basic property flags (AMQP 0-9-1, section 4.2.6.1): bit 15 is the first property.
_CONTENT_TYPE = 1 << 15
_HEADERS = 1 << 13
_DELIVERY_MODE = 1 << 12
_MESSAGE_ID = 1 << 7
_TIMESTAMP = 1 << 6
#: The flags of the five properties the router sets on every message (:class:`Properties`).
_ROUTER_FLAGS = _CONTENT_TYPE | _HEADERS | _DELIVERY_MODE | _MESSAGE_ID | _TIMESTAMP

PERSISTENT = 2


@dataclass(slots=True)
class Properties:
    """The properties the router sets on every message it publishes. (Made once per publish
    and never changed; not a frozen dataclass, whose ``__init__`` costs three times as much.)"""

    content_type: str
    message_id: str
    #: Unix seconds (AMQP timestamps carry no finer resolution).
    timestamp: int
    headers: Mapping[str, Any]
    delivery_mode: int = PERSISTENT


def shortstr(value: str) -> bytes:
    """An AMQP short string: a length octet, then at most 255 bytes of UTF-8."""
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"{value[:40]!r}... is longer than an AMQP short string (255 bytes)")
    return bytes((len(raw),)) + raw


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    """One whole frame around ``payload``."""
    return FRAME_PREFIX.pack(kind, channel, len(payload)) + payload + FRAME_END


def publish_method(channel: int, exchange: str, routing_key: str, *, mandatory: bool) -> bytes:
    """The Basic.Publish method frame (the same for every message to one exchange and key)."""
    payload = (
        _SHORT.pack(BASIC_CLASS)
        + _SHORT.pack(BASIC_PUBLISH)
        + _SHORT.pack(0)  # reserved (ticket)
        + shortstr(exchange)
        + shortstr(routing_key)
        + bytes((1 if mandatory else 0,))  # mandatory is bit 0, immediate bit 1 (never set)
    )
    return frame(FRAME_METHOD, channel, payload)


#: What comes before a header's value in a table, per name and per value type: the name as a
#: short string, then the type octet (``S``: long string, ``l``: signed 64-bit). The same few
#: names are on every message, so each is encoded once.
_STRING_KEYS: dict[str, bytes] = {}
_INT_KEYS: dict[str, bytes] = {}
_TABLE_KEYS_MAX = 1024


def _table_key(known: dict[str, bytes], name: str, kind: bytes) -> bytes:
    key = shortstr(name) + kind
    if len(known) < _TABLE_KEYS_MAX:
        known[name] = key
    return key


def field_table(headers: Mapping[str, Any]) -> bytes:
    """A header table with its length. Strings and integers are encoded here; a table holding
    anything else goes to pamqp whole (so every value type AMQP knows still works)."""
    parts: list[bytes] = []
    for name, value in headers.items():
        if type(value) is str:
            raw = value.encode()  # (UTF-8; the argument's absence is the fast path)
            key = _STRING_KEYS.get(name)
            if key is None:
                key = _table_key(_STRING_KEYS, name, b"S")
            parts += (key, _LONG.pack(len(raw)), raw)
        elif type(value) is int:
            key = _INT_KEYS.get(name)
            if key is None:
                key = _table_key(_INT_KEYS, name, b"l")
            parts += (key, _SIGNED_LONGLONG.pack(value))
        else:
            return pamqp_encode.field_table(dict(headers))
    table = b"".join(parts)
    return _LONG.pack(len(table)) + table


def content_header(channel: int, body_size: int, properties: Properties) -> bytes:
    """The content header frame: body size and the properties, in flag order."""
    content_type = properties.content_type.encode("utf-8")
    message_id = properties.message_id.encode("utf-8")
    if len(content_type) > 255 or len(message_id) > 255:
        raise ValueError("content_type and message_id are AMQP short strings (255 bytes)")
    table = field_table(properties.headers)
    # the fixed part, the two short strings' lengths, the delivery mode and the timestamp
    size = _HEADER_START.size + 3 + len(content_type) + len(table) + len(message_id) + 8
    return b"".join(
        (
            _HEADER_FRAME_START.pack(
                FRAME_HEADER,
                channel,
                size,
                BASIC_CLASS,
                0,
                body_size,
                _ROUTER_FLAGS,
                len(content_type),
            ),
            content_type,
            table,
            _MODE_AND_LENGTH.pack(properties.delivery_mode, len(message_id)),
            message_id,
            _LONGLONG.pack(properties.timestamp),
            FRAME_END,
        )
    )


def body_frames(channel: int, body: bytes, frame_max: int) -> list[bytes]:
    """The body in as many frames as ``frame_max`` (the negotiated frame size) asks for."""
    room = frame_max - FRAME_OVERHEAD
    if len(body) <= room:
        return [FRAME_PREFIX.pack(FRAME_BODY, channel, len(body)), body, FRAME_END]
    parts: list[bytes] = []
    for start in range(0, len(body), room):
        chunk = body[start : start + room]
        parts += (FRAME_PREFIX.pack(FRAME_BODY, channel, len(chunk)), chunk, FRAME_END)
    return parts


def publish_frames(
    method: bytes, channel: int, body: bytes, properties: Properties, frame_max: int
) -> list[bytes]:
    """Everything one publish writes, as pieces for ``writelines`` (the body is not copied)."""
    return [method, content_header(channel, len(body), properties)] + (
        body_frames(channel, body, frame_max) if body else []
    )


__all__ = [
    "BASIC_ACK",
    "BASIC_CLASS",
    "BASIC_NACK",
    "FRAME_END",
    "FRAME_OVERHEAD",
    "FRAME_PREFIX",
    "PERSISTENT",
    "Properties",
    "body_frames",
    "content_header",
    "field_table",
    "frame",
    "publish_frames",
    "publish_method",
    "shortstr",
]
