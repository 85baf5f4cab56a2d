"""The bytes of a delivery read without a general-purpose unmarshaller: Basic.Deliver and the
content header, for :class:`~router.amqp.stream_reader.StreamReader`.

pamqp reads any frame by reflection, property by property; a reader of hundreds of thousands of
messages spends most of its time there. Here the method is unpacked with ``struct`` and the
content header's fourteen properties are walked by their flags, keeping the four a reader of
the archive needs (content type, message id, timestamp, headers) and skipping the rest. The
header table's usual values (long strings, integers, booleans: what the router writes) are
read here too; a table holding any other kind goes to pamqp whole, so every value type AMQP
knows stays readable.

Checked against what pamqp writes in tests/test_stream_reader.py.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from pamqp import decode

from router.amqp.frames import BASIC_CLASS

BASIC_DELIVER = 60
#: The first four bytes of a Basic.Deliver method frame's payload.
DELIVER = struct.pack(">HH", BASIC_CLASS, BASIC_DELIVER)
_LONGLONG = struct.Struct(">Q")
_SIGNED_LONGLONG = struct.Struct(">q")
_LONG = struct.Struct(">I")
_SIGNED_LONG = struct.Struct(">i")
#: Header names seen, decoded once (the same few are on every message).
_NAMES: dict[bytes, str] = {}
_NAMES_MAX = 1024
#: class-id, weight, body size, property flags.
_HEADER_START = struct.Struct(">HHQH")

# property flags (AMQP 0-9-1, section 4.2.6.1): bit 15 is the first property.
_CONTENT_TYPE = 15
_HEADERS = 13
_MESSAGE_ID = 7
_TIMESTAMP = 6
#: The properties that are one octet (delivery mode, priority); the rest but the table and the
#: timestamp are short strings.
_OCTETS = (12, 11)


class Malformed(ValueError):
    """A frame that does not read as AMQP 0-9-1 says it should."""


class _Unusual(Exception):
    """A header table holding a value this module leaves to pamqp."""


@dataclass(slots=True)
class Delivery:
    """One message as a consumer got it: where it was delivered from, the properties a reader
    of the archive keeps, and the body (filled in as its frames come)."""

    delivery_tag: int
    consumer_tag: str
    exchange: str
    routing_key: str
    body_size: int = 0
    content_type: str | None = None
    message_id: str | None = None
    #: Unix seconds, as the message's ``timestamp`` property holds them.
    timestamp: int | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""


def read_deliver(payload: bytes | memoryview) -> Delivery:
    """The Basic.Deliver of a method frame's ``payload`` (its first four bytes are
    :data:`DELIVER`)."""
    try:
        at = 4
        tag, at = _short(payload, at)
        (delivery_tag,) = _LONGLONG.unpack_from(payload, at)
        at += 9  # the delivery tag and the redelivered octet
        exchange, at = _short(payload, at)
        routing_key, _ = _short(payload, at)
    except (struct.error, IndexError, UnicodeDecodeError) as error:
        raise Malformed(f"unreadable Basic.Deliver: {error}") from None
    return Delivery(delivery_tag, tag, exchange, routing_key)


def read_content_header(payload: bytes | memoryview, delivery: Delivery) -> None:
    """Fill in ``delivery``'s body size and properties from a content header frame's
    ``payload``."""
    payload = bytes(payload)
    try:
        class_id, _, delivery.body_size, flags = _HEADER_START.unpack_from(payload)
        if class_id != BASIC_CLASS:
            raise Malformed(f"a content header of class {class_id}, not Basic")
        at = _HEADER_START.size
        bit = 15
        while flags & 0xFFFC and bit >= 2:
            if flags & (1 << bit):
                if bit == _HEADERS:
                    (size,) = _LONG.unpack_from(payload, at)
                    delivery.headers = _table(payload, at + 4, at + 4 + size)
                    at += 4 + size
                elif bit == _TIMESTAMP:
                    (delivery.timestamp,) = _LONGLONG.unpack_from(payload, at)
                    at += 8
                elif bit in _OCTETS:
                    at += 1
                else:
                    value, at = _short(payload, at)
                    if bit == _CONTENT_TYPE:
                        delivery.content_type = value
                    elif bit == _MESSAGE_ID:
                        delivery.message_id = value
                flags &= ~(1 << bit)
            bit -= 1
    except Malformed:
        raise
    except Exception as error:  # pamqp's table errors are of several kinds
        raise Malformed(f"unreadable content header: {error!r}") from None


def _table(payload: bytes, at: int, end: int) -> dict[str, Any]:
    """The header table from ``at`` to ``end``."""
    if end > len(payload):
        raise Malformed("a header table runs past the frame")
    table: dict[str, Any] = {}
    first = at
    try:
        while at < end:
            size = payload[at]
            raw = payload[at + 1 : at + 1 + size]
            name = _NAMES.get(raw)
            if name is None:
                name = raw.decode("utf-8")
                if len(_NAMES) < _NAMES_MAX:
                    _NAMES[raw] = name
            at += 1 + size
            kind = payload[at]
            at += 1
            if kind == 0x53:  # S: a long string
                (size,) = _LONG.unpack_from(payload, at)
                table[name] = payload[at + 4 : at + 4 + size].decode("utf-8")
                at += 4 + size
            elif kind == 0x6C:  # l: a signed 64-bit integer
                (table[name],) = _SIGNED_LONGLONG.unpack_from(payload, at)
                at += 8
            elif kind == 0x49:  # I: a signed 32-bit integer
                (table[name],) = _SIGNED_LONG.unpack_from(payload, at)
                at += 4
            elif kind == 0x74:  # t: a boolean
                table[name] = bool(payload[at])
                at += 1
            else:
                raise _Unusual
    except (_Unusual, UnicodeDecodeError):  # pamqp reads it (undecodable text as bytes)
        return decode.field_table(payload[first - 4 : end])[1]
    if at != end:
        raise Malformed("a header table's values run past its length")
    return table


def _short(payload: bytes | memoryview, at: int) -> tuple[str, int]:
    """The short string at ``at`` and where the next field starts."""
    end = at + 1 + payload[at]
    if end > len(payload):
        raise IndexError("a short string runs past the frame")
    return bytes(payload[at + 1 : end]).decode("utf-8"), end


__all__ = ["DELIVER", "Delivery", "Malformed", "read_content_header", "read_deliver"]
