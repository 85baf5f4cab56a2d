"""The read-only stream connection (router/amqp/stream_reader.py), against the real RabbitMQ.

First the bytes: a content header as pamqp writes it, with every property, reads back as the
four the reader keeps; a truncated one is refused. Then a stream of the test's own, read:
every message in order with its properties and offset, a body larger than a frame, an empty
one, more messages than the prefetch (the acks make room), the same through a proxy that cuts
every write into a few bytes. Then the endings: a stream that does not exist, a consumer
cancelled and attached again on one connection, RabbitMQ closing the connection mid-read (the
messages already here are still read, then the reason), the socket cut.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection
from pamqp.commands import Basic
from pamqp.common import FieldTable
from pamqp.header import ContentHeader
from yarl import URL

from router.amqp.deliveries import Delivery, Malformed, read_content_header
from router.amqp.stream_reader import ReaderClosed, StreamReader
from router.errors import Unavailable
from tests.amqp_proxy import AmqpProxy
from tests.conftest import AMQP_URL, rabbitmqctl

#: Larger than RabbitMQ's frame_max (131,072): the broker sends it in three body frames.
LARGE = bytes(range(256)) * 1200


def header_payload(properties: Basic.Properties, body_size: int) -> bytes:
    """A content header frame's payload as pamqp writes it."""
    return ContentHeader(0, body_size, properties).marshal()


def test_a_content_header_with_every_property_reads_as_the_four_kept() -> None:
    properties = Basic.Properties(
        content_type="application/json",
        content_encoding="gzip",
        headers={"ce-type": "sms.sent", "n": 7, "nested": {"a": [1, "b"]}},
        delivery_mode=2,
        priority=5,
        correlation_id="c",
        reply_to="r",
        expiration="1000",
        message_id="m-1",
        timestamp=datetime(2026, 12, 7, 12, 0, tzinfo=UTC),
        message_type="t",
        user_id="guest",
        app_id="a",
    )
    delivery = Delivery(1, "tag", "", "key")
    read_content_header(header_payload(properties, 42), delivery)
    assert (delivery.body_size, delivery.content_type, delivery.message_id) == (
        42,
        "application/json",
        "m-1",
    )
    assert delivery.timestamp == int(datetime(2026, 12, 7, 12, 0, tzinfo=UTC).timestamp())
    assert delivery.headers == {"ce-type": "sms.sent", "n": 7, "nested": {"a": [1, "b"]}}


@pytest.mark.parametrize(
    "headers",
    [
        {"ce-type": "sms.sent", "company": "acme-ü", "n": 7, "big": 2**40, "neg": -1, "ok": True},
        {"ce-type": "sms.sent", "when": datetime(2026, 12, 7, tzinfo=UTC), "n": 1.5},
        {},
    ],
    ids=["the-router's-kinds", "other-kinds-through-pamqp", "empty"],
)
def test_a_header_table_reads_as_pamqp_reads_it(headers: FieldTable) -> None:
    payload = header_payload(Basic.Properties(headers=headers, message_id="m"), 0)
    delivery = Delivery(1, "tag", "", "key")
    read_content_header(payload, delivery)
    pamqp_read = ContentHeader()
    pamqp_read.unmarshal(payload)
    assert delivery.headers == (pamqp_read.properties.headers or {})
    assert delivery.message_id == "m"


def test_a_truncated_content_header_is_refused() -> None:
    payload = header_payload(Basic.Properties(message_id="m-1", headers={"a": "b"}), 3)
    with pytest.raises(Malformed):
        read_content_header(payload[:-3], Delivery(1, "tag", "", "key"))


@pytest.fixture
async def stream(amqp: AbstractRobustConnection) -> AsyncIterator[str]:
    """A stream of this test's own, deleted afterwards."""
    name = f"t-stream-reader-{uuid.uuid4().hex[:12]}"
    channel = await amqp.channel()
    await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "stream"})
    yield name
    await channel.queue_delete(name)


async def publish(amqp: AbstractRobustConnection, stream: str, bodies: list[bytes]) -> None:
    channel = await amqp.channel()  # publisher confirms: each is in the stream when this returns
    for n, body in enumerate(bodies):
        message = aio_pika.Message(
            body,
            message_id=f"m-{n}",
            content_type="application/octet-stream",
            timestamp=datetime(2026, 12, 7, 12, 0, n, tzinfo=UTC),
            headers={"n": n},
        )
        await channel.default_exchange.publish(message, routing_key=stream)
    await channel.close()


async def read_all(reader: StreamReader, count: int) -> list[Delivery]:
    return [await reader.next(timeout=10) for _ in range(count)]


@pytest.mark.parametrize("through_proxy", [False, True], ids=["direct", "split-into-pieces"])
async def test_a_stream_reads_back_in_order_whatever_the_frames(
    amqp: AbstractRobustConnection, stream: str, through_proxy: bool
) -> None:
    """Given a large body, an empty one and more messages than the prefetch, when read from
    the first offset (directly, or through a proxy writing 7 bytes at a time), then every
    message comes back in order, byte for byte, with its properties and stream offset."""
    bodies = [LARGE, b"", *(f"event {n}".encode() for n in range(2, 40))]
    await publish(amqp, stream, bodies)
    async with AmqpProxy.running(piece=7) as proxy:
        url = proxy.url(AMQP_URL) if through_proxy else AMQP_URL
        reader = await StreamReader.open(url, name="test-reader", timeout=10, prefetch=10)
        try:
            await reader.consume(stream, "first")
            got = await read_all(reader, len(bodies))
        finally:
            await reader.close()
    assert [d.body for d in got] == bodies
    assert [d.message_id for d in got] == [f"m-{n}" for n in range(len(bodies))]
    assert [d.headers["x-stream-offset"] for d in got] == list(range(len(bodies)))
    assert [d.headers["n"] for d in got] == list(range(len(bodies)))
    assert got[3].timestamp == int(datetime(2026, 12, 7, 12, 0, 3, tzinfo=UTC).timestamp())
    assert got[0].content_type == "application/octet-stream"
    assert got[0].routing_key == stream


async def test_a_stream_that_does_not_exist_is_unavailable_with_404() -> None:
    reader = await StreamReader.open(AMQP_URL, name="test-reader", timeout=10)
    try:
        with pytest.raises(ReaderClosed, match="NOT_FOUND") as raised:
            await reader.consume(f"t-no-such-stream-{uuid.uuid4().hex}", "first")
        assert raised.value.code == 404
        assert isinstance(raised.value, Unavailable)
        with pytest.raises(ReaderClosed):  # the reader is done for
            await reader.next(timeout=1)
    finally:
        await reader.close()


async def test_one_connection_attaches_again_after_a_cancel_and_leaves_no_consumer(
    amqp: AbstractRobustConnection, stream: str
) -> None:
    """Given 30 messages, when a consumer at the first takes 2 and is cancelled, then one at
    offset 25 gets 25 onwards (nothing of the first), a wait past the end times out, and once
    closed the stream has no consumer."""
    await publish(amqp, stream, [f"{n}".encode() for n in range(30)])
    reader = await StreamReader.open(AMQP_URL, name="test-reader", timeout=10, prefetch=10)
    try:
        await reader.consume(stream, "first")
        assert [d.body for d in await read_all(reader, 2)] == [b"0", b"1"]
        await reader.cancel()
        await reader.consume(stream, 25)
        assert [d.body for d in await read_all(reader, 5)] == [b"25", b"26", b"27", b"28", b"29"]
        with pytest.raises(TimeoutError):
            await reader.next(timeout=0.3)
    finally:
        await reader.close()
    channel = await amqp.channel()
    declared = await channel.declare_queue(stream, passive=True)
    assert declared.declaration_result.consumer_count == 0


async def test_a_connection_closed_by_rabbitmq_mid_read_says_why_after_what_arrived(
    amqp: AbstractRobustConnection, stream: str
) -> None:
    """Given a reader holding delivered messages, when RabbitMQ closes its connection, then
    the messages it already holds are read, and then the reader raises RabbitMQ's reason."""
    await publish(amqp, stream, [f"{n}".encode() for n in range(20)])
    name = f"test-reader-{uuid.uuid4().hex[:8]}"
    reader = await StreamReader.open(AMQP_URL, name=name, timeout=10, prefetch=50)
    try:
        await reader.consume(stream, "first")
        first = await reader.next(timeout=10)
        await asyncio.to_thread(close_connection_named, name, "closed by the test")
        rest: list[bytes] = []
        with pytest.raises(ReaderClosed, match="closed by the test") as raised:
            while True:
                rest.append((await reader.next(timeout=10)).body)
        assert raised.value.code == 320
    finally:
        await reader.close()
    assert [first.body, *rest] == [f"{n}".encode() for n in range(len(rest) + 1)]


async def test_a_cut_socket_fails_the_wait_at_once(
    amqp: AbstractRobustConnection, stream: str
) -> None:
    async with AmqpProxy.running() as proxy:
        reader = await StreamReader.open(proxy.url(AMQP_URL), name="test-reader", timeout=10)
        try:
            await reader.consume(stream, "first")
            waiting = asyncio.create_task(reader.next(timeout=30))
            await asyncio.sleep(0.1)
            proxy.drop()
            with pytest.raises(ReaderClosed, match="connection") as raised:
                await waiting
            assert raised.value.code == 0
        finally:
            await reader.close()


async def test_an_idle_reader_keeps_its_heartbeat_and_still_gets_what_comes(
    amqp: AbstractRobustConnection, stream: str
) -> None:
    """Given a reader with a one-second heartbeat waiting on an empty stream, when it has
    waited three seconds, then it sent heartbeats, RabbitMQ kept it, and a message published
    then arrives."""
    async with AmqpProxy.running() as proxy:
        url = str(URL(proxy.url(AMQP_URL)).with_query(heartbeat="1"))
        reader = await StreamReader.open(url, name="test-reader", timeout=10)
        try:
            await reader.consume(stream, "next")
            with pytest.raises(TimeoutError):
                await reader.next(timeout=3)
            assert proxy.client_heartbeats() >= 3
            await publish(amqp, stream, [b"late"])
            assert (await reader.next(timeout=10)).body == b"late"
        finally:
            await reader.close()


async def test_a_silent_server_fails_the_reader_after_two_heartbeats(stream: str) -> None:
    """Given a reader with a one-second heartbeat, when nothing reaches it any more (a
    half-open path), then its wait ends with the missed heartbeats, not at its timeout."""
    async with AmqpProxy.running() as proxy:
        url = str(URL(proxy.url(AMQP_URL)).with_query(heartbeat="1"))
        reader = await StreamReader.open(url, name="test-reader", timeout=10)
        try:
            await reader.consume(stream, "first")
            proxy.freeze(to_client=True)
            with pytest.raises(ReaderClosed, match="missed two heartbeats"):
                await reader.next(timeout=30)
        finally:
            reader.abort()


def close_connection_named(name: str, reason: str) -> None:
    listed = rabbitmqctl("-q", "list_connections", "pid", "client_properties", "--no-table-headers")
    pids = [line.split()[0] for line in listed.splitlines() if name in line]
    assert len(pids) == 1, listed
    rabbitmqctl("close_connection", pids[0], reason)
