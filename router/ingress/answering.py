"""A webhook-port connection's answers: the complete requests it queued go to the handler one
at a time, in the order they came, and their answers are written in that order.

A compressed body is decoded when its request's turn comes (one at a time: the requests
queued behind it hold their bodies as sent). A request the connection refuses is queued all
the same, with its :class:`~router.ingress.messages.Refusal`, so that the handler answers,
logs and counts it like any other; the connection then closes.
"""

from __future__ import annotations

import structlog

from router.ingress.limits import Owed
from router.ingress.messages import (
    Answer,
    Clock,
    Refusal,
    Request,
    decode_body,
    path_of,
    status_line,
)
from router.ingress.timers import TimedConnection

log = structlog.get_logger("router.http")


class AnsweringConnection(TimedConnection):
    """Hands the queued requests to the server's handler and writes their answers."""

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
            self._set_deadline(Owed.NEXT_REQUEST)

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
            self._set_deadline(Owed.BODY)

    def _refuse(self, refusal: Refusal, request: Request | None = None) -> None:
        """Answer the request being read with ``refusal`` (after those before it), then close."""
        if request is None:  # (the parser knows the method once the URL has begun)
            method = self._parser.get_method().decode("ascii") if self._url else ""
            request = Request(method, path_of(self._url), self._headers, b"")
        request.refusal = refusal
        self._linger = self._in_head or self._in_body  # the client may be sending still
        self._in_head = self._in_body = self._continue_owed = False
        self._closing = True
        self._unparsed = b""
        self._queue.append((request, 0))
        self._answer_soon()


__all__ = ["AnsweringConnection"]
