"""The archive: every event the ingress accepts is kept in the stream ``attentive.archive``,
while routing (claims, and unrouted for what nobody claims) stays exactly as it was; the
archive can be switched off, takes its retention from the settings, and ``serve`` brings a
broker holding the previous release's topology up to date at start."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from router.amqp import topology
from router.amqp.topology import Retention
from router.contract.examples import example_body
from router.contract.names import WEBHOOK_PATH, Names
from router.errors import ConfigError
from router.settings import Settings
from tests.conftest import AUTH, Client, MakeAdmin, MakeIngress, archive_on, depth, signed, take

pytestmark = pytest.mark.broker


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings with the archive on, as the router runs by default."""
    return archive_on(settings)


async def post_event(
    ingress: Client, event_type: str, company: str = "acme", body: bytes | None = None
) -> str:
    """Post one signed event (``body``, else an example); its message id (answered 200)."""
    body = body or example_body(event_type, company)
    response = await ingress.post(WEBHOOK_PATH, data=body, headers=signed(body))
    assert response.status == 200
    return str((await response.json())["message_id"])


async def archived(
    amqp: AbstractRobustConnection, names: Names, count: int, timeout: float = 10.0
) -> list[AbstractIncomingMessage]:
    """The first ``count`` events of the test's archive, read from its start (a stream is
    read, not consumed: nothing leaves it)."""
    channel = await amqp.channel()
    await channel.set_qos(prefetch_count=100)
    stream = await channel.get_queue(names.archive_stream)
    messages: list[AbstractIncomingMessage] = []
    enough = asyncio.Event()

    async def keep(message: AbstractIncomingMessage) -> None:
        messages.append(message)
        await message.ack()
        if len(messages) >= count:
            enough.set()

    await stream.consume(keep, arguments={"x-stream-offset": "first"})
    async with asyncio.timeout(timeout):
        await enough.wait()
    await channel.close()
    return messages[:count]


async def exists(amqp: AbstractRobustConnection, *, queue: str = "", exchange: str = "") -> bool:
    """Whether the broker has ``queue`` (or ``exchange``): a passive declare."""
    channel = await amqp.channel()
    try:
        if queue:
            await channel.declare_queue(queue, passive=True)
        else:
            await channel.get_exchange(exchange)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    await channel.close()
    return True


async def test_an_event_nobody_claims_is_unrouted_and_archived_and_a_claimed_one_too(
    make_admin: MakeAdmin, ingress: Client, amqp: AbstractRobustConnection, names: Names
) -> None:
    """Given sms-audit claims sms.*, when an sms.sent and an email.opened arrive (200 each),
    then sms.sent waits in sms-audit's queue, email.opened in unrouted as before, and both are
    in the archive, in the order they came, with their routing keys and properties."""
    admin = await make_admin()
    response = await admin.post(
        "/admin/claims", json={"app": "sms-audit", "events": ["sms.*"]}, headers=AUTH
    )
    assert response.status == 201

    body = example_body("sms.sent", "acme")
    sent = await post_event(ingress, "sms.sent", body=body)
    opened = await post_event(ingress, "email.opened")

    assert await depth(amqp, names.app_queue("sms-audit")) == 1
    assert await depth(amqp, names.unrouted_queue) == 1
    channel = await amqp.channel()
    [unrouted] = await take(await channel.get_queue(names.unrouted_queue), 1)
    assert unrouted.message_id == opened
    kept = await archived(amqp, names, 2)
    assert [(m.message_id, m.routing_key) for m in kept] == [
        (sent, "sms.sent.acme"),
        (opened, "email.opened.acme"),
    ]
    assert kept[0].body == body
    assert kept[0].headers["x-attentive-company-id"] == "acme"
    await channel.queue_delete(names.app_queue("sms-audit"))


async def test_with_the_archive_off_the_ingress_publishes_to_the_events_exchange(
    make_ingress: MakeIngress, settings: Settings, amqp: AbstractRobustConnection, names: Names
) -> None:
    """Given ROUTER_ARCHIVE=off, when an event nobody claims arrives, then it is unrouted as
    before and neither the archive nor the exchange in front of it is declared."""
    ingress = await make_ingress(replace(settings, archive=False))

    await post_event(ingress, "sms.sent")

    assert await depth(amqp, names.unrouted_queue) == 1
    assert not await exists(amqp, queue=names.archive_stream)
    assert not await exists(amqp, exchange=names.ingress_exchange)


async def test_the_archive_takes_its_retention_from_the_settings(
    make_ingress: MakeIngress, settings: Settings, amqp: AbstractRobustConnection, names: Names
) -> None:
    """Given ROUTER_ARCHIVE_MAX_AGE=36h and ROUTER_ARCHIVE_MAX_BYTES=500MB, when the ingress
    starts, then the stream has exactly those arguments (declaring it with them is a no-op,
    with others is refused); and an ingress started later with other retention keeps the
    stream as it is, and still publishes through it."""
    env = {"ROUTER_ARCHIVE_MAX_AGE": "36h", "ROUTER_ARCHIVE_MAX_BYTES": "500MB"}
    from_env = Settings.from_env(env)
    assert (from_env.archive_max_age, from_env.archive_max_bytes) == (129_600, 500_000_000)
    wanted = replace(settings, archive_max_age=129_600, archive_max_bytes=500_000_000)
    await make_ingress(wanted)

    arguments = Retention(max_age=129_600, max_bytes=500_000_000).arguments()
    assert arguments == {
        "x-queue-type": "stream",
        "x-max-age": "129600s",
        "x-max-length-bytes": 500_000_000,
    }
    channel = await amqp.channel()
    await channel.declare_queue(names.archive_stream, durable=True, arguments=arguments)
    other = Retention(max_age=3600, max_bytes=500_000_000).arguments()
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed, match="x-max-age"):
        await channel.declare_queue(names.archive_stream, durable=True, arguments=other)

    later = await make_ingress(replace(settings, archive_max_age=3600))
    message_id = await post_event(later, "sms.sent")
    [kept] = await archived(amqp, names, 1)
    assert kept.message_id == message_id


def test_the_archive_settings_are_read_and_checked() -> None:
    """ROUTER_ARCHIVE is on unless switched off; spans and sizes take their usual units; a
    value that is none is refused naming its variable."""
    assert Settings.from_env({}).archive_retention == Retention()
    assert Settings.from_env({"ROUTER_ARCHIVE": "off"}).archive_retention is None
    assert Settings.from_env({"ROUTER_ARCHIVE_MAX_AGE": "7d"}).archive_max_age == 604_800
    assert Settings.from_env({"ROUTER_ARCHIVE_MAX_BYTES": "2GiB"}).archive_max_bytes == 2**31
    for variable, value in (
        ("ROUTER_ARCHIVE", "maybe"),
        ("ROUTER_ARCHIVE_MAX_AGE", "a week"),
        ("ROUTER_ARCHIVE_MAX_AGE", "0h"),
        ("ROUTER_ARCHIVE_MAX_BYTES", "lots"),
    ):
        with pytest.raises(ConfigError, match=variable):
            Settings.from_env({variable: value})


async def test_serve_upgrades_the_previous_releases_topology_idempotently(
    make_ingress: MakeIngress, settings: Settings, amqp: AbstractRobustConnection, names: Names
) -> None:
    """Given a broker holding the previous release's topology (events, unrouted, invalid,
    control: no front exchange, no archive) with an event already unrouted, when the new
    ingress starts, then it declares the front exchange and the archive and publishes through
    them; and when a second one starts on the same topology, nothing changes but the count."""
    channel = await amqp.channel()
    await topology.declare(channel, names)
    events = await channel.get_exchange(names.events_exchange)
    await events.publish(aio_pika.Message(b"{}", message_id="before"), "sms.sent.acme")
    assert not await exists(amqp, exchange=names.ingress_exchange)

    first = await make_ingress(settings)
    during = await post_event(first, "sms.sent")
    second = await make_ingress(settings)
    after = await post_event(second, "email.opened")

    assert await depth(amqp, names.unrouted_queue) == 3
    unrouted = await take(await channel.get_queue(names.unrouted_queue), 3)
    assert [m.message_id for m in unrouted] == ["before", during, after]
    assert [m.message_id for m in await archived(amqp, names, 2)] == [during, after]
