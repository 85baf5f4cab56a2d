"""The archive at size, for phase k (:mod:`bench.history_phase`): a stream filled with the
messages the ingress writes to it, its bytes on disk, and a search of its last events.

The stream is the router's archive in a namespace of the bench's own
(``bench-history-<uuid>``): ``<prefix>.archive``, declared with the default retention
(7 days, 20 GB: nothing leaves it during the phase), behind the fanout exchange
``<prefix>.ingress`` that the ingress publishes to. Here that exchange is bound to the stream
alone (not to the events exchange, whose alternate exchange would keep every event in the
unrouted queue), so nothing else at the broker fills up.

It is filled by a bare confirmed publisher (the router's :class:`ConfirmPublisher`, a window
of :data:`WINDOW` confirms outstanding), not through the HTTP ingress, with what the ingress
writes: each of the bench's realistic signed bodies (all 11 types x 4 companies, about 1 KiB)
made unique by a sequence number, so that each has a message id of its own (the SHA-256 of
the body), with the ingress's properties and headers (CloudEvents, company, subject key,
event time) and the event's routing key.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import orjson

from bench.common import (
    AMQP_URL,
    PAYLOAD_BYTES,
    SEQ,
    amqp_message,
    median,
    parsed,
    payload_templates,
)
from router.amqp import topology
from router.amqp.frames import Properties
from router.amqp.publisher import ConfirmPublisher
from router.amqp.stream_reader import StreamReader
from router.amqp.topology import Retention
from router.claims.model import EventPattern
from router.contract.names import (
    CLOUDEVENTS_PREFIX,
    EVENT_TIME_HEADER,
    SUBJECT_KEY_HEADER,
    Names,
)
from router.contract.ordering import SubjectKeys
from router.history.reader import NEXT_TIMEOUT
from router.history.search import Search, search_archive

#: Publishes waiting for their confirm at once while the stream is filled.
WINDOW = 512
#: Where RabbitMQ keeps its data (the node's folder holds ``stream/``); root may read it.
MNESIA_BASE = Path(os.environ.get("RABBITMQ_MNESIA_BASE", "/var/lib/rabbitmq/mnesia"))
#: The filtered search: one channel's types of one company (it reads the whole window).
FILTER_TYPE, FILTER_COMPANY = "sms.*", "acme-co"
#: Seconds into the whole second the last window is written from: its chunks all carry a
#: timestamp of that second or later (a chunk's timestamp is its arrival, in milliseconds).
SETTLE = 0.05
_CE_ID = f"{CLOUDEVENTS_PREFIX}id"
#: The sequence number's width in a body (its digits replace the zeros).
_DIGITS = 12


class ArchivedMessages:
    """The messages the ingress writes to the archive, numbered: message ``n`` is the ``n``-th
    body in turn of the templates, made unique by ``n``, with the ingress's properties."""

    def __init__(self, size: int = PAYLOAD_BYTES) -> None:
        keys = SubjectKeys(secrets.token_bytes(16))
        self._templates: list[tuple[bytes, bytes, str, dict[str, Any], int]] = []
        for template in payload_templates(size):
            body = orjson.dumps({**template, SEQ: "0" * _DIGITS})
            event = parsed(body)
            cut = body.rindex(b"0" * _DIGITS)
            headers: dict[str, Any] = dict(amqp_message(body, event).headers)
            subject = keys.key(event.type, event.company_id, template)
            if subject is not None:
                headers[SUBJECT_KEY_HEADER] = subject
            if event.timestamp_ms is not None:
                headers[EVENT_TIME_HEADER] = event.timestamp_ms
            second = (event.timestamp_ms or int(time.time() * 1000)) // 1000
            self._templates.append(
                (body[:cut], body[cut + _DIGITS :], event.routing_key, headers, second)
            )

    def message(self, n: int) -> tuple[str, bytes, Properties]:
        """Message ``n``: its routing key, body and properties."""
        head, tail, key, headers, second = self._templates[n % len(self._templates)]
        body = b"%s%0*d%s" % (head, _DIGITS, n, tail)
        message_id = hashlib.sha256(body).hexdigest()
        properties = Properties(
            content_type="application/json",
            message_id=message_id,
            timestamp=second,
            headers={**headers, _CE_ID: message_id},
        )
        return key, body, properties

    @property
    def body_bytes(self) -> float:
        """The mean size of a body (every template in turn)."""
        sizes = [len(head) + _DIGITS + len(tail) for head, tail, *_ in self._templates]
        return sum(sizes) / len(sizes)


@dataclass(frozen=True, slots=True)
class StreamDisk:
    """What one stream holds on the broker's disk: its segment and index files."""

    segment_bytes: int
    index_bytes: int
    #: Bytes the file system allocated for them (blocks), beside their apparent size.
    allocated_bytes: int
    files: int
    directory: str

    @property
    def total_bytes(self) -> int:
        return self.segment_bytes + self.index_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "segment_bytes": self.segment_bytes,
            "index_bytes": self.index_bytes,
            "total_bytes": self.total_bytes,
            "allocated_bytes": self.allocated_bytes,
            "files": self.files,
            "directory": self.directory,
        }


def stream_directory(stream: str, base: Path = MNESIA_BASE) -> Path | None:
    """The folder of ``stream`` under the broker's data (None when it cannot be found or
    read: a broker on another machine, a data folder this user may not read).

    RabbitMQ names it ``<vhost>_<name>_<nanoseconds>`` with every character other than
    letters, digits, ``-`` and ``_`` written ``_``."""
    vhost = unquote(urlsplit(AMQP_URL.split(",")[0]).path[1:]) or "/"
    prefix = re.sub(r"[^A-Za-z0-9_-]", "_", f"{vhost}_{stream}_")
    try:
        found = [
            folder
            for folder in base.glob("*/stream/*")
            if folder.name.startswith(prefix) and folder.name[len(prefix) :].isdigit()
        ]
    except OSError:
        return None
    return max(found, key=lambda folder: folder.name) if found else None


def stream_disk(stream: str, base: Path = MNESIA_BASE) -> StreamDisk | None:
    """The bytes ``stream`` holds on disk now (None: its folder is not found or readable)."""
    folder = stream_directory(stream, base)
    if folder is None:
        return None
    segment = index = allocated = files = 0
    try:
        for path in folder.iterdir():
            stat = path.stat()
            if path.suffix == ".segment":
                segment += stat.st_size
            elif path.suffix == ".index":
                index += stat.st_size
            else:
                continue
            allocated += stat.st_blocks * 512
            files += 1
    except OSError:
        return None
    return StreamDisk(segment, index, allocated, files, str(folder))


# -- the broker ------------------------------------------------------------------------------


async def declare(names: Names) -> None:
    """The router's topology, and the archive stream with the default retention behind the
    front exchange alone."""
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        await topology.declare(channel, names)
        stream = await channel.declare_queue(
            names.archive_stream, durable=True, arguments=Retention().arguments()
        )
        front = await channel.declare_exchange(
            names.ingress_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        await stream.bind(front)


async def fill(
    publisher: ConfirmPublisher,
    exchange: str,
    messages: ArchivedMessages,
    numbers: range,
    window: int = WINDOW,
) -> dict[str, Any]:
    """Publish messages ``numbers`` to ``exchange``, each confirmed, ``window`` at a time; the
    confirmed rate from the first publish to the last confirm."""
    slots = asyncio.Semaphore(window)
    waiting: set[asyncio.Future[None]] = set()

    def landed(future: asyncio.Future[None]) -> None:
        slots.release()
        waiting.discard(future)

    started = time.perf_counter()
    for n in numbers:
        await slots.acquire()
        key, body, properties = messages.message(n)
        future = publisher.publish(exchange, key, body, properties)
        waiting.add(future)
        future.add_done_callback(landed)
    await asyncio.gather(*waiting)
    took = time.perf_counter() - started
    return {
        "messages": len(numbers),
        "seconds": round(took, 3),
        "msgs_per_s": round(len(numbers) / took) if took > 0 else None,
    }


async def fill_to(
    publisher: ConfirmPublisher,
    names: Names,
    messages: ArchivedMessages,
    held: int,
    total: int,
    window: int,
) -> tuple[datetime, dict[str, Any]]:
    """Grow the stream from ``held`` messages to ``total``, the last ``window`` of them written
    from a whole second on (returned, with the confirmed rate of the whole fill).

    A stream is attached at the first chunk written at or after a timestamp, but AMQP 0-9-1
    carries that timestamp in whole seconds: a search from any other moment would also read
    what was written earlier in its second. So the fill waits for the next second to begin
    before the window, and the window's search starts at that second."""
    front = names.ingress_exchange
    before = await fill(publisher, front, messages, range(held, total - window))
    second = math.floor(time.time()) + 1
    await asyncio.sleep(second - time.time() + SETTLE)
    after = await fill(publisher, front, messages, range(total - window, total))
    took = before["seconds"] + after["seconds"]
    count = total - held
    rate = round(count / took) if took > 0 else None
    filled = {"messages": count, "seconds": round(took, 3), "msgs_per_s": rate}
    return datetime.fromtimestamp(second, UTC), filled


# -- the search ------------------------------------------------------------------------------


def searches(since: datetime, window: int) -> Iterator[tuple[str, Search]]:
    """The two searches of the last window: every event of it, and one channel's types of
    one company (which reads the whole window too, and returns a part)."""
    yield "all", Search(since=since, limit=window)
    pattern = EventPattern.parse(FILTER_TYPE)
    yield "filtered", Search(since=since, event_type=pattern, company=FILTER_COMPANY, limit=window)


#: The prefetch the archive's reader had when it read through aio-pika (kept, to compare).
AIO_PIKA_PREFETCH = 500


async def read_offsets(
    connection: aio_pika.abc.AbstractConnection, names: Names, start: int, count: int
) -> dict[str, Any]:
    """A bare aio-pika consumer reading ``count`` messages of the stream from offset ``start``
    under the prefetch the archive's reader had with aio-pika, acking each: the window's cost
    without the search around it (no probes of the window's ends, no filters, nothing kept).
    The deliveries it holds when it stops go with its channel (a stream takes no nack)."""
    channel = await connection.channel()
    read = 0
    enough = asyncio.Event()

    async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal read
        if read == count:
            return  # (past the window: left to the channel's close, never acked on it)
        read += 1
        if read == count:
            enough.set()
        await message.ack()

    try:
        await channel.set_qos(prefetch_count=AIO_PIKA_PREFETCH)
        stream = await channel.get_queue(names.archive_stream, ensure=False)
        tag = await stream.consume(take, arguments={"x-stream-offset": start})
        await asyncio.wait_for(enough.wait(), NEXT_TIMEOUT + count / 100)
        await stream.cancel(tag)
    finally:
        await channel.close()
    return {"scanned": read}


async def read_offsets_own(names: Names, start: int, count: int) -> dict[str, Any]:
    """:func:`read_offsets` with the router's own :class:`StreamReader` (its connection
    opened, attached at ``start``, ``count`` messages taken): what a search costs below
    its probes and filters."""
    reader = await StreamReader.open(AMQP_URL, name="bench bare stream reader", timeout=10)
    try:
        await reader.consume(names.archive_stream, start)
        for _ in range(count):
            await reader.next(NEXT_TIMEOUT)
    finally:
        await reader.close()
    return {"scanned": count}


async def _searched(
    connection: aio_pika.abc.AbstractConnection, names: Names, search: Search
) -> dict[str, Any]:
    found = await search_archive(connection, names, search)
    return {"scanned": found.scanned, "found": len(found.events), "more": found.more}


async def time_searches(
    names: Names, since: datetime, total: int, window: int, runs: int
) -> dict[str, Any]:
    """Each search of the last ``window`` of ``total`` events ``runs`` times on one connection
    (as the admin API holds one), and the bare read of the same offsets: the median and
    slowest seconds, and what each read and found."""
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    out: dict[str, Any] = {}
    async with connection:
        timed: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            name: functools.partial(_searched, connection, names, search)
            for name, search in searches(since, window)
        }
        timed["bare"] = functools.partial(read_offsets, connection, names, total - window, window)
        timed["reader"] = functools.partial(read_offsets_own, names, total - window, window)
        for name, action in timed.items():
            seconds: list[float] = []
            for _ in range(runs):
                started = time.perf_counter()
                facts = await action()
                seconds.append(time.perf_counter() - started)
            out[name] = {
                "seconds": round(median(seconds), 3),
                "max_seconds": round(max(seconds), 3),
                "runs": [round(s, 3) for s in seconds],
                **facts,
            }
    return out


__all__ = [
    "WINDOW",
    "ArchivedMessages",
    "StreamDisk",
    "declare",
    "fill",
    "fill_to",
    "read_offsets",
    "read_offsets_own",
    "stream_directory",
    "stream_disk",
    "time_searches",
]
