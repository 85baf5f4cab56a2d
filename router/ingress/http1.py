"""The webhook listener's HTTP/1.1 connections: llhttp parses, this module does the rest.

llhttp (Node.js's parser, through httptools) turns bytes into requests; this module keeps
the connections, their limits and timers, hands each complete request to one handler and
writes its answer, in order, on the connection it came from. It neither routes, verifies
nor publishes: the ingress's handler (:mod:`router.ingress.webhook`) does, and answers.

Why not aiohttp's server, which the admin API keeps: on the webhook path its request and
response objects, streams and per-connection task were about half the ingress's CPU per
event (docs/performance.md).

The port faces the internet, so what one connection may hold is bounded whatever its
client does (README, "Memory under hostile clients", says how much):

* a request's line and headers within ``head_timeout`` of the connection opening (or of the
  first byte of a later request), else the connection is closed; at most ``max_head_bytes``
  of them in at most :data:`MAX_HEADER_FIELDS` fields (431), and a chunked body's trailer
  fields count against the same limit;
* a body within ``body_timeout`` of its headers (408), of at most ``max_body_bytes``
  (413, before reading it when ``Content-Length`` says so), decompressed when its
  request's turn comes, one at a time, when its ``Content-Encoding`` is gzip (one member or
  several) or deflate (400 when it does not decompress, 415 for others);
* at most :data:`MAX_PIPELINED` requests, and about ``max_body_bytes`` of them, parsed ahead
  of their answers: the parser is fed a read piece by piece, and what is left of it waits,
  with reading paused, until answers make room (llhttp alone would parse a whole 256 KiB
  read at once, thousands of small requests);
* answers are written only while the transport takes them (``pause_writing``): a client
  that reads nothing holds one answer at most, and is dropped after ``keepalive_timeout``;
* ``Expect: 100-continue`` answered ``100 Continue`` (or 413 straight away), to HTTP/1.1
  only, when the request's turn comes: never ahead of an earlier request's answer;
* idle kept-alive connections closed after ``keepalive_timeout``.

The timers blame only the client: no head or body deadline runs while the server itself
holds reading paused, and a deadline that passes never cuts answers already computed: they
are sent, then the connection closes. Where RFC 9112 says a server must refuse, it does:
400 for an HTTP/1.1 request without ``Host`` or any with two (§3.2); 501 for a
``Transfer-Encoding`` other than ``chunked`` alone, the one coding implemented (§6.1); 505
for HTTP versions other than 1.0 and 1.1. An absolute-form target (§3.2.2) is routed by its
path. Trailer fields (§7.1.2) are counted and dropped, never merged into the headers. As in
uvicorn and h11, an error of our own while answering closes that one connection.

A request the connection refuses still goes to the handler, as a :class:`Request` with its
:class:`Refusal`, so that it is answered, logged and counted like any other; the connection
is then closed.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from dataclasses import dataclass
from typing import cast

import httptools
import structlog
from aiohttp import web

from router.ingress.messages import (
    Answer,
    Clock,
    Handler,
    Refusal,
    Request,
    decode_body,
    refusal_of_head,
    status_line,
)

log = structlog.get_logger("router.http")

#: Requests read ahead of their answers on one connection before parsing pauses.
MAX_PIPELINED = 16
#: Header fields one request may have (431 beyond; Apache's LimitRequestFields is 100 too).
#: A field costs a few hundred bytes as Python objects, so 16 KiB of tiny ones would
#: otherwise hold many times their size, and as much again per request queued.
MAX_HEADER_FIELDS = 100
#: Every request llhttp completes has one of these at the end of its head (llhttp is strict:
#: no bare LF), so a piece of input holding ``n`` of them completes at most ``n + 1``
#: requests (one may have passed its head before the piece began).
_HEAD_END = b"\r\n\r\n"
#: Largest piece fed while a head or trailer section is being read (see ``_Connection._feed``).
_COUNTED_PIECE = 4096


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits and timers of every connection (seconds and bytes)."""

    max_body_bytes: int
    head_timeout: float
    body_timeout: float
    keepalive_timeout: float
    max_head_bytes: int = 16 * 1024

    def seconds_for(self, owed: _Owed) -> float:
        """The seconds a client gets to send what it owes."""
        match owed:
            case _Owed.HEAD:
                return self.head_timeout
            case _Owed.BODY:
                return self.body_timeout
            case _Owed.NEXT_REQUEST:
                return self.keepalive_timeout
            case _:  # SILENCE (NOTHING has no deadline)
                return LINGER

    @property
    def shortest_timeout(self) -> float:
        return min(self.head_timeout, self.body_timeout, self.keepalive_timeout)


#: Seconds a refused client gets to stop sending before its connection is closed, and a
#: closing connection to take the answers still buffered for it.
LINGER = 5.0


class _Owed(enum.Enum):
    """What a connection waits for from its client, by a deadline."""

    NOTHING = enum.auto()  # a request is being answered
    HEAD = enum.auto()  # the rest of a request's line and headers
    BODY = enum.auto()  # the rest of a body
    NEXT_REQUEST = enum.auto()  # idle, kept alive
    SILENCE = enum.auto()  # refused: its end of the connection, once it stops sending


class HttpServer(web.Server):
    """The protocol factory an aiohttp runner's site listens with: each connection it makes
    is a :class:`_Connection` that hands its requests to ``handler``.

    It is a ``web.Server`` only so that :class:`aiohttp.web.AppRunner`, its sites and
    aiohttp's test server run it and shut it down (:meth:`pre_shutdown`, :meth:`shutdown`)
    as they would their own; nothing of aiohttp's request handling is used.
    """

    def __init__(self, handler: Handler, limits: Limits) -> None:
        super().__init__(_not_used)
        self.handler = handler
        self.limits = limits
        self.open: set[_Connection] = set()

    def __call__(self) -> _Connection:  # type: ignore[override]  # our protocol, not aiohttp's
        return _Connection(self)

    def pre_shutdown(self) -> None:
        """Stop taking requests: idle connections close now, busy ones after their answer."""
        for connection in list(self.open):
            connection.close()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds for the answers under way, then drop the rest."""
        busy = [c.task for c in self.open if c.task is not None and not c.task.done()]
        if busy:
            await asyncio.wait(busy, timeout=timeout)
        for connection in list(self.open):
            connection.abort()


async def _not_used(request: web.BaseRequest) -> web.StreamResponse:  # pragma: no cover
    raise AssertionError("HttpServer answers on its own connections")


class _Stop(Exception):
    """Raised from a parser callback to stop parsing a connection's input for good
    (llhttp then reports a callback error, which :meth:`_Connection._feed` expects)."""


class _Connection(asyncio.Protocol):
    """One client connection: parse, queue complete requests, answer them one at a time."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._limits = server.limits
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        #: Complete requests not yet answered, in the order they came, with their sizes.
        self._queue: deque[tuple[Request, int]] = deque()
        #: Bytes of the requests in the queue (heads and bodies).
        self._queued_bytes = 0
        #: What is left of a read while parsing waits for answers to make room.
        self._unparsed = b""
        self._unparsed_at = 0
        #: The task answering the queue, while it does.
        self.task: asyncio.Task[None] | None = None
        # the request being read
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        #: How many Host and Transfer-Encoding fields the head has.
        self._hosts = self._codings = 0
        #: Header fields in the head so far.
        self._fields = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._in_head = False
        #: The request line's target and the headers' (then trailers') names and values.
        self._head_bytes = 0
        #: Bytes fed to llhttp while it had not yet read a whole head.
        self._head_raw = 0
        self._in_body = False
        #: A chunk's size line was read and no data of it yet: the last chunk, or its data
        #: is still to come. Bytes fed meanwhile are counted: trailers, once it was the last.
        self._after_chunk_header = False
        self._trailer_raw = 0
        #: ``100 Continue`` is due once the answers before this request are out.
        self._continue_owed = False
        # the connection
        self._closing = False  # no more requests: close once the queue is answered
        self._eof = False  # the client sent all it will (what is unparsed is still parsed)
        self._lost = False  # the client is gone
        self._linger = False  # after the answer, read and drop what comes until the client closes
        self._reading = True
        self._writing = True
        #: While writing is paused: when it paused, and the answer loop's wake-up.
        self._stalled_since = 0.0
        self._writable: asyncio.Future[None] | None = None
        #: What the client owes by :attr:`_deadline`.
        self._owed = _Owed.NOTHING
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # (uvloop's is no subclass of it)
        self._server.open.add(self)
        self._set_deadline(_Owed.HEAD)

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
            log.info("webhook_client_gone", path=self._path_of(self._url))
            self._refuse(Refusal.BAD_REQUEST)
        if self.task is None:  # else once the requests that came are handled all the same
            self._server.open.discard(self)

    def pause_writing(self) -> None:
        """The client does not read its answers: write and read no more until it does."""
        self._writing = False
        self._stalled_since = self._loop.time()
        self._pause_reading()
        if self._timer is None:
            self._arm()

    def resume_writing(self) -> None:
        self._writing = True
        self._wake_writer()
        self._resume()

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
            if self._owed is not _Owed.BODY and not self._continue_owed:
                self._set_deadline(_Owed.BODY)
        return True

    # -- llhttp's callbacks (httptools) ---------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = self._head_raw = 0
        self._hosts = self._codings = self._fields = 0
        if self._owed is not _Owed.HEAD:  # (a new connection's deadline runs from its opening)
            self._set_deadline(_Owed.HEAD)

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
        self._server.requests_count += 1  # (web.Server's count of heads read)
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
                self._owed = _Owed.NOTHING  # (until then the client waits for us)

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
        self._owed = _Owed.NOTHING  # until it is answered
        parts = self._body
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        request = Request(
            self._parser.get_method().decode("ascii"),
            self._path_of(self._url),
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

    # -- answering ------------------------------------------------------------------------

    def _answer_soon(self) -> None:
        if self.task is None and self._queue:
            self.task = self._loop.create_task(self._answer_queue())

    async def _answer_queue(self) -> None:
        handler = self._server.handler
        queue = self._queue
        try:
            while queue:
                if not self._writing and not self._lost:
                    await self._until_writable()  # (the client reads its answers, or left)
                request, size = queue.popleft()
                self._queued_bytes -= size
                if b"content-encoding" in request.headers and request.refusal is None:
                    self._decode(request)
                try:
                    answer = await handler(request)
                except Exception:  # the handler answers everything; this is a bug of ours
                    log.exception("unhandled_error", path=request.path, method=request.method)
                    answer = Answer(500, b'{"error":"internal error"}')
                self._write(answer, request.method == "HEAD", last=self._closing and not queue)
                if self._unparsed or not self._reading:
                    self._resume()  # parse what waits, which may queue more
            if self._continue_owed and not self._closing:  # its turn has come
                self._continue_owed = False
                self._write_continue()
        except Exception:  # a bug of ours outside the handler: this connection ends, cleanly
            log.exception("http_connection_error", peer=self._peer())
            queue.clear()
            self.abort()
            return
        finally:
            self.task = None  # (also when cancelled: see abort)
        if self._lost:
            self._server.open.discard(self)
        elif self._linger:
            self._linger_then_close()
        elif self._closing:
            self._close_transport()
        elif not self._in_head and not self._in_body:
            self._set_deadline(_Owed.NEXT_REQUEST)

    def _decode(self, request: Request) -> None:
        """Decompress the body of the request whose turn it is (one at a time, so that the
        requests queued behind it hold their bodies as sent); refused, it is the last."""
        refusal = decode_body(request, self._limits.max_body_bytes)
        if refusal is not None:
            request.refusal = refusal
            self._queue.clear()  # (never answered: the connection closes after this one)
            self._queued_bytes = 0
            self._linger = True  # (the client may be sending still: read it out, then close)
            self._in_head = self._in_body = self._continue_owed = False
            self._closing = True
            self._unparsed = b""

    def _write(self, answer: Answer, head_only: bool, *, last: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return  # the client is gone; its request was handled all the same
        body = answer.body
        head = [
            status_line(answer.status),
            b"Content-Type: %s\r\nContent-Length: %d\r\nDate: %s\r\n"
            % (answer.content_type.encode("latin-1"), len(body), Clock.http_date()),
        ]
        for name, value in answer.headers:
            head.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        head.append(b"Connection: close\r\n\r\n" if last else b"\r\n")
        if not head_only:
            head.append(body)
        transport.write(b"".join(head))

    def _write_continue(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self._in_body:  # (from now on the body is the client's to send)
            self._set_deadline(_Owed.BODY)

    async def _until_writable(self) -> None:
        self._writable = self._loop.create_future()
        try:
            await self._writable
        finally:
            self._writable = None

    def _wake_writer(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def _refuse(self, refusal: Refusal, request: Request | None = None) -> None:
        """Answer the request being read with ``refusal`` (after those before it), then close."""
        if request is None:  # (the parser knows the method once the URL has begun)
            method = self._parser.get_method().decode("ascii") if self._url else ""
            request = Request(method, self._path_of(self._url), self._headers, b"")
        request.refusal = refusal
        self._linger = self._in_head or self._in_body  # the client may be sending still
        self._in_head = self._in_body = self._continue_owed = False
        self._closing = True
        self._unparsed = b""
        self._queue.append((request, 0))
        self._answer_soon()

    # -- closing and timers ---------------------------------------------------------------

    def close(self) -> None:
        """Take no more requests; close now if idle, else once the answers under way are out."""
        self._closing = True
        self._unparsed = b""
        if self.task is None:
            self._close_transport()

    def abort(self) -> None:
        """Close at once, answered or not, and leave the server's open set."""
        self._closing = self._lost = True
        self._unparsed = b""
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        if self._transport is not None:
            self._transport.abort()
        self._server.open.discard(self)

    def _linger_then_close(self) -> None:
        """Close, but only once the client has stopped sending (or after :data:`LINGER`
        seconds): closing with its bytes unread would reset the connection, and the client
        could lose the answer it has not read yet."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
        self._resume_reading()  # dropped by data_received, until eof_received
        self._set_deadline(_Owed.SILENCE)

    def _close_transport(self) -> None:
        """Close once the answers written are sent; drop them after :data:`LINGER` seconds
        if the client does not take them."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()
            if transport.get_write_buffer_size():
                self._loop.call_later(LINGER, transport.abort)

    def _set_deadline(self, owed: _Owed) -> None:
        """From now on the client owes ``owed``, within its timeout.

        One timer serves every deadline. It is never armed further ahead than the shortest
        timeout, and finding a deadline not yet due it arms itself again: a later deadline
        needs no new timer, so a request answered within its turn costs none of its own."""
        self._owed = owed
        self._deadline = deadline = self._loop.time() + self._limits.seconds_for(owed)
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._arm()

    def _arm(self) -> None:
        when = self._loop.time() + self._limits.shortest_timeout
        if self._owed is not _Owed.NOTHING:
            when = min(when, self._deadline)
        self._timer = self._loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        now = self._loop.time()
        if not self._writing:  # the client does not read its answers
            if now - self._stalled_since >= self._limits.keepalive_timeout:
                log.info("http_client_not_reading", peer=self._peer())
                self.abort()
                return
            self._arm()
            return
        owed = self._owed
        if owed is _Owed.NOTHING:
            return
        if now < self._deadline:
            self._arm()
            return
        if not self._reading and owed in (_Owed.HEAD, _Owed.BODY):
            self._deadline = now + self._limits.seconds_for(owed)  # we hold reading, not it
            self._arm()
            return
        self._owed = _Owed.NOTHING
        match owed:
            case _Owed.HEAD:
                log.info(
                    "request_head_timeout", peer=self._peer(), timeout=self._limits.head_timeout
                )
                self._in_head = False
                self._closing, self._unparsed = True, b""
                if self.task is not None or transport.get_write_buffer_size():
                    self._linger = True  # the answers under way go out first, then it closes
                    if self.task is None:
                        self._linger_then_close()
                else:
                    self.abort()
            case _Owed.BODY:
                log.warning("webhook_body_timeout", path=self._path_of(self._url))
                self._refuse(Refusal.TIMEOUT)
            case _Owed.NEXT_REQUEST:
                self.close()
            case _Owed.SILENCE:
                self._close_transport()

    def _resume(self) -> None:
        """Answers made room: parse what waits, then read again if all of it was."""
        if self._unparsed and not self._closing:
            self._feed(self._unparsed, self._unparsed_at)
            if self._eof and not self._unparsed:
                self._closing = True  # the client's last bytes are parsed
        if not self._unparsed:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if self._reading and self._transport is not None:
            self._reading = False
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        transport = self._transport
        if self._reading or not self._writing or transport is None or transport.is_closing():
            return
        if self._eof:
            return
        if len(self._queue) < MAX_PIPELINED:
            self._reading = True
            transport.resume_reading()

    def _peer(self) -> str:
        peer = self._transport.get_extra_info("peername") if self._transport else None
        return str(peer)

    @staticmethod
    def _path_of(url: bytes) -> str:
        if url[:1] != b"/" and b"://" in url:  # absolute form: its path is what is routed
            after = url.partition(b"://")[2]
            for i, byte in enumerate(after):
                if byte in b"/?#":
                    url = after[i:] if byte == 0x2F else b"/"
                    break
            else:
                url = b"/"
        return url.partition(b"?")[0].partition(b"#")[0].decode("latin-1")


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


__all__ = ["LINGER", "MAX_HEADER_FIELDS", "MAX_PIPELINED", "HttpServer", "Limits"]
