"""Reading a window of the archive stream, from a moment to a moment, over AMQP 0-9-1.

A stream is read, never consumed: a consumer attaches at an offset (``x-stream-offset``: a
timestamp attaches at the first chunk written at or after it), gets the messages from there
on, and its acks only make room under its prefetch; nothing leaves the stream and no other
consumer sees a difference. Each reader has a channel of its own.

Where the window ends is found before reading, so that a quiet stream does not leave the
reader waiting for messages that never come (AMQP 0-9-1 says nothing of a stream's end):

- with ``until``: the offset of the first message at or after ``until`` (attaching there);
- else, or when nothing was written after ``until``: one past the last message now (attaching
  at ``last``, the stream's last chunk, and taking its highest offset).

A third probe finds the window's first offset (None: it starts past the end). The probes,
and every wait for the next message, are bounded: a probe that gets nothing
within :data:`PROBE_TIMEOUT` means there is nothing there. The window's ends are to the
chunk (RabbitMQ writes events that arrive together as one chunk): a few events written just
before ``since`` may be read too, and callers filter on each event's own time if they must.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from router.contract.names import COMPANY_HEADER, Names
from router.errors import Unavailable

#: Messages a reader may hold unacknowledged (streams need a prefetch).
PREFETCH = 500
#: Seconds a probe of the stream's end waits for a first message before taking it as empty.
PROBE_TIMEOUT = 1.0
#: Seconds without a further message after which the last chunk is taken as read.
CHUNK_QUIET = 0.05
#: Seconds the reader waits for the next message of a window known to hold it.
NEXT_TIMEOUT = 10.0
_OFFSET = "x-stream-offset"
_CE_TYPE = "cloudEvents:type"


@dataclass(frozen=True, slots=True)
class Archived:
    """One event as the archive holds it: its place in the stream, routing key, properties
    and the body Attentive sent."""

    offset: int
    routing_key: str
    message_id: str
    #: The event's time (the AMQP ``timestamp`` the ingress set: the payload's, to the second).
    timestamp: datetime | None
    headers: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""
    content_type: str | None = None

    @property
    def event_type(self) -> str:
        """The event's type (its CloudEvents ``type``; else its routing key less the company)."""
        return _text(self.headers.get(_CE_TYPE)) or self.routing_key.rpartition(".")[0]

    @property
    def company(self) -> str:
        """The company the event is about (its header; else its routing key's last word)."""
        return _text(self.headers.get(COMPANY_HEADER)) or self.routing_key.rpartition(".")[2]

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> Archived:
        """The archived event a stream delivery carries."""
        headers = dict(message.headers or {})
        offset = headers.pop(_OFFSET, -1)
        stamp = message.timestamp
        if stamp is not None and stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return cls(
            offset=int(offset) if isinstance(offset, int) else -1,
            routing_key=message.routing_key or "",
            message_id=message.message_id or "",
            timestamp=stamp,
            headers=headers,
            body=message.body,
            content_type=message.content_type,
        )


async def read_window(
    connection: AbstractConnection,
    names: Names,
    since: datetime | int,
    until: datetime | int | None = None,
) -> AsyncGenerator[Archived, None]:
    """The archived events from ``since`` (a moment, or an offset to resume from) to
    ``until`` (a moment, an offset where to stop, else the end as it is now), oldest first,
    on a channel of its own.

    :class:`Unavailable` when the archive does not exist or stops answering."""
    channel = await _channel(connection)
    stream = names.archive_stream
    try:
        end = until if isinstance(until, int) else await _end(channel, stream, _past(until))
        if end is None:
            return
        start = since if isinstance(since, int) else await _first(channel, stream, since, end)
        if start >= end:
            return
        async for message in _read(channel, stream, start, end):
            yield message
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def window_end(
    connection: AbstractConnection, names: Names, until: datetime | None = None
) -> int | None:
    """The offset where a window to ``until`` (else to now) stops, exclusive: what a job
    records so that events written after it was made are not its business; None when the
    archive is empty."""
    channel = await _channel(connection)
    try:
        return await _end(channel, names.archive_stream, _past(until))
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def _channel(connection: AbstractConnection) -> AbstractChannel:
    """A channel to read the stream on (a stream is only read under a prefetch)."""
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
    except Exception as error:
        raise Unavailable(f"cannot open a channel to read the archive: {error}") from None
    return channel


def _past(until: datetime | None) -> datetime | None:
    """``until``, or None (the end as it is now) when it is not past: a probe at a future
    moment would wait for it."""
    return None if until is None or until >= datetime.now(UTC) else until


async def _end(channel: AbstractChannel, stream: str, until: datetime | None) -> int | None:
    """The offset where the window stops (exclusive); None when the stream is empty."""
    if until is not None:
        first = await _probe(channel, stream, until, whole_chunk=False)
        if first is not None:
            return first
    last = await _probe(channel, stream, "last", whole_chunk=True)
    return None if last is None else last + 1


async def _first(channel: AbstractChannel, stream: str, since: datetime, end: int) -> int:
    """The offset of the first message at or after ``since`` (``end`` when there is none)."""
    first = await _probe(channel, stream, since, whole_chunk=False)
    return end if first is None else first


async def _probe(
    channel: AbstractChannel, stream: str, at: datetime | str, *, whole_chunk: bool
) -> int | None:
    """The offset of the first message at ``at`` (the highest of its chunk if
    ``whole_chunk``); None when none comes within :data:`PROBE_TIMEOUT`."""
    offsets: asyncio.Queue[int] = asyncio.Queue()

    async def note(message: AbstractIncomingMessage) -> None:
        offset = (message.headers or {}).get(_OFFSET)
        if isinstance(offset, int):
            offsets.put_nowait(offset)
        await message.ack()

    queue = await _stream(channel, stream)
    tag = await queue.consume(note, arguments={_OFFSET: at})
    try:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                highest = await offsets.get()
        except TimeoutError:
            return None
        if whole_chunk:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_TIMEOUT):
                    while True:
                        async with asyncio.timeout(CHUNK_QUIET):
                            highest = max(highest, await offsets.get())
        return highest
    except TimeoutError:  # (the chunk's quiet gap)
        return highest
    finally:
        await queue.cancel(tag)


async def _read(
    channel: AbstractChannel, stream: str, start: int, end: int
) -> AsyncGenerator[Archived, None]:
    """The messages from offset ``start`` to ``end`` (exclusive), each acked once taken."""
    messages: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    queue = await _stream(channel, stream)
    tag = await queue.consume(messages.put, arguments={_OFFSET: start})
    try:
        while True:
            try:
                async with asyncio.timeout(NEXT_TIMEOUT):
                    message = await messages.get()
            except TimeoutError:
                raise Unavailable(f"the archive {stream} stopped answering") from None
            archived = Archived.of(message)
            await message.ack()
            if archived.offset >= end:
                return
            yield archived
            if archived.offset + 1 >= end:
                return
    finally:
        with contextlib.suppress(Exception):
            await queue.cancel(tag)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


async def _stream(channel: AbstractChannel, stream: str) -> Any:
    """The archive stream (checked), or :class:`Unavailable` when it does not exist."""
    try:
        return await channel.get_queue(stream, ensure=True)
    except Exception as error:
        raise Unavailable(f"no archive {stream} (is ROUTER_ARCHIVE off?): {error}") from None


__all__ = [
    "NEXT_TIMEOUT",
    "PREFETCH",
    "PROBE_TIMEOUT",
    "Archived",
    "read_window",
    "window_end",
]
