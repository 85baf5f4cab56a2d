"""A read-only AMQP 0-9-1 connection to a RabbitMQ stream: one channel, one consumer at a time.

Reading the archive through aio-pika cost about 300 us of client CPU a message (a task, a
future and pamqp's reflection per delivery, an ack per message). This connection does only
what reading a stream needs:

- the handshake (URL, TLS, login, heartbeats) is :mod:`router.amqp.handshake`'s, shared with
  the publisher; then one channel under a :data:`PREFETCH` (a stream is only read under one);
- :meth:`StreamReader.consume` attaches to a stream at an ``x-stream-offset`` (an offset, a
  moment, ``"first"``, ``"last"``...); :meth:`StreamReader.next` returns its messages in order.
  Basic.Deliver and the content header are read by :mod:`router.amqp.deliveries`; a body may
  come in several frames. A stream takes no ``no-ack`` consumer: the messages taken are acked
  together (``multiple``) every :data:`ACK_EVERY`, and whenever the reader waits;
- at most the prefetch is held unacked; RabbitMQ delivers a stream by whole chunks, so when far
  more than that is buffered the socket is not read until the caller catches up;
- :meth:`StreamReader.cancel` ends a consumer (what it had delivered is dropped and acked), so
  one connection may attach several times (the archive's probes, then its read);
- a channel or connection closed by RabbitMQ, a consumer it cancelled, a lost socket or a missed
  heartbeat: the messages already received are still returned, then :class:`ReaderClosed`
  (an :class:`~router.errors.Unavailable`) says why, with RabbitMQ's reply code when it gave one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from collections import deque
from typing import Any, cast

from pamqp import commands
from pamqp import frame as pamqp_frame
from pamqp.exceptions import UnmarshalingException
from pamqp.header import ProtocolHeader

from router.amqp import handshake
from router.amqp.deliveries import (
    DELIVER,
    Delivery,
    Malformed,
    read_content_header,
    read_deliver,
)
from router.amqp.frames import (
    BASIC_ACK,
    BASIC_CLASS,
    FRAME_BODY,
    FRAME_END,
    FRAME_HEADER,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    FRAME_PREFIX,
)
from router.amqp.handshake import frame_of
from router.amqp.url import AmqpUrl
from router.errors import Unavailable

CHANNEL = 1
#: Messages RabbitMQ may deliver before the reader acks them.
PREFETCH = 2000
#: Messages taken between two acks (each acks all taken before it).
ACK_EVERY = 500
#: Largest frame accepted (RabbitMQ's default).
FRAME_MAX = 131_072
#: Seconds between two checks of the heartbeat.
TICK = 0.25
_END = FRAME_END[0]
_CAPABILITIES = {"consumer_cancel_notify": True}
_ACK_PREFIX = FRAME_PREFIX.pack(FRAME_METHOD, CHANNEL, 13) + BASIC_CLASS.to_bytes(2, "big")
_ACK_PREFIX += BASIC_ACK.to_bytes(2, "big")
_tags = itertools.count(1)


class ReaderClosed(Unavailable):
    """The reader's connection, channel or consumer ended; ``code`` is RabbitMQ's reply code
    (404: no such stream), 0 when the socket was lost without one."""

    def __init__(self, reason: str, code: int = 0) -> None:
        super().__init__(reason)
        self.code = code


class StreamReader(asyncio.Protocol):
    """One connection reading streams; open it with :meth:`open`, close it with :meth:`close`."""

    def __init__(self, url: AmqpUrl, *, name: str, prefetch: int) -> None:
        self._url = url
        self._name = name
        self._prefetch = prefetch
        self._ack_every = max(1, min(ACK_EVERY, prefetch // 2))
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._heartbeat = 0.0
        self._last_sent = self._last_received = self._loop.time()
        self._ticker: asyncio.TimerHandle | None = None
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        #: The answer awaited to a Basic.Consume or Basic.Cancel.
        self._answer: asyncio.Future[None] | None = None
        self._failure: ReaderClosed | None = None
        self._consumer = ""
        #: The delivery whose content is being read, and its body's frames so far.
        self._incoming: Delivery | None = None
        self._parts: list[bytes] = []
        self._received = 0
        self._deliveries: deque[Delivery] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        #: The delivery tag of the last message taken, and of the last acked.
        self._taken = self._acked = 0

    # -- opening, attaching, closing ------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str | AmqpUrl,
        *,
        name: str,
        timeout: float,
        prefetch: int = PREFETCH,
        tls: ssl.SSLContext | None = None,
    ) -> StreamReader:
        """Connect, log in and open the channel within ``timeout`` seconds (the URL's
        ``timeout`` and ``name`` win; ``tls`` over the URL's TLS options);
        :class:`ReaderClosed` when RabbitMQ refuses."""
        parsed = url if isinstance(url, AmqpUrl) else AmqpUrl.parse(url)
        reader = cls(parsed, name=parsed.name or name, prefetch=prefetch)
        await handshake.connect(parsed, reader, reader._ready, reader.abort, timeout, tls)
        return reader

    async def consume(self, stream: str, offset: Any) -> None:
        """Attach to ``stream`` at ``offset`` (its ``x-stream-offset``); :class:`ReaderClosed`
        when it does not exist (code 404) or the reader is closed."""
        if self._consumer:
            raise RuntimeError("cancel the consumer before attaching again")
        self._consumer = f"{self._name}-{next(_tags)}"
        consume = commands.Basic.Consume(
            queue=stream, consumer_tag=self._consumer, arguments={"x-stream-offset": offset}
        )
        await self._ask(frame_of(consume, CHANNEL))

    async def cancel(self) -> None:
        """Detach the consumer; what it delivered and was not taken is dropped (and acked)."""
        if not self._consumer:
            return
        await self._ask(frame_of(commands.Basic.Cancel(self._consumer), CHANNEL))
        self._consumer = ""
        self._incoming = None
        self._parts = []
        self._deliveries.clear()
        self._resume()
        self._ack(self._received)

    async def next(self, timeout: float) -> Delivery:
        """The next message; TimeoutError when none comes within ``timeout`` seconds,
        :class:`ReaderClosed` when none will come."""
        deliveries = self._deliveries
        if not deliveries:
            self._ack(self._taken)
            if self._failure is not None:
                raise self._failure
            waiter = self._waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await waiter
            finally:
                self._waiter = None
        delivery = deliveries.popleft()
        self._taken = delivery.delivery_tag
        if self._taken - self._acked >= self._ack_every:
            self._ack(self._taken)
        if self._paused and len(deliveries) <= self._prefetch:
            self._resume()
        return delivery

    async def close(self, timeout: float = 2.0) -> None:
        """Close politely (Connection.Close), then the socket."""
        if self._transport is None or self._closed.done():
            return
        self._fail(ReaderClosed("the reader was closed"))
        self._send(frame_of(commands.Connection.Close(200, "closing", 0, 0), 0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._closed), timeout)
        self.abort()

    def abort(self) -> None:
        """Drop the connection at once."""
        if self._transport is not None:
            self._transport.abort()

    async def _ask(self, method: bytes) -> None:
        if self._failure is not None:
            raise self._failure
        answer = self._answer = self._loop.create_future()
        self._send(method)
        await answer

    def _ack(self, tag: int) -> None:
        if tag > self._acked and self._failure is None:
            self._acked = tag
            self._send(_ACK_PREFIX + tag.to_bytes(8, "big") + b"\x01" + FRAME_END)

    def _send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
            self._last_sent = self._loop.time()

    def _resume(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._last_received = self._loop.time()
            self._transport.resume_reading()

    def _fail(self, failure: ReaderClosed) -> None:
        """Note why nothing more will come (the first reason wins) and wake whoever waits: the
        messages already buffered are still taken, then ``failure`` is raised."""
        if self._failure is None:
            self._failure = failure
        for future in (self._ready, self._answer, self._waiter):
            if future is not None and not future.done():
                future.set_exception(self._failure)
                future.exception()  # read here: a caller that gave up waiting never will

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport.write(ProtocolHeader().marshal())

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ReaderClosed(f"connection lost: {exc!r}" if exc else "connection closed"))
        if self._ticker is not None:
            self._ticker.cancel()
        if not self._closed.done():
            self._closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._last_received = self._loop.time()
        buffer = self._buffer
        buffer += data
        view = memoryview(buffer)
        offset, size = 0, len(buffer)
        try:
            while size - offset >= FRAME_PREFIX.size:
                kind, _, length = FRAME_PREFIX.unpack_from(buffer, offset)
                start = offset + FRAME_PREFIX.size
                end = start + length
                if end >= size:
                    break  # the frame is not all here yet
                if buffer[end] != _END:
                    raise Malformed("a frame did not end with 0xCE")
                if kind == FRAME_BODY:
                    self._on_body(bytes(view[start:end]))
                elif kind == FRAME_HEADER:
                    self._on_header(view[start:end])
                elif kind == FRAME_METHOD and view[start : start + 4] == DELIVER:
                    self._on_deliver(view[start:end])
                elif kind != FRAME_HEARTBEAT:
                    try:
                        _, _, value = pamqp_frame.unmarshal(bytes(view[offset : end + 1]))
                    except UnmarshalingException as error:
                        raise Malformed(f"unreadable frame: {error}") from None
                    self._on_frame(value)
                offset = end + 1
        except Malformed as error:
            self._fail(ReaderClosed(str(error)))
            self.abort()
        finally:
            view.release()
        del buffer[:offset]
        if len(self._deliveries) > 4 * self._prefetch and not self._paused:
            self._paused = True
            if self._transport is not None:
                self._transport.pause_reading()

    # -- deliveries -----------------------------------------------------------------------

    def _on_deliver(self, payload: memoryview) -> None:
        if self._incoming is not None:
            raise Malformed("a Basic.Deliver before the last message's content was all read")
        self._incoming = read_deliver(payload)
        self._received = self._incoming.delivery_tag

    def _on_header(self, payload: memoryview) -> None:
        delivery = self._incoming
        if delivery is None:
            raise Malformed("a content header without a Basic.Deliver")
        read_content_header(payload, delivery)
        if delivery.body_size == 0:
            self._delivered(delivery)

    def _on_body(self, chunk: bytes) -> None:
        delivery = self._incoming
        if delivery is None:
            raise Malformed("a body frame without a Basic.Deliver")
        parts = self._parts
        parts.append(chunk)
        if len(parts) == 1 and len(chunk) == delivery.body_size:
            delivery.body = chunk
        else:
            got = sum(len(part) for part in parts)
            if got < delivery.body_size:
                return
            if got > delivery.body_size:
                raise Malformed(f"a body of {got} bytes, not {delivery.body_size}")
            delivery.body = b"".join(parts)
        self._parts = []
        self._delivered(delivery)

    def _delivered(self, delivery: Delivery) -> None:
        self._incoming = None
        if delivery.consumer_tag != self._consumer:
            return  # a cancelled consumer's: acked with the next ack
        self._deliveries.append(delivery)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- other frames from RabbitMQ -------------------------------------------------------

    def _on_frame(self, value: Any) -> None:
        match value:
            case commands.Connection.Start(mechanisms=mechanisms):
                try:
                    self._send(handshake.start_ok(self._url, self._name, mechanisms, _CAPABILITIES))
                except handshake.LoginRefused as refused:
                    raise Malformed(str(refused)) from None
            case commands.Connection.Tune(frame_max=frame_max, heartbeat=offered):
                tuned = handshake.tune(self._url, frame_max, offered, FRAME_MAX)
                self._heartbeat = float(tuned.heartbeat)
                self._send(tuned.reply)
            case commands.Connection.OpenOk():
                self._send(frame_of(commands.Channel.Open(), CHANNEL))
            case commands.Channel.OpenOk():
                self._send(frame_of(commands.Basic.Qos(prefetch_count=self._prefetch), CHANNEL))
            case commands.Basic.QosOk() if not self._ready.done():
                self._ticker = self._loop.call_later(TICK, self._tick)
                self._ready.set_result(None)
            case commands.Basic.ConsumeOk() | commands.Basic.CancelOk():
                if self._answer is not None and not self._answer.done():
                    self._answer.set_result(None)
            case commands.Basic.Cancel():
                self._fail(
                    ReaderClosed("RabbitMQ cancelled the consumer (was the stream deleted?)")
                )
            case commands.Connection.Close(reply_code=code, reply_text=text):
                self._fail(ReaderClosed(f"closed by RabbitMQ: {code} {text}", code or 0))
                self._send(frame_of(commands.Connection.CloseOk(), 0))
                if self._transport is not None:
                    self._transport.close()  # unlike abort(), sends the CloseOk first
            case commands.Connection.CloseOk():
                self.abort()
            case commands.Channel.Close(reply_code=code, reply_text=text):
                # the channel is all this connection is for: close the connection with it
                self._fail(ReaderClosed(f"channel closed by RabbitMQ: {code} {text}", code or 0))
                self._send(frame_of(commands.Channel.CloseOk(), CHANNEL))
                self._send(frame_of(commands.Connection.Close(200, "channel closed", 0, 0), 0))
            case _:
                pass  # methods a reader need not act on

    def _tick(self) -> None:
        now = self._loop.time()
        if self._paused:  # not reading: the server's heartbeats wait in the socket
            self._last_received = now
        due = handshake.heartbeat_due(now, self._last_received, self._last_sent, self._heartbeat)
        if due == "dead":
            self._fail(ReaderClosed("RabbitMQ missed two heartbeats"))
            self.abort()
            return
        if due:
            self._send(handshake.HEARTBEAT)
        self._ticker = self._loop.call_later(TICK, self._tick)


__all__ = ["ACK_EVERY", "PREFETCH", "ReaderClosed", "StreamReader"]
