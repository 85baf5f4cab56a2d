"""The console's broker data source against the machine's RabbitMQ: through AMQP passive
declares, and through the management HTTP API when its plugin is enabled (port 15672)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from router.console.broker import (
    AMQP,
    MANAGEMENT,
    AmqpView,
    BrokerLook,
    BrokerView,
    CachedView,
    ManagementView,
    QueueLook,
    broker_view,
)
from router.contract.names import Names
from router.errors import ConfigError
from tests.conftest import AMQP_URL, rabbitmqctl
from tests.environment import no_router_environment

pytestmark = pytest.mark.broker

MANAGEMENT_URL = "http://guest:guest@127.0.0.1:15672"
#: Messages the test puts in its "full" queue.
WAITING = 3


def _management_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 15672), timeout=2):
            return True
    except OSError:
        return False


needs_management = pytest.mark.skipif(
    not _management_answers(),
    reason="RabbitMQ's management API does not answer on 127.0.0.1:15672:"
    " run `rabbitmq-plugins enable rabbitmq_management`",
)


@dataclass(frozen=True)
class Queues:
    """The test's queues: ``full`` holds :data:`WAITING` messages, ``busy`` has one consumer,
    ``idle`` neither; ``missing`` names a queue that does not exist."""

    full: str
    busy: str
    idle: str
    missing: str


@pytest.fixture
async def queues(names: Names, amqp: AbstractRobustConnection) -> AsyncIterator[Queues]:
    """Given three application queues in the test's namespace, in the states :class:`Queues`
    says; deleted afterwards."""
    made = Queues(
        full=names.app_queue("full"),
        busy=names.app_queue("busy"),
        idle=names.app_queue("idle"),
        missing=names.app_queue("missing"),
    )
    channel = await amqp.channel()
    await channel.set_qos(prefetch_count=1)
    declared = {
        name: await channel.declare_queue(name, durable=True)
        for name in (made.full, made.busy, made.idle)
    }
    for n in range(WAITING):
        await channel.default_exchange.publish(aio_pika.Message(b"%d" % n), routing_key=made.full)

    async def ignore(message: AbstractIncomingMessage) -> None:
        await message.ack()

    tag = await declared[made.busy].consume(ignore)
    yield made
    await declared[made.busy].cancel(tag)
    for name in declared:
        await channel.queue_delete(name)


def _asked(queues: Queues) -> list[str]:
    return [queues.full, queues.busy, queues.missing]


async def _eventually(
    view: BrokerView, asked: Sequence[str], holds: Callable[[BrokerLook], bool]
) -> BrokerLook:
    """Look again until ``holds(look)``: the management API refreshes its numbers every few
    seconds. ``TimeoutError`` after 30 s."""
    async with asyncio.timeout(30):
        while not holds(look := await view.look(asked)):
            await asyncio.sleep(0.5)
    return look


# -- through AMQP ---------------------------------------------------------------------------


async def test_amqp_view_reports_messages_and_consumers(queues: Queues) -> None:
    """Given a queue with messages, one with a consumer, and a name no queue has,
    when the AMQP view looks at them,
    then it reports each queue's messages and consumers, no rates, no nodes, and leaves out
    the queue that does not exist."""
    look = await AmqpView(AMQP_URL, timeout=5).look(_asked(queues))

    assert (look.reachable, look.error, look.source, look.nodes) == (True, None, AMQP, None)
    assert set(look.queues) == {queues.full, queues.busy}
    full, busy = look.queues[queues.full], look.queues[queues.busy]
    assert (full.messages, full.consumers) == (WAITING, 0)
    assert (busy.messages, busy.consumers) == (0, 1)
    assert (full.in_rate, full.out_rate) == (None, None)


async def test_amqp_view_lists_a_queue_it_may_not_look_into_with_unknown_numbers(
    names: Names, amqp: AbstractRobustConnection
) -> None:
    """Given a queue exclusive to another connection, and one after it,
    when the AMQP view looks at both,
    then the first is listed with unknown numbers, and the second is still read."""
    channel = await amqp.channel()
    locked = await channel.declare_queue(names.app_queue("locked"), exclusive=True)
    after = await channel.declare_queue(names.app_queue("after"))

    look = await AmqpView(AMQP_URL, timeout=5).look([locked.name, after.name])

    assert look.reachable is True
    assert look.queues[locked.name] == QueueLook(locked.name, None, None, None, None)
    assert look.queues[after.name].messages == 0
    await after.delete()


async def test_amqp_view_of_an_unreachable_broker_says_so_without_the_url() -> None:
    """Given a URL where no broker listens, whose password is secretpw,
    when the AMQP view looks,
    then the look is unreachable, and its reason names neither the URL nor the password."""
    look = await AmqpView("amqp://guest:secretpw@127.0.0.1:1/", timeout=5).look(["a.queue"])

    assert (look.reachable, look.nodes, dict(look.queues)) == (False, None, {})
    assert look.error
    assert "secretpw" not in look.error
    assert "amqp://" not in look.error


async def test_amqp_view_with_a_wrong_password_says_so_without_it() -> None:
    """Given the broker's URL with a wrong password,
    when the AMQP view looks,
    then the look is unreachable, and its reason does not hold the password."""
    look = await AmqpView("amqp://guest:wrongpw@127.0.0.1:5672/", timeout=5).look(["a.queue"])

    assert look.reachable is False
    assert look.error and "wrongpw" not in look.error


# -- through the management API -------------------------------------------------------------


@needs_management
async def test_management_view_lists_the_running_node_without_alarms() -> None:
    """Given the machine's one RabbitMQ node, with the management plugin,
    when the management view looks,
    then it lists that node, running, with no alarm raised."""
    look = await ManagementView(MANAGEMENT_URL, vhost="/", timeout=5).look([])

    assert (look.reachable, look.error, look.source) == (True, None, MANAGEMENT)
    assert look.nodes
    assert all(node.running and node.alarms == () for node in look.nodes)
    assert all(node.name.startswith("rabbit@") for node in look.nodes)


@needs_management
async def test_management_view_reports_the_queues_asked_for(queues: Queues) -> None:
    """Given a queue with messages, one with a consumer, one not asked about, and a name no
    queue has,
    when the management view looks at the first two and the missing one (until its
    statistics catch up),
    then it reports their messages, consumers and rates, and nothing of the other two."""
    view = ManagementView(MANAGEMENT_URL, vhost="/", timeout=5)

    def caught_up(look: BrokerLook) -> bool:
        full, busy = look.queues.get(queues.full), look.queues.get(queues.busy)
        return bool(
            full
            and busy
            and full.messages == WAITING
            and busy.consumers == 1
            and isinstance(full.in_rate, float)
        )

    look = await _eventually(view, _asked(queues), caught_up)

    assert set(look.queues) == {queues.full, queues.busy}
    full, busy = look.queues[queues.full], look.queues[queues.busy]
    assert (full.messages, full.consumers) == (WAITING, 0)
    assert (busy.messages, busy.consumers) == (0, 1)
    assert full.in_rate is not None and full.in_rate >= 0.0
    assert full.out_rate is not None and full.out_rate >= 0.0


@needs_management
async def test_management_view_lists_the_queues_under_a_prefix(
    names: Names, amqp: AbstractRobustConnection
) -> None:
    """Given an application's retry tiers (whose delays only its worker knows) and another
    application's,
    when the management view looks with the first one's retry prefix,
    then it lists that application's tiers and nothing of the other's."""
    channel = await amqp.channel()
    tiers = [names.app_retry_queue("crm", delay) for delay in (5000, 30000)]
    other = names.app_retry_queue("billing", 5000)
    for name in (*tiers, other):
        await channel.declare_queue(name, durable=True)
    view = ManagementView(MANAGEMENT_URL, vhost="/", timeout=5)
    prefix = names.app_retry_exchange("crm") + "."
    try:
        async with asyncio.timeout(30):
            while set((look := await view.look([], [prefix])).queues) != set(tiers):
                await asyncio.sleep(0.5)
    finally:
        for name in (*tiers, other):
            await channel.queue_delete(name)
    assert other not in look.queues


@needs_management
async def test_management_view_with_a_wrong_password_says_so_without_it() -> None:
    """Given the management API's URL with a wrong password,
    when the management view looks,
    then the look is unreachable, says the credentials were refused, and holds no password."""
    view = ManagementView("http://guest:wrongpw@127.0.0.1:15672", vhost="/", timeout=5)

    look = await view.look(["a.queue"])

    assert (look.reachable, look.source) == (False, MANAGEMENT)
    assert look.error and "401" in look.error
    assert "wrongpw" not in look.error


@needs_management
async def test_management_view_of_an_unknown_vhost_says_so() -> None:
    """Given a vhost the broker does not have,
    when the management view looks,
    then the look is unreachable and names the vhost."""
    view = ManagementView(MANAGEMENT_URL, vhost="no-such-vhost", timeout=5)

    look = await view.look(["a.queue"])

    assert look.reachable is False
    assert look.error and "no-such-vhost" in look.error and "404" in look.error


@pytest.fixture
def management_only_user() -> Iterator[tuple[str, str]]:
    """Given a broker user with the ``management`` tag but not ``monitoring``; deleted after."""
    user, password = f"t-console-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    rabbitmqctl("add_user", user, password)
    try:
        rabbitmqctl("set_user_tags", user, "management")
        rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        yield user, password
    finally:
        rabbitmqctl("delete_user", user)


@needs_management
async def test_management_view_without_the_monitoring_tag_reads_queues_not_nodes(
    queues: Queues, management_only_user: tuple[str, str]
) -> None:
    """Given a management user that may not list the broker's nodes,
    when the management view looks as that user,
    then the queues are read, the nodes are unknown, and the error says why."""
    user, password = management_only_user
    view = ManagementView(f"http://{user}:{password}@127.0.0.1:15672", vhost="/", timeout=5)

    look = await _eventually(view, _asked(queues), lambda look: queues.full in look.queues)

    assert (look.reachable, look.nodes) == (True, None)
    assert look.error and look.error.startswith("nodes unknown") and password not in look.error


async def test_management_view_of_a_closed_port_says_so_without_the_password() -> None:
    """Given a management URL where nothing listens, whose password is secretpw,
    when the management view looks,
    then the look is unreachable and its reason holds no password."""
    view = ManagementView("http://guest:secretpw@127.0.0.1:1", vhost="/", timeout=5)

    look = await view.look(["a.queue"])

    assert look.reachable is False
    assert look.error and "secretpw" not in look.error


def test_a_management_url_that_is_no_http_url_is_refused_without_its_password() -> None:
    """Given an AMQP URL where a management URL belongs,
    when a management view is made of it,
    then it is refused, in words that hold no password."""
    with pytest.raises(ConfigError) as refused:
        ManagementView("amqp://guest:secretpw@127.0.0.1:5672/", vhost="/", timeout=5)

    assert "secretpw" not in str(refused.value)


def test_broker_view_prefers_the_management_api_when_given() -> None:
    """Given an AMQP URL, with and without a management URL,
    when a broker view is chosen,
    then it is the management API's when there is one, AMQP's otherwise."""
    assert isinstance(broker_view(AMQP_URL, MANAGEMENT_URL), ManagementView)
    assert isinstance(broker_view(AMQP_URL, ""), AmqpView)


# -- the cache ------------------------------------------------------------------------------


class Counting:
    """A broker view that counts the looks it is asked for, made by the view it wraps."""

    def __init__(self, view: BrokerView) -> None:
        self.view = view
        self.looks = 0

    async def look(self, queue_names: Sequence[str], prefixes: Sequence[str] = ()) -> BrokerLook:
        self.looks += 1
        return await self.view.look(queue_names, prefixes)


async def test_cached_view_looks_once_per_ttl_for_the_same_queues(queues: Queues) -> None:
    """Given an AMQP view behind a cache of 10 s, on a clock the test moves,
    when many browsers look at once, then again within 10 s, then at other queues, then after
    10 s,
    then the broker is looked at once for the first two, and once for each of the others."""
    now = [1000.0]
    counting = Counting(AmqpView(AMQP_URL, timeout=5))
    cached = CachedView(counting, ttl=10, clock=lambda: now[0])

    first = await asyncio.gather(*(cached.look(_asked(queues)) for _ in range(5)))
    now[0] += 9
    again = await cached.look(list(reversed(_asked(queues))))
    assert counting.looks == 1
    assert all(look is first[0] for look in (*first, again))
    assert first[0].queues[queues.full].messages == WAITING

    await cached.look([queues.idle])
    assert counting.looks == 2
    now[0] += 11
    await cached.look([queues.idle])
    assert counting.looks == 3


__all__ = ["no_router_environment"]
