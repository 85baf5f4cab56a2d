"""The machine's RabbitMQ goes away or raises an alarm while events stream in.

The tests that stop and alarm the local node itself (``rabbitmqctl``) are marked slow and
always restore it. The others put a proxy (tests/amqp_proxy.py) between the router and the
node, and freeze it to make a half-open path. The promise under test: no 2xx for an event
the broker did not confirm, and the ingress recovers on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aio_pika
import pytest
import structlog
from aio_pika.abc import AbstractRobustConnection

from router.amqp.broker import Broker
from router.amqp.frames import Properties
from router.contract.examples import example_body
from router.contract.names import WEBHOOK_PATH, Names
from router.errors import PublishFailed
from router.ingress.metrics import PAGE_MAX_AGE
from tests.amqp_proxy import AmqpProxy
from tests.conftest import AMQP_URL, Client, TapFactory, rabbitmqctl, signed, take
from tests.probes import internal
from tests.streams import Post, Stream

pytestmark = [pytest.mark.broker]

URL = WEBHOOK_PATH
IN_FLIGHT = "attentive_router_publishes_in_flight"


async def ctl(*args: str) -> str:
    return await asyncio.to_thread(rabbitmqctl, *args)


@pytest.fixture
def node_restored() -> Iterator[None]:
    """Whatever a test does to the node, it is running with its app started afterwards."""
    yield
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup", "--timeout", "60")


async def wait_ready(ingress: Client, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while (await internal(ingress, "/readyz")).status != 200:
            await asyncio.sleep(0.1)


async def most_in_flight(ingress: Client, request: asyncio.Task[object]) -> float:
    """The most publishes /metrics said were waiting for a confirm while ``request`` ran."""
    most = 0.0
    while not request.done():
        text = await (await internal(ingress, "/metrics")).text()
        (gauge,) = [g for g in text.splitlines() if g.startswith(IN_FLIGHT + " ")]
        most = max(most, float(gauge.split()[1]))
        await asyncio.sleep(0.05)
    return most


def posting(ingress: Client) -> Post:
    async def post(body: bytes) -> int:
        return (await ingress.post(URL, data=body, headers=signed(body))).status

    return post


@pytest.mark.slow
async def test_broker_stopped_mid_stream_no_2xx_without_confirm_and_recovery(
    ingress: Client, tap_factory: TapFactory, node_restored: None
) -> None:
    # Given events streaming through the ingress into a bound queue
    tap = await tap_factory("#")
    queue_name = tap.queue.name
    stream = Stream(posting(ingress))
    async with stream.running():
        await stream.until(200, at_least=50)

        # When the broker's app stops mid-stream
        await ctl("stop_app")
        # Then the ingress answers 503 (not 2xx) and is not ready
        failed_before = stream.count(503)
        await stream.until(503, at_least=failed_before + 20)
        assert (await internal(ingress, "/readyz")).status == 503

        # When the broker comes back, the ingress reconnects by itself and accepts again
        await ctl("start_app")
        await ctl("await_startup", "--timeout", "60")
        await wait_ready(ingress, timeout=60)
        accepted_before = stream.count(200)
        await stream.until(200, at_least=accepted_before + 50)

    # Then every event answered 200 is in the queue (the broker confirmed each of them)
    accepted = stream.accepted()
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        count = queue.declaration_result.message_count
        assert count is not None and count >= len(accepted)
        delivered = {m.body for m in await take(queue, count, timeout=30)}
    missing = accepted - delivered
    print(
        f"\nsent={len(stream.answers)} 200={stream.count(200)} 503={stream.count(503)} "
        f"other={len(stream.answers) - stream.count(200) - stream.count(503)} "
        f"in-queue={len(delivered)} missing={len(missing)}"
    )
    assert not missing, f"{len(missing)} events answered 200 never reached the queue"


@dataclass(frozen=True)
class Alarm:
    """How to raise one kind of resource alarm on the node, and how to clear it."""

    kind: str
    raise_args: tuple[str, ...]
    read: str  # an Erlang expression giving the current limit
    set_command: str
    fallback: str


ALARMS = [
    Alarm(
        "memory",
        ("set_vm_memory_high_watermark", "0"),  # every byte is too many
        "vm_memory_monitor:get_vm_memory_high_watermark().",
        "set_vm_memory_high_watermark",
        "0.4",
    ),
    Alarm(
        "disk",
        ("set_disk_free_limit", "100000GB"),  # more free disk than any machine has
        "rabbit_disk_monitor:get_disk_free_limit().",
        "set_disk_free_limit",
        "50000000",
    ),
]


@pytest.fixture(params=ALARMS, ids=[a.kind for a in ALARMS])
def alarm(request: pytest.FixtureRequest) -> Iterator[tuple[Alarm, str]]:
    """A kind of alarm and the node's current limit for it, put back afterwards."""
    kind: Alarm = request.param
    original = rabbitmqctl("eval", kind.read).strip()
    yield kind, original
    value = original if original.replace(".", "", 1).isdigit() else kind.fallback
    rabbitmqctl(kind.set_command, value)


@pytest.mark.slow
async def test_a_resource_alarm_blocks_publishing_503_until_it_clears(
    ingress: Client, names: Names, tap_factory: TapFactory, alarm: tuple[Alarm, str]
) -> None:
    kind, original = alarm
    tap = await tap_factory("#")
    body = example_body("email.sent")

    # When RabbitMQ raises a memory or disk alarm
    await ctl(*kind.raise_args)

    # Then a webhook is answered 503 with Retry-After within the confirm timeout (2 s here):
    # RabbitMQ stops reading from publishers, so no confirm comes; meanwhile /metrics counts
    # its publish in flight
    async with asyncio.timeout(10):
        while True:
            request = asyncio.create_task(ingress.post(URL, data=body, headers=signed(body)))
            in_flight = await most_in_flight(ingress, request)
            response = await request
            assert response.status in (200, 503)  # 200 only if the alarm was not up yet
            if response.status == 503:
                break
    assert "Retry-After" in response.headers
    assert in_flight == 1
    # (a publish that timed out is no longer waiting, once /metrics is rendered anew)
    await asyncio.sleep(PAGE_MAX_AGE)
    text = await (await internal(ingress, "/metrics")).text()
    assert f"{IN_FLIGHT} 0.0" in text

    # And once RabbitMQ has told the connection it is blocked, /readyz says so
    async with asyncio.timeout(30):
        while (await internal(ingress, "/readyz")).status != 503:
            await asyncio.sleep(0.1)
    assert (await (await internal(ingress, "/readyz")).json())["blocked"] is True
    # and webhooks are refused at once, without waiting for a confirm that cannot come
    response = await ingress.post(URL, data=body, headers=signed(body))
    assert response.status == 503

    # When the alarm clears, service resumes on its own
    await ctl(kind.set_command, original)
    await wait_ready(ingress, timeout=30)
    response = await ingress.post(URL, data=body, headers=signed(body))
    assert response.status == 200
    # The body is in the queue (possibly more than once: a publish that was answered 503
    # while blocked may still be delivered once the alarm clears; Attentive's retry of it
    # carries the same message id, so consumers deduplicate it)
    (message, *_) = await tap.take(1)
    assert message.body == body


# -- a half-open path, and a message the broker would kill the connection for ----------------

PROPERTIES = Properties(
    content_type="application/json", message_id="m-1", timestamp=0, headers={"ce-type": "x"}
)


@pytest.fixture
async def queue_name(names: Names, amqp: AbstractRobustConnection) -> AsyncIterator[str]:
    name = f"{names.prefix}.faults"
    channel = await amqp.channel()
    await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    yield name
    await channel.queue_delete(name)


async def failures(broker: Broker, queue: str, count: int) -> list[BaseException | None]:
    """What ``count`` publishes, one after another, came to."""
    outcomes: list[BaseException | None] = []
    for _ in range(count):
        try:
            await broker.publish_to_queue(queue, b"x", PROPERTIES)
            outcomes.append(None)
        except PublishFailed as error:
            outcomes.append(error)
    return outcomes


async def test_confirm_timeouts_in_a_row_move_the_broker_to_the_next_node(
    names: Names, queue_name: str, test_id: str
) -> None:
    # Given a router publishing through the first of two paths to the broker (two "nodes")
    async with AmqpProxy.running() as first, AmqpProxy.running() as second:
        broker = Broker(
            [first.url(AMQP_URL), second.url(AMQP_URL)],
            names,
            confirm_timeout=0.3,
            connection_name=test_id,
            timeouts_to_recycle=3,
            recycle_window=30,
        )
        broker.start()
        try:
            await broker.wait_ready(10)
            assert broker.node == 0

            # When the first path stops forwarding what RabbitMQ says (its socket still up),
            # twice, then an ack comes through, then twice again
            first.freeze(to_client=True)
            assert all(await failures(broker, queue_name, 2))
            first.thaw()
            assert await failures(broker, queue_name, 1) == [None]
            first.freeze(to_client=True)
            assert all(await failures(broker, queue_name, 2))
            # Then that is not three timeouts in a row: the broker stays where it is
            assert broker.node == 0 and broker.connected

            # When a third timeout follows
            assert all(await failures(broker, queue_name, 1))

            # Then the broker drops the connection and publishes through the second path
            async with asyncio.timeout(10):
                while not (broker.ready and broker.node == 1):
                    await asyncio.sleep(0.05)
            assert await failures(broker, queue_name, 1) == [None]
            assert second.accepted == 2  # the declaring connection and the publisher
        finally:
            await broker.close()


async def test_a_header_too_large_for_a_frame_is_refused_alone_and_logged_without_values(
    names: Names, queue_name: str, test_id: str
) -> None:
    # Given a connected router
    broker = Broker(AMQP_URL, names, confirm_timeout=5, connection_name=test_id)
    broker.start()
    try:
        await broker.wait_ready(10)
        secret = "personal-" * 20_000  # 180,000 bytes: more than RabbitMQ's 131,072 frame_max
        too_large = Properties(
            content_type="application/json",
            message_id="m-2",
            timestamp=0,
            headers={"ce-type": "x", "ce-subject": secret},
        )

        # When a message with a header table larger than a frame is published among others
        others = [broker.publish_to_queue(queue_name, b"other", PROPERTIES) for _ in range(10)]
        with (
            structlog.testing.capture_logs() as logs,
            pytest.raises(PublishFailed, match="frame_max"),
        ):
            await broker.publish_to_queue(queue_name, b"the body", too_large)

        # Then only that one fails (503 at the ingress); the others are confirmed and the
        # connection stays open
        await asyncio.gather(*others)
        assert broker.connected
        await broker.publish_to_queue(queue_name, b"after", PROPERTIES)
        # And the log names the message and the largest header, never a value or the body
        (event,) = [e for e in logs if e["event"] == "publish_refused_header_too_large"]
        assert event["message_id"] == "m-2" and event["largest_header"] == "ce-subject"
        assert "personal-" not in repr(logs) and "the body" not in repr(logs)
    finally:
        await broker.close()
