"""The users and permissions of :mod:`router.claims.permissions`, imported into the real RabbitMQ.

Each test gets a namespace of its own with the router's topology and the quorum queues of two
applications, ``alpha`` and ``beta``; the definitions are loaded with ``rabbitmqctl
import_definitions`` and the test then connects as ``alpha`` to show what the broker lets it
do. The fixture deletes the users, queues and exchanges afterwards, pass or fail.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import subprocess
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from aiormq.exceptions import ChannelAccessRefused
from yarl import URL

from router.amqp import topology
from router.amqp.topology import QUORUM_QUEUE_ARGUMENTS
from router.claims.permissions import (
    HASHING_ALGORITHM,
    generate_password,
    password_hash,
    rabbitmq_definitions,
)
from router.contract.names import Names
from router.errors import InvalidClaim
from tests.conftest import AMQP_URL, depth

pytestmark = pytest.mark.broker

APPS = ("alpha", "beta")
CTL_TIMEOUT = 60.0
IMPORT_TIMEOUT = 30.0
WAIT_TIMEOUT = 10.0


# -- unit: the document itself ----------------------------------------------------------------


def _permission_of(definitions: Mapping[str, Any], user: str) -> dict[str, str]:
    [permission] = [p for p in definitions["permissions"] if p["user"] == user]
    return dict(permission)


def test_password_hash_verifies_when_recomputed_from_its_salt() -> None:
    # Given a definitions document for one application
    names = Names(prefix="t-unit")
    definitions = rabbitmq_definitions(names, ["alpha"], passwords={"alpha": "pässword"})

    # When its user's hash is taken apart
    [user] = definitions["users"]
    raw = base64.b64decode(user["password_hash"], validate=True)
    salt, digest = raw[:4], raw[4:]

    # Then it is RabbitMQ's salted SHA-256 of the UTF-8 password
    assert user["name"] == names.app_user("alpha")
    assert user["hashing_algorithm"] == HASHING_ALGORITHM == "rabbit_password_hashing_sha256"
    assert user["tags"] == []
    assert len(raw) == 4 + 32
    assert digest == hashlib.sha256(salt + "pässword".encode()).digest()
    assert digest != hashlib.sha256(salt + b"password").digest()
    assert password_hash("pässword", salt=salt) == user["password_hash"]


def test_hashes_are_salted_afresh() -> None:
    assert password_hash("same") != password_hash("same")
    assert generate_password() != generate_password()
    assert len(generate_password()) >= 32


@pytest.mark.parametrize("prefix", ["t-unit", "t.unit+1"])
def test_app_regexes_match_its_own_queues_only(prefix: str) -> None:
    # Given the permissions of application "a" (RabbitMQ searches, unanchored, like re.search)
    names = Names(prefix=prefix)
    definitions = rabbitmq_definitions(names, ["a"], passwords={"a": "pw"})
    permission = _permission_of(definitions, names.app_user("a"))
    own = permission["configure"]
    with_control = permission["write"]

    # Then it configures its own names only, and writes and reads them and the control
    # exchange (whose topic permissions keep it to its own routing key)
    assert permission == {
        "user": names.app_user("a"),
        "vhost": "/",
        "configure": own,
        "write": with_control,
        "read": with_control,
    }
    assert re.search(with_control, names.control_exchange)
    assert not re.search(own, names.control_exchange)
    for allowed in (f"{prefix}.app.a", f"{prefix}.app.a.dlq", f"{prefix}.app.a.retry.5s"):
        assert re.search(own, allowed), allowed
        assert re.search(with_control, allowed), allowed
    for refused in (
        f"{prefix}.app.ab",
        f"{prefix}Xapp.a",
        f"{prefix}.appXa",
        f"{prefix}.app.aXdlq",
        f"{prefix}.app.a.",
        f"{prefix}.app.b",
        f"x{prefix}.app.a",
        f"{prefix}.events",
        f"{prefix}.invalid",
        "amq.default",
        "",
        f"{prefix}.controlX",
        f"{prefix}.control.a",
    ):
        assert not re.search(own, refused), refused
        assert not re.search(with_control, refused), refused


def test_topic_permissions_close_the_events_exchange_and_keep_control_to_its_own_key() -> None:
    names = Names(prefix="t-unit")
    definitions = rabbitmq_definitions(names, ["a", "b"], passwords={"a": "1", "b": "2"})
    assert definitions["topic_permissions"] == [
        permission
        for app in ("a", "b")
        for permission in (
            {
                "user": names.app_user(app),
                "vhost": "/",
                "exchange": "t-unit.events",
                "write": "^$",
                "read": "^$",
            },
            {
                "user": names.app_user(app),
                "vhost": "/",
                "exchange": "t-unit.control",
                "write": f"^{app}$",
                "read": f"^{app}$",
            },
        )
    ]
    assert "vhosts" not in definitions


def test_router_user_owns_the_prefix_and_the_default_exchange() -> None:
    names = Names(prefix="t-unit")
    definitions = rabbitmq_definitions(
        names, [], passwords={}, router_user="router", router_password="pw"
    )
    permission = _permission_of(definitions, "router")
    for name in ("t-unit.events", "t-unit.app.a", "t-unit.invalid"):
        for kind in ("configure", "write", "read"):
            assert re.search(permission[kind], name), (kind, name)
    assert re.search(permission["write"], "amq.default")
    for name in ("amq.default", "amq.defaultX", "t-unitX", "other.events"):
        assert not re.search(permission["configure"], name), name
        assert not re.search(permission["read"], name), name
    for name in ("amq.defaultX", "xamq.default", "t-unitX", "amq.topic"):
        assert not re.search(permission["write"], name), name


def test_bad_input_is_refused() -> None:
    names = Names(prefix="t-unit")
    with pytest.raises(InvalidClaim):
        rabbitmq_definitions(names, ["a.b"], passwords={"a.b": "pw"})
    with pytest.raises(ValueError, match="no password for application"):
        rabbitmq_definitions(names, ["a", "b"], passwords={"a": "pw"})
    with pytest.raises(ValueError, match="router user"):
        rabbitmq_definitions(names, [], passwords={}, router_user="router")


# -- against the broker -----------------------------------------------------------------------


def _rabbitmqctl(
    *args: str, check: bool, stdin: Path | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["rabbitmqctl", *args],
        input=stdin.read_text() if stdin else "",
        capture_output=True,
        text=True,
        timeout=CTL_TIMEOUT,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done


async def ctl(
    *args: str, check: bool = True, stdin: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_rabbitmqctl, *args, check=check, stdin=stdin)


async def _listed(command: str, vhost: str) -> list[dict[str, str]]:
    """``rabbitmqctl <command> -p <vhost>`` as JSON: one call for every user's entries."""
    done = await ctl("-q", command, "-p", vhost, "--formatter", "json")
    listed: list[dict[str, str]] = json.loads(done.stdout)
    return listed


async def _imported(definitions: Mapping[str, Any]) -> bool:
    """Whether every permission of ``definitions`` is in force (the import is asynchronous).
    Two listings per look (every user's permissions and topic permissions of the vhosts
    concerned), not one per user: each ``rabbitmqctl`` call starts an Erlang VM."""
    checks = [
        ("list_permissions", permission, ("configure", "write", "read"))
        for permission in definitions["permissions"]
    ] + [
        ("list_topic_permissions", topic, ("exchange", "write", "read"))
        for topic in definitions["topic_permissions"]
    ]
    wanted_lists = {(command, wanted["vhost"]) for command, wanted, _ in checks}
    listings = dict(
        zip(
            wanted_lists,
            await asyncio.gather(*(_listed(command, vhost) for command, vhost in wanted_lists)),
            strict=True,
        )
    )
    for command, wanted, keys in checks:
        entry = {"user": wanted["user"], **{key: wanted[key] for key in keys}}
        if entry not in listings[command, wanted["vhost"]]:
            return False
    return True


@dataclass
class Broker:
    """The test's namespace on the real broker, and what the fixture must clean up."""

    names: Names
    guest: AbstractRobustConnection
    test_id: str
    directory: Path
    passwords: dict[str, str] = field(default_factory=dict)
    users: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    exchanges: list[str] = field(default_factory=list)
    connections: list[AbstractConnection] = field(default_factory=list)

    async def install(self, definitions: dict[str, Any]) -> None:
        """Import ``definitions`` and wait until they are in force."""
        self.users.extend(user["name"] for user in definitions["users"])
        path = self.directory / f"definitions-{len(self.users)}.json"
        path.write_text(json.dumps(definitions))
        # The file goes in on stdin (import_definitions without a path; "-" is refused by
        # 3.10): the rabbitmqctl wrapper runs as the rabbitmq user (su), which cannot read
        # root's private pytest directories.
        await ctl("import_definitions", stdin=path)
        async with asyncio.timeout(IMPORT_TIMEOUT):
            while not await _imported(definitions):
                await asyncio.sleep(0.1)

    async def connect(self, user: str, password: str) -> AbstractConnection:
        """A plain (not robust) connection as ``user``, named after the test."""
        url = URL(AMQP_URL).with_user(user).with_password(password)
        connection = await aio_pika.connect(
            str(url), client_properties={"connection_name": self.test_id}, timeout=WAIT_TIMEOUT
        )
        self.connections.append(connection)
        return connection

    async def connect_app(self, app: str) -> AbstractConnection:
        return await self.connect(self.names.app_user(app), self.passwords[app])

    async def guest_channel(self) -> AbstractChannel:
        return await self.guest.channel()

    async def put(self, queue: str, body: bytes) -> None:
        """Publish (confirmed) into ``queue`` as guest, through the default exchange."""
        channel = await self.guest_channel()
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)
        await channel.close()


@pytest.fixture
async def broker(
    names: Names, amqp: AbstractRobustConnection, test_id: str, tmp_path: Path
) -> AsyncIterator[Broker]:
    """The router's topology and the queues of ``alpha`` and ``beta``; no users yet."""
    state = Broker(names=names, guest=amqp, test_id=test_id, directory=tmp_path)
    try:
        channel = await amqp.channel()
        await topology.declare(channel, names)
        for app in APPS:
            state.queues.append(names.app_queue(app))
            await channel.declare_queue(
                names.app_queue(app), durable=True, arguments=QUORUM_QUEUE_ARGUMENTS
            )
        await channel.close()
        yield state
    finally:
        await asyncio.gather(*(ctl("delete_user", user, check=False) for user in state.users))
        for connection in state.connections:
            with contextlib.suppress(Exception):  # the broker may already have closed it
                await connection.close()
        channel = await amqp.channel()
        for queue in state.queues:
            await channel.queue_delete(queue)
        for exchange in state.exchanges:
            await channel.exchange_delete(exchange)
        await channel.close()
        # names (conftest) deletes the topology itself.


@pytest.fixture
async def apps(broker: Broker) -> Broker:
    """``alpha`` and ``beta`` have their users, as :func:`rabbitmq_definitions` makes them."""
    broker.passwords = {app: generate_password() for app in APPS}
    await broker.install(rabbitmq_definitions(broker.names, APPS, passwords=broker.passwords))
    return broker


async def ignore(message: AbstractIncomingMessage) -> None:
    """A consumer callback for consumers that never get a message."""


async def wait_depth(broker: Broker, queue: str, expected: int) -> None:
    async with asyncio.timeout(WAIT_TIMEOUT):
        while await depth(broker.guest, queue) != expected:
            await asyncio.sleep(0.05)


async def test_app_consumes_and_acks_its_own_queue(apps: Broker) -> None:
    # Given a message in alpha's queue
    queue_name = apps.names.app_queue("alpha")
    await apps.put(queue_name, b"for alpha")
    connection = await apps.connect_app("alpha")
    channel = await connection.channel()

    # When alpha consumes it and acks it
    queue = await channel.declare_queue(queue_name, durable=True, arguments=QUORUM_QUEUE_ARGUMENTS)
    async with asyncio.timeout(WAIT_TIMEOUT), queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            break
    await channel.close()  # close-ok comes after the ack is processed

    # Then it got the message, and the ack took it off the queue for good
    assert message.body == b"for alpha"
    assert await depth(apps.guest, queue_name) == 0


async def test_app_cannot_bind_to_the_events_exchange(apps: Broker) -> None:
    # Given alpha's own queue
    connection = await apps.connect_app("alpha")
    channel = await connection.channel()
    queue = await channel.get_queue(apps.names.app_queue("alpha"))

    # When alpha binds it to the events exchange for everything
    with pytest.raises(ChannelAccessRefused, match=re.escape(apps.names.events_exchange)):
        await queue.bind(apps.names.events_exchange, "#")

    # Then the channel is closed and no binding exists: an event goes to the unrouted queue
    assert channel.is_closed
    events = await apps.guest_channel()
    exchange = await events.get_exchange(apps.names.events_exchange)
    await exchange.publish(aio_pika.Message(b"event"), routing_key="sms.subscribed.c1")
    await wait_depth(apps, apps.names.unrouted_queue, 1)
    assert await depth(apps.guest, apps.names.app_queue("alpha")) == 0


async def test_app_cannot_publish_on_the_events_exchange(apps: Broker) -> None:
    # Given alpha with a confirming channel
    connection = await apps.connect_app("alpha")
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(apps.names.events_exchange, ensure=False)

    # When alpha publishes an event: the broker closes the channel instead of confirming
    with pytest.raises(ChannelAccessRefused, match=re.escape(apps.names.events_exchange)):
        async with asyncio.timeout(WAIT_TIMEOUT):
            await exchange.publish(aio_pika.Message(b"forged"), routing_key="sms.subscribed.c1")

    # Then nothing was routed anywhere (not even to the alternate exchange's queue)
    assert channel.is_closed
    assert await depth(apps.guest, apps.names.unrouted_queue) == 0


async def test_app_cannot_consume_another_apps_queue(apps: Broker) -> None:
    # Given a message in beta's queue
    beta = apps.names.app_queue("beta")
    await apps.put(beta, b"for beta")
    connection = await apps.connect_app("alpha")

    # When alpha consumes, or gets from, beta's queue: refused
    # (a passive declare is not: it needs no permission, so alpha may see that it exists)
    channel = await connection.channel()
    queue = await channel.get_queue(beta)
    with pytest.raises(ChannelAccessRefused, match=re.escape(beta)):
        await queue.consume(ignore)
    channel = await connection.channel()
    queue = await channel.get_queue(beta)
    with pytest.raises(ChannelAccessRefused, match=re.escape(beta)):
        await queue.get(fail=False)

    # Then beta's message is still there
    assert await depth(apps.guest, beta) == 1


async def test_app_cannot_use_the_default_exchange(apps: Broker) -> None:
    """Not even into its own queue: write on ``amq.default`` would reach every queue."""
    alpha = apps.names.app_queue("alpha")
    connection = await apps.connect_app("alpha")

    # When alpha publishes into its own queue through the default exchange: refused
    channel = await connection.channel(publisher_confirms=True)
    with pytest.raises(ChannelAccessRefused, match=r"amq\.default"):
        async with asyncio.timeout(WAIT_TIMEOUT):
            await channel.default_exchange.publish(aio_pika.Message(b"retry"), routing_key=alpha)

    # And when it declares a queue of its own dead-lettering to the default exchange: refused
    channel = await connection.channel()
    with pytest.raises(ChannelAccessRefused, match=r"amq\.default"):
        await channel.declare_queue(
            f"{alpha}.sneaky",
            arguments={
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": apps.names.app_queue("beta"),
            },
        )
    apps.queues.append(f"{alpha}.sneaky")  # in case it was made after all

    # Then nothing arrived
    assert await depth(apps.guest, alpha) == 0


async def test_write_on_amq_default_would_reach_any_queue(broker: Broker) -> None:
    """Why the default exchange is not granted: RabbitMQ checks the exchange, not the queue."""
    # Given alpha's permissions widened to also write amq.default
    broker.passwords = {"alpha": generate_password()}
    definitions = rabbitmq_definitions(broker.names, ["alpha"], passwords=broker.passwords)
    [permission] = definitions["permissions"]
    permission["write"] = f"(?:{permission['write']})|^amq\\.default$"
    await broker.install(definitions)
    connection = await broker.connect_app("alpha")
    channel = await connection.channel(publisher_confirms=True)

    # When alpha publishes through the default exchange into beta's queue and the invalid one
    for queue in (broker.names.app_queue("beta"), broker.names.invalid_queue):
        async with asyncio.timeout(WAIT_TIMEOUT):
            await channel.default_exchange.publish(aio_pika.Message(b"forged"), routing_key=queue)

    # Then both are confirmed and delivered: no permission names the destination queue
    assert await depth(broker.guest, broker.names.app_queue("beta")) == 1
    assert await depth(broker.guest, broker.names.invalid_queue) == 1


async def test_app_publishes_into_its_own_queue_through_an_exchange_of_its_own(
    apps: Broker,
) -> None:
    """The safe way back into its own queues: an exchange under the application's name."""
    # Given an exchange <prefix>.app.alpha.retry the router declared and bound to alpha's queue
    alpha = apps.names.app_queue("alpha")
    retry = f"{alpha}.retry"
    apps.exchanges.append(retry)
    channel = await apps.guest_channel()
    exchange = await channel.declare_exchange(retry, aio_pika.ExchangeType.DIRECT, durable=True)
    queue = await channel.get_queue(alpha)
    await queue.bind(exchange, alpha)
    await channel.close()
    connection = await apps.connect_app("alpha")

    # When alpha publishes on it (confirmed)
    channel = await connection.channel(publisher_confirms=True)
    own = await channel.get_exchange(retry)
    async with asyncio.timeout(WAIT_TIMEOUT):
        await own.publish(aio_pika.Message(b"retry"), routing_key=alpha)

    # Then the message is in alpha's queue
    await wait_depth(apps, alpha, 1)

    # But alpha cannot bind beta's queue to it: binding writes to the queue
    channel = await connection.channel()
    beta = await channel.get_queue(apps.names.app_queue("beta"))
    with pytest.raises(ChannelAccessRefused, match=re.escape(apps.names.app_queue("beta"))):
        await beta.bind(retry, "x")


async def test_router_user_declares_and_publishes(broker: Broker) -> None:
    # Given the router's user
    password = generate_password()
    user = f"{broker.names.prefix}-router"
    definitions = rabbitmq_definitions(
        broker.names, [], passwords={}, router_user=user, router_password=password
    )
    await broker.install(definitions)
    connection = await broker.connect(user, password)
    channel = await connection.channel(publisher_confirms=True)

    # When it declares the topology and publishes an event and an invalid webhook
    declared = await topology.declare(channel, broker.names)
    async with asyncio.timeout(WAIT_TIMEOUT):
        await declared.events.publish(aio_pika.Message(b"e"), routing_key="sms.subscribed.c1")
        await declared.direct.publish(
            aio_pika.Message(b"i"), routing_key=broker.names.invalid_queue
        )

    # Then both are confirmed and in their queues
    await wait_depth(broker, broker.names.unrouted_queue, 1)
    await wait_depth(broker, broker.names.invalid_queue, 1)


async def test_app_hears_and_speaks_for_itself_on_the_control_exchange_only(
    apps: Broker,
) -> None:
    """Pause, resume and breaker messages travel on the control exchange; an application's
    user may bind its own control queue and publish, both with its own name as the key."""
    # Given alpha's user and a control queue of alpha's own
    connection = await apps.connect_app("alpha")
    channel = await connection.channel(publisher_confirms=True)
    control = await channel.get_exchange(apps.names.control_exchange)
    mine = apps.names.app_control_queue("alpha", "replica-1")
    apps.queues.append(mine)
    queue = await channel.declare_queue(mine, exclusive=True, arguments=None)

    # When it binds the queue for its own messages and publishes one of its own
    await queue.bind(control, "alpha")
    await control.publish(aio_pika.Message(b"breaker-open"), routing_key="alpha")

    # Then it hears it
    async with asyncio.timeout(WAIT_TIMEOUT):
        while await queue.get(no_ack=True, fail=False) is None:
            await asyncio.sleep(0.05)

    # But binding for beta's messages, or speaking for beta, closes the channel
    with pytest.raises(ChannelAccessRefused):
        await queue.bind(control, "beta")
    other = await connection.channel(publisher_confirms=True)
    control = await other.get_exchange(apps.names.control_exchange, ensure=False)
    with pytest.raises(ChannelAccessRefused):
        async with asyncio.timeout(WAIT_TIMEOUT):
            await control.publish(aio_pika.Message(b"pause"), routing_key="beta")
