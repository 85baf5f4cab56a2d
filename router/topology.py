"""Idempotent declaration of the exchanges and queues the router relies on.

::

    attentive.events (topic, durable) ──binding per claim──▶ attentive.app.<app> (quorum queues)
        └── alternate-exchange: attentive.unrouted (fanout) ──▶ attentive.unrouted (quorum queue)
    default exchange ──▶ attentive.invalid (quorum queue): authentic webhooks that cannot be parsed

Declared through a robust channel, so aio-pika declares them again after a reconnect.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from pamqp.common import FieldTable

from router.names import Names

#: Queue arguments of a quorum queue: replicated, durable, with a delivery limit available.
QUORUM_QUEUE_ARGUMENTS: FieldTable = {"x-queue-type": "quorum"}


@dataclass(frozen=True, slots=True)
class Topology:
    """The exchanges the ingress publishes to."""

    events: AbstractExchange
    #: The default exchange: publishing to it with a queue's name puts a message in that queue.
    direct: AbstractExchange


async def declare(channel: AbstractChannel, names: Names) -> Topology:
    """Declare the router's exchanges and queues (a no-op when they already exist)."""
    unrouted = await channel.declare_exchange(
        names.unrouted_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    unrouted_queue = await channel.declare_queue(
        names.unrouted_queue, durable=True, arguments=QUORUM_QUEUE_ARGUMENTS
    )
    await unrouted_queue.bind(unrouted)
    await channel.declare_queue(names.invalid_queue, durable=True, arguments=QUORUM_QUEUE_ARGUMENTS)
    events = await channel.declare_exchange(
        names.events_exchange,
        aio_pika.ExchangeType.TOPIC,
        durable=True,
        arguments={"alternate-exchange": names.unrouted_exchange},
    )
    return Topology(events=events, direct=channel.default_exchange)


async def declare_app_queue(
    channel: AbstractChannel, names: Names, app: str
) -> aio_pika.abc.AbstractQueue:
    """The durable quorum queue of one application (its replicas share it)."""
    return await channel.declare_queue(
        names.app_queue(app), durable=True, arguments=QUORUM_QUEUE_ARGUMENTS
    )


async def delete(channel: AbstractChannel, names: Names) -> None:
    """Remove everything :func:`declare` made (used by tests and ``make clean``-style tools)."""
    for queue in (names.unrouted_queue, names.invalid_queue):
        await channel.queue_delete(queue)
    for exchange in (names.events_exchange, names.unrouted_exchange):
        await channel.exchange_delete(exchange)


__all__ = ["QUORUM_QUEUE_ARGUMENTS", "Topology", "declare", "declare_app_queue", "delete"]
