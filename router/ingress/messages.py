"""What an HTTP/1.1 request and its answer are on the webhook port, and the rules that need
no connection: what RFC 9112 says a server must refuse in a head, how a body is decoded, how
a status line and the Date header are written. :mod:`router.ingress.http1` keeps the connections.
"""

from __future__ import annotations

import enum
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import unquote


class Refusal(enum.IntEnum):
    """Why the connection refused a request, as the HTTP status it is answered with."""

    BAD_REQUEST = 400  # not HTTP, no or two Host, a body that cannot be read
    TIMEOUT = 408  # the body did not arrive within body_timeout
    TOO_LARGE = 413  # a body over max_body_bytes
    UNSUPPORTED_ENCODING = 415  # a Content-Encoding other than gzip, deflate or identity
    HEAD_TOO_LARGE = 431  # request line and headers (or trailers) over max_head_bytes
    NOT_IMPLEMENTED = 501  # a Transfer-Encoding whose last coding is not chunked
    VERSION_NOT_SUPPORTED = 505  # an HTTP version other than 1.0 and 1.1


@dataclass(slots=True)
class Request:
    """One request as the handler gets it: its body complete and decoded, or refused."""

    method: str
    #: The path as sent (percent-encoded), without the query (an absolute-form target's).
    raw_path: str
    #: Header values by lower-case name, as bytes (the last one of a repeated name); never
    #: a trailer field's.
    headers: Mapping[bytes, bytes]
    body: bytes
    refusal: Refusal | None = None

    @property
    def path(self) -> str:
        """The path, percent-decoded."""
        return unquote(self.raw_path)

    def header(self, name: bytes) -> str | None:
        """The value of the header ``name`` (lower case), if the request has it."""
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")


@dataclass(slots=True)
class Answer:
    """What the handler answers: a status, a body of ``content_type``, maybe more headers.
    (Made once per request and never changed; not a frozen dataclass, whose ``__init__``
    costs three times as much.)"""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Awaitable[Answer]]


def refusal_of_head(
    version: str, hosts: int, codings: int, headers: Mapping[bytes, bytes]
) -> Refusal | None:
    """What RFC 9112 says a server must refuse in a head llhttp accepted, if anything."""
    if version != "1.1" and version != "1.0":
        return Refusal.VERSION_NOT_SUPPORTED  # HTTP/2.0 in an HTTP/1 request line, HTTP/0.9
    if hosts > 1 or (hosts == 0 and version == "1.1"):
        return Refusal.BAD_REQUEST  # §3.2
    if codings and (codings > 1 or headers[b"transfer-encoding"].strip().lower() != b"chunked"):
        # §6.1: chunked is the one transfer coding implemented here; a body in any other
        # (gzip, chunked included) would be read still coded, or not found the end of
        return Refusal.NOT_IMPLEMENTED
    return None


def decode_body(request: Request, max_bytes: int) -> Refusal | None:
    """Decompress the body in place as its Content-Encoding says; why not, if it cannot be.

    A gzip body may hold several members, one after another (RFC 1952 §2.2), as ``gzip``
    and Python's :mod:`gzip` read them; all are decoded, within ``max_bytes`` in all."""
    encoding = request.headers[b"content-encoding"].strip().lower()
    if encoding in (b"", b"identity"):
        return None
    if encoding in (b"gzip", b"x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == b"deflate":
        wbits = zlib.MAX_WBITS if request.body[:1] == b"\x78" else -15
    else:
        return Refusal.UNSUPPORTED_ENCODING
    room = max_bytes
    data, parts = request.body, []
    while True:
        decoder = zlib.decompressobj(wbits)
        try:
            part = decoder.decompress(data, room + 1)
        except zlib.error:
            return Refusal.BAD_REQUEST
        parts.append(part)
        room -= len(part)
        if room < 0:
            return Refusal.TOO_LARGE
        if not decoder.eof:
            return Refusal.BAD_REQUEST  # cut short
        data = decoder.unused_data
        if not data:
            break
        if wbits != 16 + zlib.MAX_WBITS:
            return Refusal.BAD_REQUEST  # bytes after a deflate stream
    request.body = parts[0] if len(parts) == 1 else b"".join(parts)
    return None


def path_of(target: bytes) -> str:
    """The path a request target routes by, as sent (percent-encoded): an absolute-form
    target's path (RFC 9112 §3.2.2), without the query or a fragment."""
    if target[:1] != b"/" and b"://" in target:  # absolute form: its path is what is routed
        after = target.partition(b"://")[2]
        for i, byte in enumerate(after):
            if byte in b"/?#":
                target = after[i:] if byte == 0x2F else b"/"
                break
        else:
            target = b"/"
    return target.partition(b"?")[0].partition(b"#")[0].decode("latin-1")


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")
    return line


_STATUS_LINES: dict[int, bytes] = {}


class Clock:
    """The Date header's value, formatted once a second."""

    second = 0
    value = b""

    @classmethod
    def http_date(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second, cls.value = now, formatdate(now, usegmt=True).encode("ascii")
        return cls.value


__all__ = [
    "Answer",
    "Clock",
    "Handler",
    "Refusal",
    "Request",
    "decode_body",
    "path_of",
    "refusal_of_head",
    "status_line",
]
