"""AMQP field values as JSON, and back, for headers a replay republishes as they came. Pure.

An AMQP header table holds strings, integers, booleans, floats, decimals, byte arrays,
timestamps, void, arrays and nested tables; JSON has fewer kinds, so every value is written
as the JSON that says which kind it was:

==================  ==================================  ===================================
Python value        JSON                                read back as
==================  ==================================  ===================================
``str``             ``"text"``                          ``str``
``int``             ``42``                              ``int``
``bool``            ``true`` / ``false``                ``bool``
``None`` (void)     ``null``                            ``None``
``float``           ``{"$float": "1.5"}`` (repr)        ``float`` (NaN and infinities too)
``Decimal``         ``{"$decimal": "1.50"}``            ``Decimal`` (exponent kept)
``bytearray``       ``{"$bytearray": "<base64>"}``      ``bytearray`` (an AMQP byte array)
``bytes``           ``{"$bytes": "<base64>"}``          ``bytes`` (a string not in UTF-8)
``datetime``        ``{"$time": "<ISO 8601>"}``         ``datetime`` (offset, or naive, kept)
``list``            ``[...]`` (each item encoded)       ``list``
``dict`` (table)    ``{"$table": {...}}``               ``dict`` (key order kept)
==================  ==================================  ===================================

A JSON object is therefore always a marker, never a table by itself, so a header whose value
is a table with a key spelled ``$bytes`` still reads back as that table. A table's own keys
keep their order. The broker's decoder (pamqp) gives only these kinds (``bytes`` where a
string is not UTF-8, ``bytearray`` for a byte array); anything else is refused with
:class:`~router.errors.InvalidInput`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from router.errors import InvalidInput

#: A JSON-able value (what :func:`encode_value` returns).
Json = Any


def encode_value(value: Any) -> Json:
    """``value`` (an AMQP field value) as JSON that :func:`decode_value` reads back."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return {"$float": repr(value)}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, bytearray):
        return {"$bytearray": _base64(value)}
    if isinstance(value, bytes):
        return {"$bytes": _base64(value)}
    if isinstance(value, datetime):
        return {"$time": value.isoformat()}
    if isinstance(value, list | tuple):
        return [encode_value(item) for item in value]
    if isinstance(value, Mapping):
        return {"$table": encode_table(value)}
    raise InvalidInput(f"is of a type AMQP cannot carry: {type(value).__name__}", field="header")


def encode_table(table: Mapping[str, Any]) -> dict[str, Json]:
    """A header table as a JSON object of encoded values, in the table's order."""
    return {str(key): encode_value(value) for key, value in table.items()}


def decode_value(data: Json) -> Any:
    """The value :func:`encode_value` wrote as ``data``."""
    if data is None or isinstance(data, str | bool | int):
        return data
    if isinstance(data, list):
        return [decode_value(item) for item in data]
    if isinstance(data, dict) and len(data) == 1:
        ((marker, inner),) = data.items()
        try:
            return _DECODERS[marker](inner)
        except (KeyError, TypeError, ValueError, InvalidOperation):
            pass
    raise InvalidInput(f"is not an encoded AMQP value: {_excerpt(data)}", field="header")


def decode_table(data: Json) -> dict[str, Any]:
    """The header table :func:`encode_table` wrote as ``data``."""
    if not isinstance(data, dict):
        raise InvalidInput(f"is not an encoded AMQP table: {_excerpt(data)}", field="headers")
    return {str(key): decode_value(value) for key, value in data.items()}


def _base64(value: bytes | bytearray) -> str:
    return base64.b64encode(value).decode("ascii")


def _text(data: Json) -> str:
    if not isinstance(data, str):
        raise TypeError("a scalar marker holds a string")
    return data


def _bytes(data: Json) -> bytes:
    return base64.b64decode(_text(data).encode("ascii"), validate=True)


def _table(data: Json) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TypeError("a table is a JSON object")
    return decode_table(data)


_DECODERS: dict[str, Any] = {
    "$float": lambda data: float(_text(data)),
    "$decimal": lambda data: Decimal(_text(data)),
    "$bytes": _bytes,
    "$bytearray": lambda data: bytearray(_bytes(data)),
    "$time": lambda data: datetime.fromisoformat(_text(data)),
    "$table": _table,
}


def _excerpt(data: object) -> str:
    text = repr(data)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["Json", "decode_table", "decode_value", "encode_table", "encode_value"]
