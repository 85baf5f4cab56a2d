"""The ingress's publish-only AMQP connection, against the real RabbitMQ.

First the bytes: what :mod:`router.amqp.frames` writes must read back, through pamqp's own
unmarshaller, as the publish we meant. Then the outcomes a publish can have, each produced
by the broker itself: ack, pipelined acks, a return (mandatory and unroutable), a nack (a
full queue refusing publishes), a channel error, the broker closing the connection, a
refused login, a content header too large for a frame. Last, through a proxy
(tests/amqp_proxy.py) that splits frames and plays a server offering other heartbeats: the
publisher still works, keeps a heartbeat by default, and reads its URL as the connection that
declares the topology reads it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection
from pamqp import frame as pamqp_frame
from pamqp.body import ContentBody
from pamqp.commands import Basic, Connection
from pamqp.header import ContentHeader
from yarl import URL

from router.amqp.confirms import ConnectionLost, HeaderTooLarge, Nacked, Returned
from router.amqp.frames import Properties, content_header, publish_frames, publish_method
from router.amqp.nodes import connect_first
from router.amqp.publisher import FRAME_MAX, WRITE_BATCH, ConfirmPublisher
from router.amqp.url import DEFAULT_HEARTBEAT
from router.contract.names import Names
from tests.amqp_proxy import AmqpProxy
from tests.conftest import AMQP_URL, rabbitmqctl

PROPERTIES = Properties(
    content_type="application/json",
    message_id="3f" * 32,
    timestamp=1_764_000_000,
    headers={"ce-type": "sms.sent", "ce-company": "acme-ü", "received-at": 1_764_000_000_123},
)


def unmarshal_all(data: bytes) -> list[object]:
    frames: list[object] = []
    offset = 0
    while offset < len(data):
        used, channel, value = pamqp_frame.unmarshal(data[offset:])
        assert channel == 1
        frames.append(value)
        offset += used
    return frames


# -- the bytes ------------------------------------------------------------------------------


def test_a_publish_reads_back_through_pamqp_as_the_message_meant() -> None:
    method = publish_method(1, "attentive.events", "sms.sent.acme", mandatory=True)
    body = b'{"type":"sms.sent"}'

    frames = unmarshal_all(b"".join(publish_frames(method, 1, body, PROPERTIES, 131_072)))

    publish, header, content = frames
    assert isinstance(publish, Basic.Publish)
    assert (publish.exchange, publish.routing_key) == ("attentive.events", "sms.sent.acme")
    assert publish.mandatory is True and publish.immediate is False
    assert isinstance(header, ContentHeader) and header.body_size == len(body)
    props = header.properties
    assert props.content_type == "application/json"
    assert props.delivery_mode == 2
    assert props.message_id == PROPERTIES.message_id
    assert props.timestamp == datetime.fromtimestamp(PROPERTIES.timestamp, tz=UTC)
    assert props.headers == PROPERTIES.headers
    assert isinstance(content, ContentBody) and content.value == body


def test_a_header_name_reads_back_whatever_type_its_value_has_in_each_message() -> None:
    method = publish_method(1, "", "a-queue", mandatory=False)
    values: list[object] = ["text", 7, "ünïcode", -(2**63), "", 2**63 - 1]

    for value in values:
        properties = Properties("application/json", "m", 0, {"x-changing": value, "x-n": 1})
        frames = unmarshal_all(b"".join(publish_frames(method, 1, b"{}", properties, 4096)))
        header = frames[1]
        assert isinstance(header, ContentHeader)
        assert header.properties.headers == {"x-changing": value, "x-n": 1}


def test_a_body_larger_than_a_frame_is_split_and_headers_of_any_type_still_encode() -> None:
    method = publish_method(1, "", "a-queue", mandatory=False)
    body = bytes(range(256)) * 40  # 10,240 bytes
    properties = Properties(
        content_type="application/octet-stream",
        message_id="m",
        timestamp=0,
        headers={"nested": {"list": [1, "two"]}, "flag": True},  # pamqp encodes these
    )

    frames = unmarshal_all(b"".join(publish_frames(method, 1, body, properties, 4096)))

    publish, header, *contents = frames
    assert isinstance(publish, Basic.Publish) and publish.mandatory is False
    assert isinstance(header, ContentHeader) and header.properties.headers == properties.headers
    assert len(contents) == 3  # 4,096 minus 8 bytes of framing per frame
    assert b"".join(c.value for c in contents if isinstance(c, ContentBody)) == body


def test_names_longer_than_an_amqp_short_string_are_refused() -> None:
    with pytest.raises(ValueError, match="short string"):
        publish_method(1, "x" * 256, "key", mandatory=True)
    too_long_id = replace(PROPERTIES, message_id="é" * 128)  # 256 bytes of UTF-8
    with pytest.raises(ValueError, match="short string"):
        publish_frames(publish_method(1, "", "q", mandatory=True), 1, b"{}", too_long_id, 4096)


# -- the outcomes, from the real broker ---------------------------------------------------


@pytest.fixture
async def publisher(test_id: str) -> AsyncIterator[ConfirmPublisher]:
    opened = await ConfirmPublisher.open(AMQP_URL, name=test_id, confirm_timeout=5, timeout=10)
    yield opened
    await opened.close()


@pytest.fixture
async def queue_name(names: Names, amqp: AbstractRobustConnection) -> AsyncIterator[str]:
    name = f"{names.prefix}.publisher"
    channel = await amqp.channel()
    await channel.declare_queue(name, arguments={"x-queue-type": "quorum"}, durable=True)
    yield name
    await channel.queue_delete(name)


@pytest.mark.broker
async def test_an_acked_publish_arrives_with_its_body_and_properties(
    publisher: ConfirmPublisher, queue_name: str, amqp: AbstractRobustConnection
) -> None:
    await publisher.publish("", queue_name, b"hello", PROPERTIES)

    channel = await amqp.channel()
    queue = await channel.get_queue(queue_name)
    message = await queue.get(timeout=5)
    assert message is not None
    assert message.body == b"hello"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == PROPERTIES.message_id
    assert {k: v for k, v in message.headers.items() if k != "x-delivery-count"} == dict(
        PROPERTIES.headers
    )
    assert message.timestamp == datetime.fromtimestamp(PROPERTIES.timestamp, tz=UTC)
    await message.ack()


@pytest.mark.broker
async def test_thousands_in_flight_are_each_confirmed(
    publisher: ConfirmPublisher, queue_name: str, amqp: AbstractRobustConnection
) -> None:
    confirms = [publisher.publish("", queue_name, b"%d" % i, PROPERTIES) for i in range(2000)]
    assert publisher.in_flight > 0  # all written before any confirm was read

    await asyncio.gather(*confirms)

    assert publisher.in_flight == 0
    channel = await amqp.channel()
    declared = await channel.declare_queue(queue_name, passive=True)
    assert declared.declaration_result.message_count == 2000


class _CountingWrites:
    """The publisher's transport, counting the messages in each ``writelines``."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.messages_per_write: list[int] = []

    def writelines(self, frames: list[bytes]) -> None:
        written = unmarshal_all(b"".join(frames))
        self.messages_per_write.append(sum(isinstance(f, Basic.Publish) for f in written))
        self._transport.writelines(frames)

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


@pytest.mark.broker
async def test_a_burst_goes_out_in_batches_the_broker_can_start_on(
    publisher: ConfirmPublisher, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = _CountingWrites(publisher._transport)  # type: ignore[arg-type]
    monkeypatch.setattr(publisher, "_transport", writes)
    burst = 2 * WRITE_BATCH + 3

    confirms = [publisher.publish("", queue_name, b"%d" % i, PROPERTIES) for i in range(burst)]
    # Within the turn, the full batches are already written; the rest waits for its end.
    assert writes.messages_per_write == [WRITE_BATCH, WRITE_BATCH]

    await asyncio.gather(*confirms)
    assert writes.messages_per_write == [WRITE_BATCH, WRITE_BATCH, 3]


@pytest.mark.broker
async def test_a_mandatory_message_no_queue_takes_is_returned(
    publisher: ConfirmPublisher, queue_name: str
) -> None:
    nowhere = f"{queue_name}.does-not-exist"
    landed = publisher.publish("", queue_name, b"kept", PROPERTIES)
    returned = publisher.publish("", nowhere, b"lost", PROPERTIES)  # same message id

    await landed
    with pytest.raises(Returned, match="unroutable"):
        await returned
    assert publisher.is_open  # a return is no channel error


@pytest.mark.broker
async def test_among_many_in_flight_exactly_the_unroutable_ones_fail(
    publisher: ConfirmPublisher, queue_name: str
) -> None:
    nowhere = f"{queue_name}.does-not-exist"
    targets = [nowhere if i % 10 == 3 else queue_name for i in range(500)]
    confirms = [
        publisher.publish("", target, b"x", replace(PROPERTIES, message_id=f"m{i % 7}"))
        for i, target in enumerate(targets)
    ]

    outcomes = await asyncio.gather(*confirms, return_exceptions=True)

    results = zip(targets, outcomes, strict=True)
    failed = [target for target, outcome in results if outcome is not None]
    assert all(isinstance(o, Returned) for o in outcomes if o is not None)
    assert failed == [nowhere] * 50


def _returned_then_acked(queue: str, message_id: str, up_to: int) -> bytes:
    """What RabbitMQ writes when it returns a message published to ``queue`` (through the
    default exchange) and then acks everything up to a tag."""
    frames = (
        Basic.Return(312, "NO_ROUTE", "", queue),
        ContentHeader(0, 1, Basic.Properties(message_id=message_id)),
        ContentBody(b"x"),
        Basic.Ack(up_to, multiple=True),
    )
    return b"".join(pamqp_frame.marshal(frame, 1) for frame in frames)


@pytest.mark.broker
async def test_a_return_settled_by_a_multiple_ack_fails_its_own_message_only(
    publisher: ConfirmPublisher, queue_name: str
) -> None:
    # RabbitMQ returned message 4 and then acked 1..12 at once (the CI run that found this
    # had 500 in flight). Message 11 has the same id but went to the queue: it must succeed.
    nowhere = f"{queue_name}.does-not-exist"
    targets = [nowhere if i == 3 else queue_name for i in range(12)]
    ids = ["same" if i in (3, 10) else f"m{i}" for i in range(12)]
    confirms = [
        publisher.publish("", target, b"x", replace(PROPERTIES, message_id=message_id))
        for target, message_id in zip(targets, ids, strict=True)
    ]

    # Replayed before the broker's own answers are read (they then find nothing waiting).
    publisher.data_received(_returned_then_acked(nowhere, "same", 12))

    outcomes = await asyncio.gather(*confirms, return_exceptions=True)
    assert [i for i, outcome in enumerate(outcomes) if outcome is not None] == [3]
    assert isinstance(outcomes[3], Returned)


@pytest.mark.broker
async def test_when_a_return_could_be_either_of_two_waiting_messages_both_fail(
    publisher: ConfirmPublisher, queue_name: str
) -> None:
    # Same exchange, routing key and message id (an event and its retry in flight at once):
    # a return cannot say which it was, so neither may be answered as stored.
    first = publisher.publish("", queue_name, b"x", PROPERTIES)
    second = publisher.publish("", queue_name, b"x", PROPERTIES)

    publisher.data_received(_returned_then_acked(queue_name, PROPERTIES.message_id, 2))

    for confirm in (first, second):
        with pytest.raises(Returned):
            await confirm


@pytest.mark.broker
async def test_a_queue_refusing_publishes_nacks_them(
    publisher: ConfirmPublisher, names: Names, amqp: AbstractRobustConnection
) -> None:
    name = f"{names.prefix}.full"
    channel = await amqp.channel()
    arguments = {"x-max-length": 1, "x-overflow": "reject-publish"}
    await channel.declare_queue(name, arguments=arguments)
    try:
        await publisher.publish("", name, b"first", PROPERTIES)
        with pytest.raises(Nacked):
            await publisher.publish("", name, b"second", PROPERTIES)
        assert publisher.is_open
    finally:
        await channel.queue_delete(name)


@pytest.mark.broker
async def test_a_channel_error_fails_the_publish_and_closes_the_connection(
    publisher: ConfirmPublisher,
) -> None:
    with pytest.raises(ConnectionLost, match="404"):
        await publisher.publish(f"no-such-exchange-{uuid.uuid4().hex}", "k", b"x", PROPERTIES)

    async with asyncio.timeout(10):
        reason = await publisher.wait_closed()
    assert "404" in reason
    with pytest.raises(ConnectionLost):
        publisher.publish("", "any", b"x", PROPERTIES)


@pytest.mark.broker
async def test_the_broker_closing_the_connection_fails_what_waits_and_says_why() -> None:
    name = f"publisher-{uuid.uuid4().hex}"
    publisher = await ConfirmPublisher.open(AMQP_URL, name=name, confirm_timeout=5, timeout=10)

    await asyncio.to_thread(close_connection_named, name, "closed by the test")

    async with asyncio.timeout(10):
        reason = await publisher.wait_closed()
    assert "320" in reason and "closed by the test" in reason
    assert not publisher.is_open


@pytest.mark.broker
async def test_a_refused_login_fails_the_open() -> None:
    wrong = str(URL(AMQP_URL).with_password("not-the-password"))
    with pytest.raises(ConnectionLost, match=r"ACCESS_REFUSED|403"):
        await ConfirmPublisher.open(wrong, name="wrong password", confirm_timeout=1, timeout=10)


def close_connection_named(name: str, reason: str) -> None:
    listed = rabbitmqctl("-q", "list_connections", "pid", "client_properties", "--no-table-headers")
    pids = [line.split("\t")[0] for line in listed.splitlines() if f'"{name}"' in line]
    assert len(pids) == 1, f"no single connection named {name!r}: {listed[:500]}"
    rabbitmqctl("close_connection", pids[0], reason)


# -- a content header larger than a frame ----------------------------------------------------


def with_header_frame_of(size: int) -> Properties:
    """PROPERTIES plus a padding header, so that the content header frame is ``size`` bytes."""
    padded = replace(PROPERTIES, headers={**PROPERTIES.headers, "padding": ""})
    short = len(content_header(1, 1, padded))
    return replace(PROPERTIES, headers={**PROPERTIES.headers, "padding": "p" * (size - short)})


@pytest.mark.broker
async def test_a_header_over_frame_max_is_refused_and_the_connection_carries_on(
    publisher: ConfirmPublisher, queue_name: str, amqp: AbstractRobustConnection
) -> None:
    # Given publishes in flight, and a header exactly as large as RabbitMQ's frame_max allows
    before = [publisher.publish("", queue_name, b"before", PROPERTIES) for _ in range(20)]
    fits = publisher.publish("", queue_name, b"fits", with_header_frame_of(FRAME_MAX))

    # When a message's content header is one byte larger than a frame may be
    with pytest.raises(HeaderTooLarge, match=r"content header is 131073 bytes.*131072"):
        publisher.publish("", queue_name, b"too large", with_header_frame_of(FRAME_MAX + 1))
    after = publisher.publish("", queue_name, b"after", PROPERTIES)

    # Then it was never written (RabbitMQ would have closed the connection with 501 for it):
    # everything else, the largest header that fits included, is confirmed and in the queue
    await asyncio.gather(*before, fits, after)
    assert publisher.is_open
    channel = await amqp.channel()
    declared = await channel.declare_queue(queue_name, passive=True)
    assert declared.declaration_result.message_count == 22


# -- through a proxy -------------------------------------------------------------------------


@pytest.mark.broker
async def test_publishes_are_confirmed_when_every_frame_arrives_in_pieces(
    queue_name: str, amqp: AbstractRobustConnection
) -> None:
    # Given a path that writes everything, both ways, five bytes at a time
    async with AmqpProxy.running(piece=5) as proxy:
        publisher = await ConfirmPublisher.open(
            proxy.url(AMQP_URL), name="in pieces", confirm_timeout=10, timeout=10
        )
        try:
            # When a hundred messages are published at once
            confirms = [
                publisher.publish("", queue_name, b"%d" % i, PROPERTIES) for i in range(100)
            ]
            await asyncio.gather(*confirms)
        finally:
            await publisher.close()
        # Then the frames really went in pieces, and every message was confirmed and is in
        # the queue
        one_message = publish_frames(
            publish_method(1, "", queue_name, mandatory=True), 1, b"0", PROPERTIES, FRAME_MAX
        )
        assert proxy.writes > 100 * len(b"".join(one_message)) // 5
    channel = await amqp.channel()
    declared = await channel.declare_queue(queue_name, passive=True)
    assert declared.declaration_result.message_count == 100


@pytest.mark.broker
@pytest.mark.parametrize(
    ("offered", "query", "kept"),
    [
        (0, {}, DEFAULT_HEARTBEAT),  # a server offering none: the client's default, 60 s
        (30, {}, 30),  # the lower of the two
        (60, {"heartbeat": "7"}, 7),
        (0, {"heartbeat": "0"}, 0),  # only when neither side wants one
    ],
)
async def test_the_heartbeat_is_the_lower_one_that_is_not_zero(
    offered: int, query: dict[str, str], kept: int
) -> None:
    # Given a server offering ``offered`` seconds and a URL asking for ``query``
    async with AmqpProxy.running(offer_heartbeat=offered) as proxy:
        url = str(URL(proxy.url(AMQP_URL)).with_query(query))

        # When the publisher connects
        publisher = await ConfirmPublisher.open(url, name="tune", confirm_timeout=5, timeout=10)
        await publisher.close()

    # Then its TuneOk says the heartbeat both keep
    (tune_ok,) = proxy.tune_oks()
    assert tune_ok.heartbeat == kept


@pytest.mark.broker
async def test_an_idle_publisher_sends_heartbeats(queue_name: str) -> None:
    # Given a publisher with a one-second heartbeat, through a proxy that records its frames
    async with AmqpProxy.running() as proxy:
        url = str(URL(proxy.url(AMQP_URL)).with_query(heartbeat="1"))
        publisher = await ConfirmPublisher.open(
            url, name="heartbeat", confirm_timeout=5, timeout=10
        )
        try:
            # When it has nothing to publish, it still sends heartbeat frames
            await proxy.until(lambda: proxy.client_heartbeats() >= 3, timeout=5)
            # Then RabbitMQ keeps the connection, and it publishes
            await publisher.publish("", queue_name, b"still here", PROPERTIES)
        finally:
            await publisher.close()


@pytest.mark.broker
@pytest.mark.parametrize(
    "template",
    [
        "amqp://guest:guest@127.0.0.1:{port}/%2F?heartbeat=7&name=same-for-both&timeout=3",
        "amqp://127.0.0.1:{port}",  # no user: guest, as aiormq
        "amqp://guest@127.0.0.1:{port}/?auth=plain",  # no password: guest, as aiormq
    ],
)
async def test_both_connections_read_the_same_url_the_same_way(template: str) -> None:
    async with AmqpProxy.running() as proxy:
        url = template.format(port=proxy.port)

        # When the topology's connection (aio-pika) and the publisher open the same URL
        connection, _ = await connect_first(url, name="default name")
        await connection.close()
        publisher = await ConfirmPublisher.open(
            url, name="default name", confirm_timeout=5, timeout=10
        )
        await publisher.close()

    # Then both logged in as the same user with the same mechanism, opened the same vhost,
    # kept the same heartbeat and gave the same connection name
    methods = proxy.client_methods()
    start_oks = [m for m in methods if isinstance(m, Connection.StartOk)]
    opens = [m for m in methods if isinstance(m, Connection.Open)]
    seen = [
        (
            start_ok.mechanism,
            start_ok.response.split("\0")[1],  # the user (the password stays unprinted)
            start_ok.client_properties["connection_name"],
            tune_ok.heartbeat,
            open_.virtual_host,
        )
        for start_ok, tune_ok, open_ in zip(start_oks, proxy.tune_oks(), opens, strict=True)
    ]
    assert len(seen) == 2
    assert seen[0] == seen[1]
    assert seen[0][1] == "guest" and seen[0][4] == "/"
