"""One client connection of the webhook port, as the listener's asyncio protocol: what the
client sends is fed to llhttp and made into requests, within the limits of
:mod:`router.ingress.limits`; :mod:`router.ingress.answering` answers them and
:mod:`router.ingress.timers` keeps the connection's clock.
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools
import structlog

from router.ingress.answering import AnsweringConnection
from router.ingress.limits import MAX_HEADER_FIELDS, MAX_PIPELINED, Owed
from router.ingress.messages import Refusal, Request, path_of, refusal_of_head
from router.ingress.refused_log import cut_path

log = structlog.get_logger("router.http")

#: Every request llhttp completes has one of these at the end of its head (llhttp is strict:
#: no bare LF), so a piece of input holding ``n`` of them completes at most ``n + 1``
#: requests (one may have passed its head before the piece began).
_HEAD_END = b"\r\n\r\n"
#: Largest piece fed while a head or trailer section is being read (see ``Connection._feed``).
_COUNTED_PIECE = 4096


class _Stop(Exception):
    """Raised from a parser callback to stop parsing a connection's input for good
    (llhttp then reports a callback error, which :meth:`Connection._feed` expects)."""


class Connection(AnsweringConnection):
    """One client connection: parse, queue complete requests, answer them one at a time."""

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # (uvloop's is no subclass of it)
        self._server.open.add(self)
        self._set_deadline(Owed.HEAD)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # after a refusal or at shutdown: the rest is not read
        if self._unparsed:  # (a read that came as reading paused: it waits with the rest)
            self._unparsed = self._unparsed[self._unparsed_at :] + data
            self._unparsed_at = 0
            return
        if (  # (the usual read: one request, or a few, from its start; parsed whole)
            not self._in_body
            and len(data) <= _COUNTED_PIECE
            and data.count(_HEAD_END) < MAX_PIPELINED - len(self._queue)
            and self._queued_bytes < self._limits.max_body_bytes
        ):
            self._parse(data, True)
        else:
            self._feed(data, 0)

    def eof_received(self) -> bool | None:
        self._eof = True  # the client sent all it will: answer what came, then close
        self._linger = False
        if not self._unparsed:
            self._closing = True
            if self.task is None:
                self._close_transport()
        return True  # keep the write side open for those answers

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = self._lost = True
        self._unparsed = b""
        if self._timer is not None:
            self._timer.cancel()
        self._wake_writer()
        if self._in_body:  # a bad request, answered to no one but logged and counted
            if self._server.refused_log.allow("webhook_client_gone"):
                log.info("webhook_client_gone", path=cut_path(path_of(self._url)))
            self._refuse(Refusal.BAD_REQUEST)
        if self.task is None:  # else once the requests that came are handled all the same
            self._server.open.discard(self)

    # -- feeding llhttp -------------------------------------------------------------------

    def _feed(self, data: bytes, offset: int) -> None:
        """Parse ``data`` in pieces that cannot complete more requests than there is room
        for; keep what is left in :attr:`_unparsed` (reading paused) when the room is gone.

        A read holding one request, as nearly all do, is one piece. A piece that begins
        with a head (or inside one, or inside a trailer section) is at most
        :data:`_COUNTED_PIECE` bytes, so that what llhttp holds of it is counted closely."""
        size = len(data)
        view: memoryview | None = None
        max_queued = self._limits.max_body_bytes
        while offset < size:
            room = MAX_PIPELINED - len(self._queue)
            if room <= 0 or self._queued_bytes >= max_queued:
                self._unparsed, self._unparsed_at = data, offset  # (no copy)
                self._pause_reading()
                return
            end = _piece_end(data, offset, room)
            counted = not self._in_body or self._after_chunk_header  # (a head, or trailers)
            if counted and end - offset > _COUNTED_PIECE:
                end = offset + _COUNTED_PIECE
            if offset == 0 and end == size:
                piece: bytes | memoryview = data  # (no slicing)
            else:
                view = memoryview(data) if view is None else view
                piece = view[offset:end]
            if not self._parse(piece, counted):
                self._unparsed = b""
                return
            offset = end
        self._unparsed = b""

    def _parse(self, piece: bytes | memoryview, counted: bool) -> bool:
        """Feed one piece to llhttp; False once the connection reads no further.

        ``counted``: the piece began with or inside a head, or inside a trailer section,
        whose raw bytes httptools holds until a field is whole: they count against the head
        limit (twice ``max_head_bytes``, as the fields themselves count once)."""
        try:
            self._parser.feed_data(piece)
        except httptools.HttpParserUpgrade:  # a protocol switch we do not offer: the
            self._closing = True  # request, if complete, is answered; then the connection closes
            self._answer_soon()
            if self.task is None:
                self._close_transport()
            return False
        except httptools.HttpParserError:  # not HTTP, or one of our callbacks raised _Stop
            if not self._closing:  # (each sets _closing first)
                self._refuse(Refusal.BAD_REQUEST)
            return False
        if self._closing:
            return False
        if self._in_head:
            if counted:
                self._head_raw += len(piece)
                if self._head_raw > 2 * self._limits.max_head_bytes:
                    self._refuse(Refusal.HEAD_TOO_LARGE)
                    return False
        elif self._in_body:
            if self._after_chunk_header and counted:  # (trailer fields being read)
                self._trailer_raw += len(piece)
                if self._trailer_raw > 2 * self._limits.max_head_bytes:
                    self._refuse(Refusal.HEAD_TOO_LARGE)
                    return False
            if self._owed is not Owed.BODY and not self._continue_owed:
                self._set_deadline(Owed.BODY)
        return True

    # -- llhttp's callbacks (httptools) ---------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = self._head_raw = 0
        self._hosts = self._codings = self._fields = 0
        if self._owed is not Owed.HEAD:  # (a new connection's deadline runs from its opening)
            self._set_deadline(Owed.HEAD)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if not self._in_head:  # a trailer field: counted, never merged into the headers
            if self._head_bytes > self._limits.max_head_bytes:
                self._refuse(Refusal.HEAD_TOO_LARGE)
                raise _Stop
            return
        self._fields += 1
        if self._fields > MAX_HEADER_FIELDS:  # (each one a few Python objects, kept queued)
            self._refuse(Refusal.HEAD_TOO_LARGE)
            raise _Stop
        name = name.lower()
        if name == b"host":
            self._hosts += 1
        elif name == b"transfer-encoding":
            self._codings += 1
        self._headers[name] = value

    def on_headers_complete(self) -> None:
        self._server.requests_count += 1
        self._in_head = False
        if self._head_bytes > self._limits.max_head_bytes:
            self._refuse(Refusal.HEAD_TOO_LARGE)
            raise _Stop
        version = self._parser.get_http_version()
        if self._hosts != 1 or self._codings or version != "1.1":  # (else nothing to refuse)
            refusal = refusal_of_head(version, self._hosts, self._codings, self._headers)
            if refusal is not None:
                self._refuse(refusal)
                raise _Stop
        self._in_body = True
        headers = self._headers
        length = headers.get(b"content-length")
        if length is not None and int(length) > self._limits.max_body_bytes:  # (llhttp: digits)
            self._refuse(Refusal.TOO_LARGE)
            raise _Stop
        if headers.get(b"expect", b"").lower() == b"100-continue" and version == "1.1":
            if self.task is None and not self._queue:
                self._write_continue()
            else:
                self._continue_owed = True  # once the answers before it are out
                self._owed = Owed.NOTHING  # (until then the client waits for us)

    def on_chunk_header(self) -> None:
        self._after_chunk_header = True

    def on_body(self, chunk: bytes) -> None:
        self._after_chunk_header = False
        self._trailer_raw = 0
        self._body_size += len(chunk)
        if self._body_size > self._limits.max_body_bytes:
            self._refuse(Refusal.TOO_LARGE)
            raise _Stop
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        self._in_body = self._after_chunk_header = self._continue_owed = False
        self._trailer_raw = 0
        self._owed = Owed.NOTHING  # until it is answered
        parts = self._body
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        request = Request(
            self._parser.get_method().decode("ascii"),
            path_of(self._url),
            self._headers,
            body,
        )
        size = self._head_bytes + self._body_size
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._queue.append((request, size))  # (a compressed body is decoded in its turn)
        self._queued_bytes += size
        self._answer_soon()
        if not self._parser.should_keep_alive():
            self._closing = True  # this is the connection's last request: read no further
            raise _Stop


def _piece_end(data: bytes, offset: int, room: int) -> int:
    """Where a piece of ``data`` from ``offset`` must end to complete at most ``room``
    requests: the end of data when it holds fewer than ``room`` head ends, else just after
    the ``room - 1``-th (inside the first one, when ``room`` is 1). Only as far as that
    head end is searched: a read of thousands of requests costs no more than its length."""
    ends: list[int] = []
    at = offset
    while len(ends) < room:
        at = data.find(_HEAD_END, at)
        if at < 0:
            return len(data)
        ends.append(at)
        at += len(_HEAD_END)
    if room == 1:
        return ends[0] + len(_HEAD_END) - 1
    return ends[room - 2] + len(_HEAD_END)


__all__ = ["Connection"]
