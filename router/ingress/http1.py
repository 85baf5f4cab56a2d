"""The webhook listener's HTTP/1.1 server: llhttp parses, this package does the rest.

llhttp (Node.js's parser, through httptools) turns bytes into requests; :class:`HttpServer`
is the asyncio protocol factory a listener takes (``loop.create_server(server, host, port)``):
it keeps the open connections and shuts them down gracefully. Each connection
(:mod:`router.ingress.connection`, :mod:`router.ingress.answering`,
:mod:`router.ingress.timers`) keeps its limits and timers, hands each complete request to one
handler and writes its answer, in order, on the connection it came from. None of it routes,
verifies nor publishes: the ingress's handler (:mod:`router.ingress.routes`) does, and answers.

Why not aiohttp's server, which the admin API keeps: on the webhook path its request and
response objects, streams and per-connection task were about half the ingress's CPU per
event (docs/performance.md).

The port faces the internet, so what one connection may hold is bounded whatever its
client does (docs/security.md, "Memory under hostile clients", says how much):

* a request's line and headers within ``head_timeout`` of the connection opening (or of the
  first byte of a later request), else the connection is closed; at most ``max_head_bytes``
  of them in at most :data:`MAX_HEADER_FIELDS` fields (431), and a chunked body's trailer
  fields count against the same limit (the limits: :mod:`router.ingress.limits`);
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

from router.ingress.connection import Connection
from router.ingress.limits import LINGER, MAX_HEADER_FIELDS, MAX_PIPELINED, Limits
from router.ingress.messages import Handler
from router.ingress.refused_log import RefusedLog
from router.ingress.timers import TimedConnection


class HttpServer:
    """The protocol factory a listener serves with: each connection it makes is a
    :class:`~router.ingress.connection.Connection` that hands its requests to ``handler``;
    its connections' own lines (a client gone, a deadline passed) go through ``refused_log``."""

    def __init__(
        self, handler: Handler, limits: Limits, refused_log: RefusedLog | None = None
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.refused_log = RefusedLog() if refused_log is None else refused_log
        #: The connections open now.
        self.open: set[TimedConnection] = set()
        #: Request heads read whole since the server was made (answered or refused).
        self.requests_count = 0

    def __call__(self) -> Connection:
        return Connection(self)

    async def shutdown(self, timeout: float) -> None:
        """Stop taking requests and close every connection: idle ones at once, busy ones
        once their answer is written; after ``timeout`` seconds, drop those still busy.

        Call it once the listener has stopped accepting connections."""
        for connection in list(self.open):
            connection.close()
        busy = [c.task for c in self.open if c.task is not None and not c.task.done()]
        if busy:
            await asyncio.wait(busy, timeout=timeout)
        for connection in list(self.open):
            connection.abort()


__all__ = ["LINGER", "MAX_HEADER_FIELDS", "MAX_PIPELINED", "HttpServer", "Limits"]
