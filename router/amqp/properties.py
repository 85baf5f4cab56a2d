"""Any message's basic properties, encoded once, for :meth:`ConfirmPublisher.publish_encoded`.

The ingress sets the same five properties on every message (:class:`router.amqp.frames.Properties`).
A replay sends a parked message again as it was received, with whichever of the fourteen basic
properties it had, so it needs them all; pamqp encodes them, but slowly (per property, by
reflection). :func:`encode` writes the property flags and values in the order AMQP 0-9-1
(section 4.2.6.1) lists them, as pamqp's ``Basic.Properties.marshal`` does (a property that is
None or ``""`` is left out); the header table goes through :func:`router.amqp.frames.field_table`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from pamqp.commands import Basic

from router.amqp import frames
from router.amqp.frames import (
    BASIC_CLASS,
    FRAME_END,
    FRAME_HEADER,
    FRAME_PREFIX,
    Properties,
    field_table,
    shortstr,
)

#: class-id, weight, body size (the property flags and values follow).
_HEADER_START = struct.Struct(">HHQ")
_FLAGS = struct.Struct(">H")
_TIMESTAMP = struct.Struct(">Q")

#: (property, flag bit, how it is written): in the order the properties go on the wire.
_SHORT, _OCTET, _TABLE, _STAMP = range(4)
_LAYOUT = (
    ("content_type", 15, _SHORT),
    ("content_encoding", 14, _SHORT),
    ("headers", 13, _TABLE),
    ("delivery_mode", 12, _OCTET),
    ("priority", 11, _OCTET),
    ("correlation_id", 10, _SHORT),
    ("reply_to", 9, _SHORT),
    ("expiration", 8, _SHORT),
    ("message_id", 7, _SHORT),
    ("timestamp", 6, _STAMP),
    ("message_type", 5, _SHORT),
    ("user_id", 4, _SHORT),
    ("app_id", 3, _SHORT),
    ("cluster_id", 2, _SHORT),
)


@dataclass(frozen=True, slots=True)
class EncodedProperties:
    """A message's property flags and values as they go in its content header, and its
    message id (a basic.return names the returned message by it)."""

    payload: bytes
    message_id: str | None


def encode(properties: Basic.Properties) -> EncodedProperties:
    """``properties`` as the content header carries them. Raises ValueError for a short
    string longer than 255 bytes or an octet out of range, as pamqp would."""
    flags = 0
    parts: list[bytes] = []
    for name, bit, kind in _LAYOUT:
        value = getattr(properties, name)
        if value is None or value == "":
            continue
        flags |= 1 << bit
        if kind == _SHORT:
            parts.append(shortstr(value))
        elif kind == _OCTET:
            parts.append(bytes((value,)))
        elif kind == _TABLE:
            parts.append(field_table(value))
        else:
            stamp = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
            parts.append(_TIMESTAMP.pack(int(stamp.timestamp())))
    return EncodedProperties(_FLAGS.pack(flags) + b"".join(parts), properties.message_id)


#: What comes before the properties in a content header frame: the frame's prefix, then the
#: class, weight and body size.
_BEFORE_PROPERTIES = FRAME_PREFIX.size + _HEADER_START.size


def encode_router(properties: Properties) -> EncodedProperties:
    """The five properties the router sets on every message, encoded as :func:`encode` would
    encode them, by the ingress's own content header encoder
    (:func:`router.amqp.frames.content_header`) instead of through pamqp's
    ``Basic.Properties`` (a backfill's hot path). An empty content type or message id (which
    :func:`encode` leaves out) goes through :func:`encode`."""
    if not properties.content_type or not properties.message_id:
        return encode(
            Basic.Properties(
                content_type=properties.content_type,
                headers=dict(properties.headers),
                delivery_mode=properties.delivery_mode,
                message_id=properties.message_id,
                timestamp=datetime.fromtimestamp(properties.timestamp, UTC),
            )
        )
    frame = frames.content_header(0, 0, properties)
    return EncodedProperties(frame[_BEFORE_PROPERTIES : -len(FRAME_END)], properties.message_id)


def content_header(channel: int, body_size: int, properties: EncodedProperties) -> bytes:
    """The content header frame of a message of ``body_size`` bytes with ``properties``."""
    payload = properties.payload
    size = _HEADER_START.size + len(payload)
    return b"".join(
        (
            FRAME_PREFIX.pack(FRAME_HEADER, channel, size),
            _HEADER_START.pack(BASIC_CLASS, 0, body_size),
            payload,
            FRAME_END,
        )
    )


__all__ = ["EncodedProperties", "content_header", "encode", "encode_router"]
