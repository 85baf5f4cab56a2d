"""What the router asks RabbitMQ about applications, and tells their workers.

:func:`look` passive-declares each application's queue (messages ready, consumers) and its
probe-lock queue: that exclusive queue exists exactly while the application's breaker is open
(:meth:`~router.contract.names.Names.app_probe_lock`), so a refusal because another connection
holds it, or an answer, means open, and "no such queue" means closed. Nothing is created or
consumed. :func:`publish` sends a control message on the control exchange with a publisher
confirm. Each opens one short-lived, plain connection (:func:`~router.amqp.nodes.connect_first`),
bounded by a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection

from router.amqp.nodes import BrokerUnreachable, connect_first
from router.apps.model import Breaker, QueueLook
from router.contract.control import CONTENT_TYPE, ControlMessage
from router.contract.names import Names
from router.errors import PublishFailed

#: The name of these connections in RabbitMQ's management UI.
CONNECTION_NAME = "attentive-router apps"
_FAILURES = (OSError, TimeoutError, aiormq.exceptions.AMQPError, BrokerUnreachable)


class NotNotified(PublishFailed):
    """Raised when RabbitMQ did not confirm a control message (down, refusing or too slow)."""


async def look(
    amqp_url: str, names: Names, apps: Iterable[str], *, timeout: float
) -> dict[str, tuple[Breaker, QueueLook | None]]:
    """Each application's breaker and queue as the broker shows them; every breaker
    :attr:`Breaker.UNKNOWN` (and no queue) when the broker cannot be asked within ``timeout``."""
    wanted = sorted(set(apps))
    try:
        async with asyncio.timeout(timeout):
            connection = await _connect(amqp_url, timeout)
            async with connection:
                return {app: await _look_at(connection, names, app) for app in wanted}
    except _FAILURES:
        return {app: (Breaker.UNKNOWN, None) for app in wanted}


async def publish(amqp_url: str, names: Names, message: ControlMessage, *, timeout: float) -> None:
    """Publish ``message`` (persistent) to every replica of its application, and wait for the
    broker's confirm; :class:`NotNotified` when it does not come within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            connection = await _connect(amqp_url, timeout)
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                exchange = await declare_control_exchange(channel, names)
                await exchange.publish(
                    aio_pika.Message(
                        message.to_bytes(),
                        content_type=CONTENT_TYPE,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=message.app,
                    mandatory=False,  # no worker running is no failure: they ask at start
                )
    except (*_FAILURES, aio_pika.exceptions.DeliveryError) as error:
        raise NotNotified(
            f"RabbitMQ did not confirm the {message.kind} message: {error!r}"
        ) from None


async def declare_control_exchange(
    channel: AbstractChannel, names: Names
) -> aio_pika.abc.AbstractExchange:
    """The control exchange, declared as the workers declare it (durable topic, no arguments)."""
    return await channel.declare_exchange(
        names.control_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )


async def _connect(amqp_url: str, timeout: float) -> AbstractConnection:
    connection, _ = await connect_first(amqp_url, name=CONNECTION_NAME, timeout=timeout)
    return connection


async def _look_at(
    connection: AbstractConnection, names: Names, app: str
) -> tuple[Breaker, QueueLook | None]:
    queue: QueueLook | None = None
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(names.app_queue(app), passive=True)
        ok = declared.declaration_result
        queue = QueueLook(ok.message_count or 0, ok.consumer_count or 0)
        await channel.close()
    except aiormq.exceptions.ChannelNotFoundEntity:
        pass  # no queue yet: nothing claimed, or no worker declared it
    channel = await connection.channel()
    try:
        await channel.declare_queue(names.app_probe_lock(app), passive=True)
        await channel.close()
    except aiormq.exceptions.ChannelLockedResource:  # (a kind of not-found: caught first)
        pass  # exclusive to the replica that probes
    except aiormq.exceptions.ChannelNotFoundEntity:
        return Breaker.CLOSED, queue
    return Breaker.OPEN, queue


__all__ = ["CONNECTION_NAME", "NotNotified", "declare_control_exchange", "look", "publish"]
