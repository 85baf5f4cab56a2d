"""The webhook listener's HTTP/1.1 connections: llhttp parses, this module does the rest.

llhttp (Node.js's parser, through httptools) turns bytes into requests; this module keeps
the connections, their limits and timers, hands each complete request to one handler and
writes its answer, in order, on the connection it came from. It neither routes, verifies
nor publishes: the ingress's handler (:mod:`router.ingress`) does, and answers.

Why not aiohttp's server, which the admin API keeps: on the webhook path its request and
response objects, streams and per-connection task were about half the ingress's CPU per
event, and at the same 64 requests in flight the ingress answered about as many events as a
bare aio-pika publisher publishes, no more. On these connections it answers a third more
(README, Performance).

What a connection enforces, as the README's table says:

* a request's line and headers within ``head_timeout`` of the connection opening (or of the
  first byte of a later request), else the connection is closed; at most ``max_head_bytes``
  of them (431);
* a body within ``body_timeout`` of its headers (408), of at most ``max_body_bytes``
  (413, before reading it when ``Content-Length`` says so), decompressed when its
  ``Content-Encoding`` is gzip or deflate (400 when it does not decompress, 415 for others);
* ``Expect: 100-continue`` answered ``100 Continue`` (or 413 straight away);
* pipelined requests answered in order, reading paused while :data:`MAX_PIPELINED` wait;
* idle kept-alive connections closed after ``keepalive_timeout``.

A request the connection refuses still goes to the handler, as a :class:`Request` with its
:class:`Refusal`, so that it is answered, logged and counted like any other; the connection
is then closed.
"""

from __future__ import annotations

import asyncio
import enum
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import cast
from urllib.parse import unquote

import httptools
import structlog
from aiohttp import web

log = structlog.get_logger("router.http")

#: Requests read ahead of their answers on one connection before reading pauses.
MAX_PIPELINED = 16


class Refusal(enum.IntEnum):
    """Why the connection refused a request, as the HTTP status it is answered with."""

    BAD_REQUEST = 400  # not HTTP, or a body that cannot be read (broken chunks, compression)
    TIMEOUT = 408  # the body did not arrive within body_timeout
    TOO_LARGE = 413  # a body over max_body_bytes
    UNSUPPORTED_ENCODING = 415  # a Content-Encoding other than gzip, deflate or identity
    HEAD_TOO_LARGE = 431  # request line and headers over max_head_bytes


@dataclass(slots=True)
class Request:
    """One request as the handler gets it: its body complete and decoded, or refused."""

    method: str
    #: The path as sent (percent-encoded), without the query.
    raw_path: str
    #: Header values by lower-case name, as bytes (the last one of a repeated name).
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


@dataclass(slots=True, frozen=True)
class Answer:
    """What the handler answers: a status, a body of ``content_type``, maybe more headers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Awaitable[Answer]]


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


#: Seconds a refused client gets to stop sending before its connection is closed.
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
    (llhttp then reports a callback error, which :meth:`_Connection.data_received` expects)."""


class _Connection(asyncio.Protocol):
    """One client connection: parse, queue complete requests, answer them one at a time."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._limits = server.limits
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        #: Complete requests not yet answered, in the order they came.
        self._queue: deque[Request] = deque()
        #: The task answering the queue, while it does.
        self.task: asyncio.Task[None] | None = None
        # the request being read
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._in_head = False
        #: The request line's target and the headers' names and values so far.
        self._head_bytes = 0
        #: Bytes received while llhttp had not yet read a whole head.
        self._head_raw = 0
        self._in_body = False
        # the connection
        self._closing = False  # no more requests: close once the queue is answered
        self._lost = False  # the client is gone
        self._linger = False  # after the answer, read and drop what comes until the client closes
        self._reading = True
        self._writing = True
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
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # a protocol switch we do not offer: the
            self._closing = True  # request, if complete, is answered; then the connection closes
            self._answer_soon()
            if self.task is None:
                self._close_transport()
            return
        except httptools.HttpParserError:  # not HTTP, or one of our callbacks raised _Stop
            if not self._closing:  # (each sets _closing first)
                self._refuse(Refusal.BAD_REQUEST)
            return
        if self._in_head:  # (a head llhttp is still reading: count its raw bytes too)
            self._head_raw += len(data)
            if self._head_raw > 2 * self._limits.max_head_bytes:
                self._refuse(Refusal.HEAD_TOO_LARGE)
        elif self._in_body and self._owed is not _Owed.BODY:
            self._set_deadline(_Owed.BODY)

    def eof_received(self) -> bool | None:
        self._closing = True  # the client sent all it will: answer what came, then close
        self._linger = False
        if self.task is None:
            self._close_transport()
        return True  # keep the write side open for those answers

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = self._lost = True
        if self._timer is not None:
            self._timer.cancel()
        if self._in_body:  # a bad request, answered to no one but logged and counted
            log.info("webhook_client_gone", path=self._path_of(self._url))
            self._refuse(Refusal.BAD_REQUEST)
        if self.task is None:  # else once the requests that came are handled all the same
            self._server.open.discard(self)

    def pause_writing(self) -> None:
        """The client does not read its answers: read no more requests until it does."""
        self._writing = False
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writing = True
        self._resume_reading()

    # -- llhttp's callbacks (httptools) ---------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = self._head_raw = 0
        if self._owed is not _Owed.HEAD:  # (a new connection's deadline runs from its opening)
            self._set_deadline(_Owed.HEAD)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value
        self._head_bytes += len(name) + len(value)

    def on_headers_complete(self) -> None:
        self._server.requests_count += 1  # (web.Server's count of heads read)
        self._in_head = False
        if self._head_bytes > self._limits.max_head_bytes:
            self._refuse(Refusal.HEAD_TOO_LARGE)
            raise _Stop
        self._in_body = True
        headers = self._headers
        length = headers.get(b"content-length")
        if length is not None and int(length) > self._limits.max_body_bytes:  # (digits: llhttp)
            self._refuse(Refusal.TOO_LARGE)
            raise _Stop
        if headers.get(b"expect", b"").lower() == b"100-continue" and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size > self._limits.max_body_bytes:
            self._refuse(Refusal.TOO_LARGE)
            raise _Stop
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._owed = _Owed.NOTHING  # until it is answered
        parts = self._body
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        request = Request(
            self._parser.get_method().decode("ascii"),
            self._path_of(self._url),
            self._headers,
            body,
        )
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        encoding = request.headers.get(b"content-encoding")
        if encoding is not None and (refusal := _decode(request, self._limits)) is not None:
            self._refuse(refusal, request)
            raise _Stop
        self._queue.append(request)
        self._answer_soon()
        if not self._parser.should_keep_alive():
            self._closing = True  # this is the connection's last request: read no further
            raise _Stop
        if len(self._queue) >= MAX_PIPELINED:
            self._pause_reading()

    # -- answering ------------------------------------------------------------------------

    def _answer_soon(self) -> None:
        if self.task is None and self._queue:
            self.task = self._loop.create_task(self._answer_queue())

    async def _answer_queue(self) -> None:
        handler = self._server.handler
        queue = self._queue
        while queue:
            request = queue.popleft()
            try:
                answer = await handler(request)
            except Exception:  # the handler answers everything; this is a bug of ours
                log.exception("unhandled_error", path=request.path, method=request.method)
                answer = Answer(500, b'{"error":"internal error"}')
            self._write(answer, request.method == "HEAD", last=self._closing and not queue)
            if not self._reading and len(queue) < MAX_PIPELINED // 2:
                self._resume_reading()
        self.task = None
        if self._lost:
            self._server.open.discard(self)
        elif self._linger:
            self._linger_then_close()
        elif self._closing:
            self._close_transport()
        elif not self._in_head and not self._in_body:
            self._set_deadline(_Owed.NEXT_REQUEST)

    def _write(self, answer: Answer, head_only: bool, *, last: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return  # the client is gone; its request was handled all the same
        body = answer.body
        head = [
            _status_line(answer.status),
            b"Content-Type: %s\r\nContent-Length: %d\r\nDate: %s\r\n"
            % (answer.content_type.encode("latin-1"), len(body), _Clock.http_date()),
        ]
        for name, value in answer.headers:
            head.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        head.append(b"Connection: close\r\n\r\n" if last else b"\r\n")
        if not head_only:
            head.append(body)
        transport.write(b"".join(head))

    def _refuse(self, refusal: Refusal, request: Request | None = None) -> None:
        """Answer the request being read with ``refusal`` (after those before it), then close."""
        if request is None:  # (the parser knows the method once the URL has begun)
            method = self._parser.get_method().decode("ascii") if self._url else ""
            request = Request(method, self._path_of(self._url), self._headers, b"")
        request.refusal = refusal
        self._linger = self._in_head or self._in_body  # the client may be sending still
        self._in_head = self._in_body = False
        self._closing = True
        self._queue.append(request)
        self._answer_soon()

    # -- closing and timers ---------------------------------------------------------------

    def close(self) -> None:
        """Take no more requests; close now if idle, else once the answers under way are out."""
        self._closing = True
        if self.task is None:
            self._close_transport()

    def abort(self) -> None:
        """Close at once, answered or not (the end of a shutdown's grace)."""
        if self.task is not None:
            self.task.cancel()
        if self._transport is not None:
            self._transport.abort()

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
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

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
        when = min(self._deadline, self._loop.time() + self._limits.shortest_timeout)
        self._timer = self._loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self._timer = None
        owed = self._owed
        if owed is _Owed.NOTHING or self._transport is None or self._transport.is_closing():
            return
        if self._loop.time() < self._deadline:
            self._arm()
            return
        self._owed = _Owed.NOTHING
        match owed:
            case _Owed.HEAD:
                timeout = self._limits.head_timeout
                log.info("request_head_timeout", peer=self._peer(), timeout=timeout)
                self.abort()
            case _Owed.BODY:
                log.warning("webhook_body_timeout", path=self._path_of(self._url))
                self._refuse(Refusal.TIMEOUT)
            case _Owed.NEXT_REQUEST:
                self.close()
            case _Owed.SILENCE:
                self._close_transport()

    def _pause_reading(self) -> None:
        if self._reading and self._transport is not None:
            self._reading = False
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        transport = self._transport
        if self._reading or not self._writing or transport is None or transport.is_closing():
            return
        if len(self._queue) < MAX_PIPELINED:
            self._reading = True
            transport.resume_reading()

    def _peer(self) -> str:
        peer = self._transport.get_extra_info("peername") if self._transport else None
        return str(peer)

    @staticmethod
    def _path_of(url: bytes) -> str:
        return url.partition(b"?")[0].decode("latin-1")


def _decode(request: Request, limits: Limits) -> Refusal | None:
    """Decompress the body in place as its Content-Encoding says; why not, if it cannot be."""
    encoding = request.headers[b"content-encoding"].strip().lower()
    if encoding in (b"", b"identity"):
        return None
    if encoding in (b"gzip", b"x-gzip"):
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == b"deflate":
        decoder = zlib.decompressobj(zlib.MAX_WBITS if request.body[:1] == b"\x78" else -15)
    else:
        return Refusal.UNSUPPORTED_ENCODING
    try:
        body = decoder.decompress(request.body, limits.max_body_bytes + 1)
    except zlib.error:
        return Refusal.BAD_REQUEST
    if len(body) > limits.max_body_bytes:
        return Refusal.TOO_LARGE
    if not decoder.eof or decoder.unused_data:
        return Refusal.BAD_REQUEST
    request.body = body
    return None


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")
    return line


_STATUS_LINES: dict[int, bytes] = {}


class _Clock:
    """The Date header's value, formatted once a second."""

    second = 0
    value = b""

    @classmethod
    def http_date(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second, cls.value = now, formatdate(now, usegmt=True).encode("ascii")
        return cls.value


__all__ = ["Answer", "Handler", "HttpServer", "Limits", "Refusal", "Request"]
