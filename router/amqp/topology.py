"""Idempotent declaration of the exchanges and queues the router relies on.

::

    attentive.events (topic, durable) ──binding per claim──▶ attentive.app.<app> (quorum queues)
        └── alternate-exchange: attentive.unrouted (fanout) ──▶ attentive.unrouted (quorum queue)
    default exchange ──▶ attentive.invalid (quorum queue): authentic webhooks that cannot be parsed
    attentive.control (topic, durable), keyed by application: pause, resume, breaker messages

With the archive on (:func:`declare_archive`), the ingress publishes to an exchange in front::

    attentive.ingress (fanout, durable) ──exchange-to-exchange──▶ attentive.events (as above)
                                        └─────────────────────▶ attentive.archive (stream)

Every event reaches the events exchange with its routing key, where the claims' bindings and
the alternate exchange decide as before (an event no claim covers still goes to unrouted), and
the stream too; a publisher confirm covers every queue the message was routed to.

Declared through a robust channel, so aio-pika declares them again after a reconnect.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from pamqp.common import FieldTable

from router.contract.names import Names

#: Queue arguments of a quorum queue: replicated, durable, with a delivery limit available.
QUORUM_QUEUE_ARGUMENTS: FieldTable = {"x-queue-type": "quorum"}
CLASSIC_QUEUE_ARGUMENTS: FieldTable = {"x-queue-type": "classic"}
#: A quorum queue dead-letters with publisher confirms only with these two (RabbitMQ 3.10+);
#: otherwise dead-lettering is at-most-once.
_AT_LEAST_ONCE_DEAD_LETTERING: FieldTable = {
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


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
    # Pause, resume and breaker messages to every replica of an application (router.apps)
    await channel.declare_exchange(
        names.control_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    return Topology(events=events, direct=channel.default_exchange)


#: Defaults of ROUTER_ARCHIVE_MAX_AGE (seconds: 7 days) and ROUTER_ARCHIVE_MAX_BYTES (20 GB).
DEFAULT_ARCHIVE_MAX_AGE: Final = 7 * 86_400.0
DEFAULT_ARCHIVE_MAX_BYTES: Final = 20 * 10**9


@dataclass(frozen=True, slots=True)
class Retention:
    """How long, and up to what size, the archive stream keeps events: whichever bound is
    reached first removes the oldest segment (RabbitMQ removes whole segments, so the archive
    may hold somewhat more than either bound until the next segment closes)."""

    max_age: float = DEFAULT_ARCHIVE_MAX_AGE
    max_bytes: int = DEFAULT_ARCHIVE_MAX_BYTES

    def arguments(self) -> FieldTable:
        """The stream's queue arguments (``x-max-age`` in whole seconds, at least one)."""
        return {
            "x-queue-type": "stream",
            "x-max-age": f"{max(1, round(self.max_age))}s",
            "x-max-length-bytes": self.max_bytes,
        }


async def declare_archive(channel: AbstractChannel, names: Names, retention: Retention) -> None:
    """Declare the archive stream with ``retention`` and the exchange in front of it and of the
    events exchange (which :func:`declare` made), bound to both: a no-op when they exist.

    Raises :class:`aiormq.exceptions.ChannelPreconditionFailed` (the channel is then closed)
    when the stream exists with other retention; :func:`link_archive` then binds the front
    exchange to the stream as it is."""
    await channel.declare_queue(names.archive_stream, durable=True, arguments=retention.arguments())
    await link_archive(channel, names)


async def link_archive(channel: AbstractChannel, names: Names) -> None:
    """Declare the front exchange and bind it to the events exchange and to the existing
    archive stream (checked, never redeclared: its retention stays as it is)."""
    front = await channel.declare_exchange(
        names.ingress_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    archive = await channel.declare_queue(names.archive_stream, passive=True)
    await archive.bind(front)
    events = await channel.get_exchange(names.events_exchange)
    await events.bind(front)


#: Deliveries after which RabbitMQ itself dead-letters an event from an application queue:
#: an event that crashes its workers again and again (they never get to count an attempt).
APP_DELIVERY_LIMIT = 20


def app_queue_arguments(names: Names, app: str) -> FieldTable:
    """The arguments of an application's queue (also what the published contract shows)."""
    return {
        **QUORUM_QUEUE_ARGUMENTS,
        "x-delivery-limit": APP_DELIVERY_LIMIT,
        "x-dead-letter-exchange": names.app_dead_letter_exchange(app),
        **_AT_LEAST_ONCE_DEAD_LETTERING,
    }


def retry_queue_arguments(names: Names, app: str, delay_ms: int) -> FieldTable:
    """The arguments of one retry tier's queue: its TTL expires events back to the app queue."""
    return {
        **QUORUM_QUEUE_ARGUMENTS,
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": names.app_requeue_exchange(app),
        **_AT_LEAST_ONCE_DEAD_LETTERING,
    }


async def declare_app_queue(
    channel: AbstractChannel, names: Names, app: str, *, with_dead_letter_queue: bool = True
) -> aio_pika.abc.AbstractQueue:
    """The durable quorum queue of one application (its replicas share it), and its neighbours.

    ::

        attentive.app.<app> ──(delivery limit, at-least-once)──▶ .dead (fanout) ──▶ .dlq
        .requeue (fanout) ──▶ attentive.app.<app>      (expired retries come back this way)

    The dead-letter queue is a landing zone, a quorum queue (replicated) like unrouted and
    invalid: the keeper (:mod:`router.parked.keeper`) drains it into the parked-event store,
    where ops list and replay dead letters. A worker declares everything but the DLQ itself
    (``with_dead_letter_queue=False``): the router declares it when a claim is granted, and
    the keeper when it first sees the application (replacing a classic DLQ of an earlier
    release: :mod:`router.parked.landing`). Declaring it here over such a classic queue fails
    with PRECONDITION_FAILED until the keeper has replaced it.
    """
    if with_dead_letter_queue:
        await declare_dead_letter_queue(channel, names, app)
    else:
        await channel.declare_exchange(
            names.app_dead_letter_exchange(app), aio_pika.ExchangeType.FANOUT, durable=True
        )
    queue = await channel.declare_queue(
        names.app_queue(app), durable=True, arguments=app_queue_arguments(names, app)
    )
    requeue = await channel.declare_exchange(
        names.app_requeue_exchange(app), aio_pika.ExchangeType.FANOUT, durable=True
    )
    await queue.bind(requeue)
    return queue


async def declare_dead_letter_queue(
    channel: AbstractChannel, names: Names, app: str
) -> aio_pika.abc.AbstractQueue:
    """An application's dead-letter exchange (fanout) and its quorum DLQ bound to it."""
    dead = await channel.declare_exchange(
        names.app_dead_letter_exchange(app), aio_pika.ExchangeType.FANOUT, durable=True
    )
    dlq = await channel.declare_queue(
        names.app_dead_letter_queue(app), durable=True, arguments=QUORUM_QUEUE_ARGUMENTS
    )
    await dlq.bind(dead)
    return dlq


async def declare_retry_queues(
    channel: AbstractChannel, names: Names, app: str, delays_ms: Iterable[int]
) -> AbstractExchange:
    """One delay queue per retry tier: an event waits there, then expires back to the app queue."""
    retry = await channel.declare_exchange(
        names.app_retry_exchange(app), aio_pika.ExchangeType.DIRECT, durable=True
    )
    for delay_ms in delays_ms:
        queue = await channel.declare_queue(
            names.app_retry_queue(app, delay_ms),
            durable=True,
            arguments=retry_queue_arguments(names, app, delay_ms),
        )
        await queue.bind(retry, routing_key=retry_routing_key(delay_ms))
    return retry


def retry_routing_key(delay_ms: int) -> str:
    """The routing key of the retry exchange that leads to the ``delay_ms`` tier."""
    return f"{delay_ms}ms"


async def delete_app(
    channel: AbstractChannel, names: Names, app: str, delays_ms: Iterable[int] = ()
) -> None:
    """Remove an application's queues and exchanges (tests and decommissioning)."""
    for queue in (
        names.app_queue(app),
        names.app_dead_letter_queue(app),
        *(names.app_retry_queue(app, d) for d in delays_ms),
    ):
        await channel.queue_delete(queue)
    for exchange in (
        names.app_dead_letter_exchange(app),
        names.app_requeue_exchange(app),
        names.app_retry_exchange(app),
    ):
        await channel.exchange_delete(exchange)


async def delete(channel: AbstractChannel, names: Names) -> None:
    """Remove everything :func:`declare` and :func:`declare_archive` made (used by tests and
    ``make clean``-style tools)."""
    for queue in (names.unrouted_queue, names.invalid_queue, names.archive_stream):
        await channel.queue_delete(queue)
    for exchange in (
        names.ingress_exchange,
        names.events_exchange,
        names.unrouted_exchange,
        names.control_exchange,
    ):
        await channel.exchange_delete(exchange)


__all__ = [
    "APP_DELIVERY_LIMIT",
    "CLASSIC_QUEUE_ARGUMENTS",
    "DEFAULT_ARCHIVE_MAX_AGE",
    "DEFAULT_ARCHIVE_MAX_BYTES",
    "QUORUM_QUEUE_ARGUMENTS",
    "Retention",
    "Topology",
    "app_queue_arguments",
    "declare",
    "declare_app_queue",
    "declare_archive",
    "declare_dead_letter_queue",
    "declare_retry_queues",
    "delete",
    "delete_app",
    "link_archive",
    "retry_queue_arguments",
    "retry_routing_key",
]
