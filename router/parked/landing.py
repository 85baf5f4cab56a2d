"""The landing zones the keeper drains, and the replacement of a classic DLQ by a quorum one.

Landing zones: ``attentive.unrouted``, ``attentive.invalid`` and each application's
``attentive.app.<app>.dlq``, all quorum queues. An earlier release declared the DLQ as a
classic queue; the keeper replaces it when it first sees the application
(:meth:`DeadLetterQueues.prepare`), without a moment where the application's dead-letter
exchange has no queue bound and without losing a dead letter::

    probe: declare the DLQ with quorum arguments on a throwaway channel
        ok, and no holding queue ──▶ nothing to do
        PRECONDITION_FAILED (406: a classic DLQ), or a holding queue left ──▶ under the lock:
    1. holding queue (quorum) bound to .dead   (new dead letters land there too)
    2. classic DLQ unbound from .dead, drained into the store (ack after commit), deleted
       (if empty; drained again if not)
    3. quorum DLQ declared and bound to .dead
    4. holding queue unbound, drained into the store, deleted once empty

The lock is an exclusive queue (:meth:`~router.contract.names.Names.
app_dead_letter_migration_lock`): a second keeper finds it held (RESOURCE_LOCKED) and tries
again later, without touching the classic DLQ meanwhile; the broker frees it when its
holder's connection ends. Each step is idempotent, so a keeper killed half-way leaves a state
the next one finishes from: a holding queue still bound, or a classic DLQ still there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import TypeVar

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from router.amqp.topology import (
    CLASSIC_QUEUE_ARGUMENTS,
    QUORUM_QUEUE_ARGUMENTS,
    declare_dead_letter_queue,
)
from router.contract.names import Names
from router.parked.keeper_commit import Committer
from router.parked.model import ParkedEvent, Place, parked_event

log = structlog.get_logger("router.parked.keeper")

T = TypeVar("T")

#: Seconds a drained holding queue (unbound) is given before it is drained again and
#: deleted: a dead letter routed to it just before the unbind may still be on its way.
SETTLE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class LandingZone:
    """One queue the keeper drains, and what its deliveries are parked as."""

    queue: str
    place: Place
    #: The application of a DLQ (None for unrouted and invalid).
    app: str | None = None

    def entry(self, message: DeliveredMessage, seen_at: datetime) -> ParkedEvent:
        """The store's entry for one delivery (or ``basic.get``) from this queue."""
        frame = message.delivery
        routing_key = frame.routing_key if isinstance(frame, Basic.Deliver | Basic.GetOk) else ""
        return parked_event(
            message.body,
            message.header.properties,
            place=self.place,
            app=self.app,
            routing_key=routing_key or "",
            seen_at=seen_at,
        )


def shared_zones(names: Names) -> tuple[LandingZone, LandingZone]:
    """The landing zones of every installation: unrouted and invalid."""
    return (
        LandingZone(names.unrouted_queue, Place.UNROUTED),
        LandingZone(names.invalid_queue, Place.INVALID),
    )


def dead_letter_zone(names: Names, app: str) -> LandingZone:
    """An application's DLQ as a landing zone."""
    return LandingZone(names.app_dead_letter_queue(app), Place.DLQ, app)


def landing_zones(names: Names, apps: Iterable[str] = ()) -> list[LandingZone]:
    """Every landing zone: unrouted, invalid and the DLQ of each of ``apps``."""
    return [*shared_zones(names), *(dead_letter_zone(names, app) for app in sorted(apps))]


class Readiness(Enum):
    """What :meth:`DeadLetterQueues.prepare` found of an application's DLQ."""

    #: The quorum DLQ is there, bound: the keeper consumes it.
    READY = "ready"
    #: Another keeper is replacing a classic DLQ: try again later, do not consume it yet.
    BUSY = "busy"


class DeadLetterQueues:
    """Makes each application's DLQ the quorum landing zone, replacing a classic one."""

    def __init__(
        self, connection: AbstractConnection, names: Names, committer: Committer, batch_size: int
    ) -> None:
        self._connection = connection
        self._names = names
        self._committer = committer
        self._batch_size = batch_size

    async def prepare(self, app: str) -> Readiness:
        """Make sure ``app``'s DLQ is the bound quorum queue, migrating what needs it."""
        names = self._names
        quorum = await self._throwaway(lambda ch: declare_dead_letter_queue(ch, names, app))
        holding = await self._exists(names.app_dead_letter_holding_queue(app))
        if quorum is not None and not holding:
            return Readiness.READY
        lock = await self._connection.channel()
        try:
            await lock.declare_queue(
                names.app_dead_letter_migration_lock(app),
                durable=False,
                exclusive=True,
                arguments=CLASSIC_QUEUE_ARGUMENTS,
            )
        except aiormq.exceptions.ChannelLockedResource:
            log.info("dead_letter_queue_migration_elsewhere", app=app)
            return Readiness.READY if quorum is not None else Readiness.BUSY
        try:
            await self._migrate(app)
        finally:
            with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
                await lock.queue_delete(names.app_dead_letter_migration_lock(app))
                await lock.close()
        return Readiness.READY

    async def _migrate(self, app: str) -> None:
        """Steps 1 to 4 of the module's docstring, each skipped when already done."""
        names = self._names
        dead = names.app_dead_letter_exchange(app)
        dlq, holding = names.app_dead_letter_queue(app), names.app_dead_letter_holding_queue(app)
        zone = dead_letter_zone(names, app)
        if await self._throwaway(lambda ch: declare_dead_letter_queue(ch, names, app)) is None:
            log.info("dead_letter_queue_migrating", app=app, queue=dlq)
            channel = await self._connection.channel()
            try:
                exchange = await channel.declare_exchange(
                    dead, aio_pika.ExchangeType.FANOUT, durable=True
                )
                queue = await channel.declare_queue(
                    holding, durable=True, arguments=QUORUM_QUEUE_ARGUMENTS
                )
                await queue.bind(exchange)
                await _unbind(channel, dlq, dead)
            finally:
                await _close(channel)
            drained = await self._drain_and_delete(dlq, zone, classic=True)
            await self._channel_do(lambda ch: declare_dead_letter_queue(ch, names, app))
            log.info("dead_letter_queue_migrated", app=app, queue=dlq, drained=drained)
        if await self._exists(holding):
            await self._channel_do(lambda ch: _unbind(ch, holding, dead))
            drained = await self._drain_and_delete(holding, zone, classic=False)
            log.info("dead_letter_holding_queue_drained", app=app, drained=drained)

    async def _drain_and_delete(self, queue: str, zone: LandingZone, *, classic: bool) -> int:
        """Move every message of ``queue`` (unbound: nothing new is routed to it) into the
        store, each batch acked after its commit, then delete it, once it is empty.

        A classic queue is deleted with ``if-empty`` (drained again if something arrived).
        A quorum queue refuses ``if-empty``: it is drained again after
        :data:`SETTLE_SECONDS` (dead letters routed just before the unbind land meanwhile)
        and deleted only when it holds nothing."""
        drained = 0
        while True:
            drained += await self._drain(queue, zone)
            if not classic:
                await asyncio.sleep(SETTLE_SECONDS)
                drained += await self._drain(queue, zone)
                if await self._ready(queue):
                    continue
            channel = await self._connection.channel()
            try:
                await channel.queue_delete(queue, if_unused=False, if_empty=classic)
                return drained
            except aiormq.exceptions.ChannelNotFoundEntity:
                return drained
            except aiormq.exceptions.ChannelPreconditionFailed:
                continue  # (not empty: drain it again)
            finally:
                await _close(channel)

    async def _drain(self, queue: str, zone: LandingZone) -> int:
        """Take ``queue``'s messages with ``basic.get`` until it is empty, a batch at a time."""
        channel = await self._connection.channel()
        underlay = await channel.get_underlay_channel()
        drained = 0
        try:
            while True:
                batch: list[ParkedEvent] = []
                last = 0
                now = datetime.now(UTC)
                while len(batch) < self._batch_size:
                    message = await underlay.basic_get(queue)
                    frame = message.delivery
                    if not isinstance(frame, Basic.GetOk) or frame.delivery_tag is None:
                        break
                    batch.append(zone.entry(message, now))
                    last = frame.delivery_tag
                if not batch:
                    return drained
                await self._committer.commit(batch)
                await underlay.basic_ack(last, multiple=True)
                drained += len(batch)
        finally:
            await _close(channel)

    async def _ready(self, queue: str) -> int:
        """How many messages wait in ``queue`` (0 when it is gone)."""

        async def passive(channel: AbstractChannel) -> int:
            declared = await channel.declare_queue(queue, passive=True)
            return declared.declaration_result.message_count or 0

        return await self._throwaway(passive) or 0

    async def _exists(self, queue: str) -> bool:
        async def passive(channel: AbstractChannel) -> object:
            return await channel.declare_queue(queue, passive=True)

        return await self._throwaway(passive) is not None

    async def _throwaway(self, action: Callable[[AbstractChannel], Awaitable[T]]) -> T | None:
        """``action`` on a channel of its own; None when the broker refused it (404, 406)."""
        try:
            return await self._channel_do(action)
        except (
            aiormq.exceptions.ChannelNotFoundEntity,
            aiormq.exceptions.ChannelPreconditionFailed,
        ):
            return None

    async def _channel_do(self, action: Callable[[AbstractChannel], Awaitable[T]]) -> T:
        channel = await self._connection.channel()
        try:
            return await action(channel)
        finally:
            await _close(channel)


async def _unbind(channel: AbstractChannel, queue: str, exchange: str) -> None:
    """Remove the binding aio-pika's ``queue.bind(exchange)`` made (keyed by the queue's
    name); a binding already gone is no error."""
    underlay = await channel.get_underlay_channel()
    await underlay.queue_unbind(queue, exchange, routing_key=queue)


async def _close(channel: AbstractChannel) -> None:
    """Close a channel unless the broker already did."""
    if not channel.is_closed:
        with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
            await channel.close()


__all__ = [
    "DeadLetterQueues",
    "LandingZone",
    "Readiness",
    "dead_letter_zone",
    "landing_zones",
    "shared_zones",
]
