"""A webhook-port connection's state, and what runs on the clock: reading and writing paused
and resumed, the one deadline timer, and closing (at once, once answered, or after lingering).

A connection is built in three layers, a module each: this one;
:mod:`router.ingress.answering` (the queue of complete requests, answered in order); and
:mod:`router.ingress.connection` (the asyncio protocol: what the client sends, fed to llhttp,
made into requests within their limits).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import httptools
import structlog

from router.ingress.limits import LINGER, MAX_PIPELINED, Owed
from router.ingress.messages import Refusal, Request, path_of
from router.ingress.refused_log import cut_path

if TYPE_CHECKING:
    from router.ingress.http1 import HttpServer

log = structlog.get_logger("router.http")


class TimedConnection(asyncio.Protocol):
    """One client connection's state, its flow control, deadlines and closing."""

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
        self._owed = Owed.NOTHING
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- what the layers above implement --------------------------------------------------

    def _feed(self, data: bytes, offset: int) -> None:
        """Parse ``data`` from ``offset`` (:class:`~router.ingress.connection.Connection`)."""
        raise NotImplementedError

    def _refuse(self, refusal: Refusal, request: Request | None = None) -> None:
        """Answer with ``refusal``, then close
        (:class:`~router.ingress.answering.AnsweringConnection`)."""
        raise NotImplementedError

    # -- flow control ---------------------------------------------------------------------

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

    async def _until_writable(self) -> None:
        self._writable = self._loop.create_future()
        try:
            await self._writable
        finally:
            self._writable = None

    def _wake_writer(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

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

    # -- closing --------------------------------------------------------------------------

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
        self._set_deadline(Owed.SILENCE)

    def _close_transport(self) -> None:
        """Close once the answers written are sent; drop them after :data:`LINGER` seconds
        if the client does not take them."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()
            if transport.get_write_buffer_size():
                self._loop.call_later(LINGER, transport.abort)

    # -- deadlines ------------------------------------------------------------------------

    def _set_deadline(self, owed: Owed) -> None:
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
        if self._owed is not Owed.NOTHING:
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
                if self._server.refused_log.allow("http_client_not_reading"):
                    log.info("http_client_not_reading", peer=self._peer())
                self.abort()
                return
            self._arm()
            return
        owed = self._owed
        if owed is Owed.NOTHING:
            return
        if now < self._deadline:
            self._arm()
            return
        if not self._reading and owed in (Owed.HEAD, Owed.BODY):
            self._deadline = now + self._limits.seconds_for(owed)  # we hold reading, not it
            self._arm()
            return
        self._owed = Owed.NOTHING
        match owed:
            case Owed.HEAD:
                if self._server.refused_log.allow("request_head_timeout"):
                    log.info(
                        "request_head_timeout",
                        peer=self._peer(),
                        timeout=self._limits.head_timeout,
                    )
                self._in_head = False
                self._closing, self._unparsed = True, b""
                if self.task is not None or transport.get_write_buffer_size():
                    self._linger = True  # the answers under way go out first, then it closes
                    if self.task is None:
                        self._linger_then_close()
                else:
                    self.abort()
            case Owed.BODY:
                if self._server.refused_log.allow("webhook_body_timeout"):
                    log.warning("webhook_body_timeout", path=cut_path(path_of(self._url)))
                self._refuse(Refusal.TIMEOUT)
            case Owed.NEXT_REQUEST:
                self.close()
            case Owed.SILENCE:
                self._close_transport()

    def _peer(self) -> str:
        peer = self._transport.get_extra_info("peername") if self._transport else None
        return str(peer)


__all__ = ["TimedConnection"]
