"""A publish-only AMQP 0-9-1 connection: one confirm-mode channel, confirms pipelined.

The ingress publishes one persistent message per webhook and answers only once RabbitMQ
confirmed it. aiormq does that well but generally: per publish it takes a lock, starts a
timeout, marshals three frames through pamqp and hands them to a writer task, which cost
the ingress about a third of its CPU at saturation. This protocol does only what publishing
needs, and so does it cheaply:

- the frames are built by :mod:`router.amqp.frames`; the publishes of one turn of the event
  loop go out together, in one ``writelines`` per :data:`WRITE_BATCH` messages;
- each publish is a future kept by :class:`~router.amqp.confirms.Confirms` under its delivery
  tag; acks (single or ``multiple``) and nacks are read without a general unmarshaller,
  everything else with pamqp;
- one 0.1 s ticker fails publishes older than the confirm timeout and keeps the heartbeat,
  instead of a timer per publish;
- a message returned as unroutable (``mandatory``) fails with :class:`Returned`, a nack with
  :class:`Nacked`; a connection or channel closed by either side fails every publish still
  waiting with :class:`ConnectionLost`, and :meth:`wait_closed` returns;
- a message whose content header (its properties and header table) would not fit in one
  frame of the negotiated ``frame_max`` is refused with :class:`HeaderTooLarge` before a byte
  of it is written: RabbitMQ would close the whole connection (501 FRAME_ERROR) for it.

The URL is read by :class:`~router.amqp.url.AmqpUrl`, as for the connection that declares the
topology; the heartbeat is :func:`~router.amqp.url.negotiate_heartbeat` of the URL's (60 s by
default, as aiormq) and RabbitMQ's.

Connection.Blocked and Unblocked (memory and disk alarms) are tracked in :attr:`blocked`.
Topology is not declared here: :class:`~router.amqp.broker.Broker` does that with aio-pika first.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any, cast

from pamqp import commands
from pamqp import frame as pamqp_frame
from pamqp.exceptions import UnmarshalingException
from pamqp.header import ContentHeader, ProtocolHeader

from router.amqp.confirms import (
    Confirms,
    ConnectionLost,
    HeaderTooLarge,
    Route,
)
from router.amqp.frames import (
    BASIC_ACK,
    BASIC_CLASS,
    BASIC_NACK,
    FRAME_END,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    FRAME_PREFIX,
    Properties,
    body_frames,
    publish_frames,
    publish_method,
)
from router.amqp.handshake import (
    HEARTBEAT,
    LoginRefused,
    connect,
    frame_of,
    heartbeat_due,
    start_ok,
    tune,
)
from router.amqp.properties import EncodedProperties
from router.amqp.properties import content_header as encoded_header
from router.amqp.url import AmqpUrl

CHANNEL = 1
#: Largest frame we offer; RabbitMQ's default (131,072) holds a 1 KiB event in one frame.
FRAME_MAX = 131_072
#: Seconds between checks of confirm deadlines and of the heartbeat.
TICK = 0.1
#: Method frames whose payload is a delivery tag and one flags octet: read without pamqp.
_ACK = struct.pack(">HH", BASIC_CLASS, BASIC_ACK)
_NACK = struct.pack(">HH", BASIC_CLASS, BASIC_NACK)
_TAG_AND_FLAGS = struct.Struct(">QB")
_END = FRAME_END[0]
_CACHED_METHODS = 4096
#: Messages written together at most. A burst of requests handled in one turn of the loop
#: (dozens at saturation) is written in batches of this many, so the broker starts on the
#: first ones while the rest are still being handled, instead of the two taking turns (the
#: gain is in docs/performance.md). Much smaller batches cost the broker more CPU per message
#: than they save.
WRITE_BATCH = 16


class ConfirmPublisher(asyncio.Protocol):
    """A connection with one confirm-mode channel; :meth:`publish` returns the confirm's future.

    Open it with :meth:`open`; it never reconnects (the caller decides where to go next).
    """

    def __init__(self, url: AmqpUrl, *, name: str, confirm_timeout: float) -> None:
        self._url = url
        self._name = name
        self._confirm_timeout = confirm_timeout
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._outgoing: list[bytes] = []
        self._outgoing_messages = 0
        self._flush_scheduled = False
        self._frame_max = FRAME_MAX
        self._heartbeat = 0.0
        self._last_sent = self._last_received = self._loop.time()
        self._ticker: asyncio.TimerHandle | None = None
        self._methods: dict[tuple[str, str, bool], bytes] = {}
        self._confirms = Confirms()
        #: A basic.return's (exchange, routing key); its content header (next) names the message.
        self._returning: tuple[str, str] | None = None
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._close_reason = "not connected"
        #: Between Confirm.SelectOk and the socket's end: publishing is possible.
        self.is_open = False
        #: RabbitMQ has blocked this connection (a resource alarm): publishes stall.
        self.blocked = False

    # -- opening and closing --------------------------------------------------------------

    @classmethod
    async def open(
        cls, url: str | AmqpUrl, *, name: str, confirm_timeout: float, timeout: float
    ) -> ConfirmPublisher:
        """Connect, authenticate and open a confirm-mode channel within ``timeout`` seconds
        (the URL's ``timeout`` wins, and its ``name`` over ``name``, as in
        :func:`router.amqp.nodes.connect_first`)."""
        parsed = url if isinstance(url, AmqpUrl) else AmqpUrl.parse(url)
        protocol = cls(parsed, name=parsed.name or name, confirm_timeout=confirm_timeout)
        await connect(parsed, protocol, protocol._ready, protocol.abort, timeout)
        return protocol

    async def close(self, timeout: float = 2.0) -> None:
        """Close the connection politely (Connection.Close), then the socket."""
        if self._transport is None or self._closed.done():
            return
        self._close_reason = "closed"
        self._send(frame_of(commands.Connection.Close(200, "closing", 0, 0), 0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._closed), timeout)
        self.abort()

    def abort(self, reason: str | None = None) -> None:
        """Drop the connection at once; waiting publishes fail with :class:`ConnectionLost`
        (saying ``reason`` when given)."""
        if reason is not None and not self._closed.done():
            self._close_reason = reason
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self) -> str:
        """Wait until the connection is gone; returns why."""
        await asyncio.shield(self._closed)
        return self._close_reason

    @property
    def in_flight(self) -> int:
        """Publishes waiting for their confirm."""
        return len(self._confirms)

    # -- publishing -----------------------------------------------------------------------

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        *,
        mandatory: bool = True,
    ) -> asyncio.Future[None]:
        """Write the message; the future resolves on RabbitMQ's ack (or fails: see module).

        Raises :class:`HeaderTooLarge` (writing nothing) when the content header would not
        fit in one frame, and :class:`ConnectionLost` when the connection is not open.
        """
        key = (exchange, routing_key, mandatory)
        frames = publish_frames(self._method(key), CHANNEL, body, properties, self._frame_max)
        return self._write_publish(key, frames, properties.message_id)

    def publish_encoded(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: EncodedProperties,
        *,
        mandatory: bool = True,
    ) -> asyncio.Future[None]:
        """:meth:`publish` of a message with any basic properties, encoded beforehand
        (:func:`router.amqp.properties.encode`): a replay sends a message as it came."""
        key = (exchange, routing_key, mandatory)
        frames = [self._method(key), encoded_header(CHANNEL, len(body), properties)]
        if body:
            frames += body_frames(CHANNEL, body, self._frame_max)
        return self._write_publish(key, frames, properties.message_id)

    def _method(self, key: Route) -> bytes:
        """The Basic.Publish frame of ``key`` (exchange, routing key, mandatory)."""
        if not self.is_open:
            raise ConnectionLost(self._close_reason)
        method = self._methods.get(key)
        if method is None:
            method = publish_method(CHANNEL, key[0], key[1], mandatory=key[2])
            if len(self._methods) >= _CACHED_METHODS:
                self._methods.clear()
            self._methods[key] = method
        return method

    def _write_publish(
        self, key: Route, frames: list[bytes], message_id: str | None
    ) -> asyncio.Future[None]:
        if len(frames[1]) > self._frame_max:  # the content header; the method is < 600 bytes
            raise HeaderTooLarge(
                f"the message's content header is {len(frames[1])} bytes,"
                f" more than the connection's frame_max ({self._frame_max})"
            )
        future: asyncio.Future[None] = self._loop.create_future()
        deadline = self._loop.time() + self._confirm_timeout
        self._confirms.track(future, key, message_id, deadline)
        self._outgoing += frames
        self._outgoing_messages += 1
        if self._outgoing_messages >= WRITE_BATCH:
            self._write_out()  # the flush already scheduled writes the rest of the turn's
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    def _send(self, data: bytes) -> None:
        self._outgoing.append(data)
        self._write_out()

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._write_out()

    def _write_out(self) -> None:
        if self._outgoing and self._transport is not None and not self._transport.is_closing():
            self._transport.writelines(self._outgoing)
            self._last_sent = self._loop.time()
        self._outgoing = []
        self._outgoing_messages = 0

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport.write(ProtocolHeader().marshal())

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_open = False
        if self._close_reason == "not connected":  # no reason given before: the socket's
            self._close_reason = f"connection lost: {exc!r}" if exc else "connection closed"
        self._confirms.fail_all(ConnectionLost(self._close_reason))
        if not self._ready.done():
            self._ready.set_exception(ConnectionLost(self._close_reason))
        if self._ticker is not None:
            self._ticker.cancel()
        if not self._closed.done():
            self._closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._last_received = self._loop.time()
        buffer = self._buffer
        buffer += data
        offset, size = 0, len(buffer)
        while size - offset >= FRAME_PREFIX.size:
            kind, _, length = FRAME_PREFIX.unpack_from(buffer, offset)
            end = offset + FRAME_PREFIX.size + length
            if end >= size:
                break  # the frame is not all here yet
            if buffer[end] != _END:
                self._protocol_error("a frame did not end with 0xCE")
                return
            start = offset + FRAME_PREFIX.size
            if kind == FRAME_METHOD and length == 13 and buffer[start : start + 4] in (_ACK, _NACK):
                tag, flags = _TAG_AND_FLAGS.unpack_from(buffer, start + 4)
                self._confirms.settle(tag, bool(flags & 1), nacked=buffer[start + 3] == BASIC_NACK)
            elif kind != FRAME_HEARTBEAT:
                try:
                    _, _, value = pamqp_frame.unmarshal(bytes(buffer[offset : end + 1]))
                except UnmarshalingException as error:
                    self._protocol_error(f"unreadable frame: {error}")
                    return
                self._on_frame(value)
            offset = end + 1
        del buffer[:offset]

    # -- frames from RabbitMQ -------------------------------------------------------------

    def _on_frame(self, value: Any) -> None:
        match value:
            case commands.Connection.Start(mechanisms=mechanisms):
                try:
                    self._send(start_ok(self._url, self._name, mechanisms, _CAPABILITIES))
                except LoginRefused as refused:
                    self._protocol_error(str(refused))
            case commands.Connection.Tune(frame_max=frame_max, heartbeat=offered):
                tuned = tune(self._url, frame_max, offered, FRAME_MAX)
                self._frame_max, self._heartbeat = tuned.frame_max, float(tuned.heartbeat)
                self._send(tuned.reply)
            case commands.Connection.OpenOk():
                self._send(frame_of(commands.Channel.Open(), CHANNEL))
            case commands.Channel.OpenOk():
                self._send(frame_of(commands.Confirm.Select(), CHANNEL))
            case commands.Confirm.SelectOk():
                self._ticker = self._loop.call_later(TICK, self._tick)
                self.is_open = True
                self._ready.set_result(None)
            case commands.Connection.Blocked():
                self.blocked = True
            case commands.Connection.Unblocked():
                self.blocked = False
            case commands.Basic.Return(exchange=exchange, routing_key=routing_key):
                self._returning = (exchange, routing_key or "")
            case ContentHeader(properties=properties) if self._returning is not None:
                self._confirms.mark_returned(*self._returning, properties.message_id)
                self._returning = None
            case commands.Connection.Close(reply_code=code, reply_text=text):
                self._close_reason = f"closed by RabbitMQ: {code} {text}"
                self._send(frame_of(commands.Connection.CloseOk(), 0))
                if self._transport is not None:
                    self._transport.close()  # unlike abort(), sends the CloseOk first
            case commands.Connection.CloseOk():
                self.abort()
            case commands.Channel.Close(reply_code=code, reply_text=text):
                # the channel is all this connection is for: close the connection with it
                self._close_reason = f"channel closed by RabbitMQ: {code} {text}"
                self._send(frame_of(commands.Channel.CloseOk(), CHANNEL))
                self._send(frame_of(commands.Connection.Close(200, "channel closed", 0, 0), 0))
                self._confirms.fail_all(ConnectionLost(self._close_reason))
            case _:
                pass  # body frames of a returned message, and methods we need not act on

    # -- timekeeping ----------------------------------------------------------------------

    def _tick(self) -> None:
        now = self._loop.time()
        self._confirms.expire(now, self._confirm_timeout)
        due = heartbeat_due(now, self._last_received, self._last_sent, self._heartbeat)
        if due == "dead":
            self._close_reason = "RabbitMQ missed two heartbeats"
            self.abort()
            return
        if due:
            self._send(HEARTBEAT)
        self._ticker = self._loop.call_later(TICK, self._tick)

    def _protocol_error(self, reason: str) -> None:
        self._close_reason = reason
        self.abort()


#: What this connection tells RabbitMQ it understands (besides closing on a failed login).
_CAPABILITIES = {"basic.nack": True, "connection.blocked": True, "publisher_confirms": True}


__all__ = ["ConfirmPublisher"]
