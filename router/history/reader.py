"""Reading a window of the archive stream, from a moment to a moment, over AMQP 0-9-1.

A stream is read, never consumed: a consumer attaches at an offset (``x-stream-offset``: a
timestamp attaches at the first chunk written at or after it), gets the messages from there
on, and its acks only make room under its prefetch; nothing leaves the stream and no other
consumer sees a difference. Each read has a connection of its own
(:class:`~router.amqp.stream_reader.StreamReader`, to where the caller's connection goes: its
URL and TLS context): aio-pika's cost per message, not the broker, was what bounded a read.

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

from aio_pika.abc import AbstractConnection

from router.amqp.deliveries import Delivery
from router.amqp.stream_reader import PREFETCH, ReaderClosed, StreamReader
from router.amqp.url import AmqpUrl
from router.contract.names import COMPANY_HEADER, Names
from router.errors import Unavailable

#: Seconds a probe of the stream's end waits for a first message before taking it as empty.
PROBE_TIMEOUT = 1.0
#: Seconds without a further message after which the last chunk is taken as read.
CHUNK_QUIET = 0.05
#: Seconds the reader waits for the next message of a window known to hold it.
NEXT_TIMEOUT = 10.0
#: Seconds to open the reader's connection.
OPEN_TIMEOUT = 10.0
_OFFSET = "x-stream-offset"
_CE_TYPE = "cloudEvents:type"
_NOT_FOUND = 404


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
    def of(cls, delivery: Delivery) -> Archived:
        """The archived event a stream delivery carries."""
        headers = delivery.headers
        offset = headers.pop(_OFFSET, -1)
        stamp = delivery.timestamp
        return cls(
            offset=offset if isinstance(offset, int) else -1,
            routing_key=delivery.routing_key,
            message_id=delivery.message_id or "",
            timestamp=None if stamp is None else datetime.fromtimestamp(stamp, UTC),
            headers=headers,
            body=delivery.body,
            content_type=delivery.content_type,
        )


async def read_window(
    connection: AbstractConnection,
    names: Names,
    since: datetime | int,
    until: datetime | int | None = None,
) -> AsyncGenerator[Archived, None]:
    """The archived events from ``since`` (a moment, or an offset to resume from) to
    ``until`` (a moment, an offset where to stop, else the end as it is now), oldest first,
    on a connection of its own to where ``connection`` goes.

    :class:`Unavailable` when the archive does not exist or stops answering."""
    reader = await _open(connection)
    stream = names.archive_stream
    try:
        end = until if isinstance(until, int) else await _end(reader, stream, _past(until))
        if end is None:
            return
        start = since if isinstance(since, int) else await _first(reader, stream, since, end)
        if start >= end:
            return
        async for message in _read(reader, stream, start, end):
            yield message
    finally:
        await reader.close()


async def window_end(
    connection: AbstractConnection, names: Names, until: datetime | None = None
) -> int | None:
    """The offset where a window to ``until`` (else to now) stops, exclusive: what a job
    records so that events written after it was made are not its business; None when the
    archive is empty."""
    reader = await _open(connection)
    try:
        return await _end(reader, names.archive_stream, _past(until))
    finally:
        await reader.close()


def lost(error: Unavailable) -> bool:
    """Whether ``error`` says the reader's connection to RabbitMQ went away (the socket, or
    RabbitMQ closing it): asking again later may work."""
    return isinstance(error, ReaderClosed) and error.code in (0, 320)


async def _open(connection: AbstractConnection) -> StreamReader:
    """A reader connected to where ``connection`` goes: its URL, TLS context and name."""
    url: Any = getattr(connection, "url", None)
    options = dict(connection.kwargs)
    name = str((options.get("client_properties") or {}).get("connection_name") or "router")
    try:
        return await StreamReader.open(
            AmqpUrl.parse(str(url)),
            name=f"{name} (archive reader)",
            timeout=OPEN_TIMEOUT,
            prefetch=PREFETCH,
            tls=options.get("context"),
        )
    except Exception as error:
        raise Unavailable(f"cannot open a connection to read the archive: {error}") from None


def _past(until: datetime | None) -> datetime | None:
    """``until``, or None (the end as it is now) when it is not past: a probe at a future
    moment would wait for it."""
    return None if until is None or until >= datetime.now(UTC) else until


async def _end(reader: StreamReader, stream: str, until: datetime | None) -> int | None:
    """The offset where the window stops (exclusive); None when the stream is empty."""
    if until is not None:
        first = await _probe(reader, stream, until, whole_chunk=False)
        if first is not None:
            return first
    last = await _probe(reader, stream, "last", whole_chunk=True)
    return None if last is None else last + 1


async def _first(reader: StreamReader, stream: str, since: datetime, end: int) -> int:
    """The offset of the first message at or after ``since`` (``end`` when there is none)."""
    first = await _probe(reader, stream, since, whole_chunk=False)
    return end if first is None else first


async def _probe(
    reader: StreamReader, stream: str, at: datetime | str, *, whole_chunk: bool
) -> int | None:
    """The offset of the first message at ``at`` (the highest of its chunk if
    ``whole_chunk``); None when none comes within :data:`PROBE_TIMEOUT`."""
    await _consume(reader, stream, at)
    try:
        try:
            highest = Archived.of(await reader.next(PROBE_TIMEOUT)).offset
        except TimeoutError:
            return None
        if whole_chunk:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_TIMEOUT):
                    while True:
                        highest = max(highest, Archived.of(await reader.next(CHUNK_QUIET)).offset)
        return highest
    except TimeoutError:  # (the chunk's quiet gap)
        return highest
    finally:
        await reader.cancel()


async def _read(
    reader: StreamReader, stream: str, start: int, end: int
) -> AsyncGenerator[Archived, None]:
    """The messages from offset ``start`` to ``end`` (exclusive)."""
    await _consume(reader, stream, start)
    while True:
        try:
            archived = Archived.of(await reader.next(NEXT_TIMEOUT))
        except TimeoutError:
            raise Unavailable(f"the archive {stream} stopped answering") from None
        if archived.offset >= end:
            return
        yield archived
        if archived.offset + 1 >= end:
            return


async def _consume(reader: StreamReader, stream: str, at: datetime | str | int) -> None:
    """Attach to the archive stream at ``at``; :class:`Unavailable` when it does not exist."""
    try:
        await reader.consume(stream, at)
    except ReaderClosed as error:
        if error.code == _NOT_FOUND:
            raise Unavailable(f"no archive {stream} (is ROUTER_ARCHIVE off?): {error}") from None
        raise


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


__all__ = [
    "NEXT_TIMEOUT",
    "PREFETCH",
    "PROBE_TIMEOUT",
    "Archived",
    "lost",
    "read_window",
    "window_end",
]
