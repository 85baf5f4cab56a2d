"""list / show / replay / purge: one walk over a parking queue each."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from router.amqp.nodes import connect_first
from router.contract import envelope
from router.contract.names import Names
from router.deadletters.entries import (
    EVERYTHING,
    Entry,
    Filter,
    Progress,
    Summary,
    entry_from_message,
)
from router.deadletters.places import Kind, NotFound, Parked
from router.errors import InvalidInput, PublishFailed, Unavailable

#: How long a walk waits for a confirm before counting the event as failed (it stays parked).
CONFIRM_TIMEOUT = 10.0


class DeadLetters:
    """list / show / replay / purge on one broker."""

    def __init__(self, amqp_url: str, names: Names) -> None:
        self._url = amqp_url
        self._names = names

    def parked(self, kind: Kind | str, app: str | None = None) -> Parked:
        return Parked.of(self._names, kind, app)

    async def list(
        self, parked: Parked, where: Filter = EVERYTHING, *, progress: Progress | None = None
    ) -> Summary:
        """Every matching entry; nothing leaves the queue, and the order is kept."""
        summary = Summary()

        async def visit(_: AbstractChannel, message: AbstractIncomingMessage, entry: Entry) -> None:
            if where.matches(entry):
                summary.matched += 1
                summary.entries.append(entry)

        summary.total = await self._walk(parked, visit, progress)
        summary.left = summary.total
        return summary

    async def show(self, parked: Parked, message_id: str) -> Entry:
        found = await self.list(parked, Filter(message_ids=frozenset({message_id})))
        if not found.entries:
            raise NotFound(f"no event {message_id} in {parked.queue}")
        return found.entries[0]

    async def replay(
        self,
        parked: Parked,
        where: Filter = EVERYTHING,
        *,
        limit: int | None = None,
        rate: float | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> Summary:
        """Move matching events back: a DLQ's to its application queue (fresh attempt count),
        unrouted ones to ``attentive.events`` (to whoever owns them now). Publish with
        confirm, then ack; a failed publish leaves the event where it was."""
        if parked.replay_exchange is None:
            raise InvalidInput(f"events in {parked.queue} cannot be replayed, only purged")
        exchange_name = parked.replay_exchange
        summary = Summary(dry_run=dry_run)
        pacing = _Pacer(rate)

        async def visit(
            channel: AbstractChannel, message: AbstractIncomingMessage, entry: Entry
        ) -> None:
            if not where.matches(entry) or (limit is not None and summary.matched >= limit):
                return
            summary.matched += 1
            if dry_run:
                return
            await pacing.wait()
            try:
                exchange = await channel.get_exchange(exchange_name, ensure=False)
                await exchange.publish(
                    _replayed_copy(message, entry),
                    routing_key=entry.routing_key,
                    timeout=CONFIRM_TIMEOUT,
                )
            except (TimeoutError, aiormq.exceptions.AMQPError, PublishFailed, OSError):
                summary.failed += 1
                return
            await message.ack()
            summary.replayed += 1

        summary.total = await self._walk(parked, visit, progress)
        # what is parked now: unrouted events nobody owns yet come straight back
        summary.left = await self._depth(parked)
        return summary

    async def purge(
        self,
        parked: Parked,
        where: Filter = EVERYTHING,
        *,
        dry_run: bool = True,
        progress: Progress | None = None,
    ) -> Summary:
        """Delete matching events (ack them); with ``dry_run`` only count them."""
        summary = Summary(dry_run=dry_run)

        async def visit(_: AbstractChannel, message: AbstractIncomingMessage, entry: Entry) -> None:
            if not where.matches(entry):
                return
            summary.matched += 1
            if not dry_run:
                await message.ack()
                summary.purged += 1

        summary.total = await self._walk(parked, visit, progress)
        summary.left = summary.total - summary.purged
        return summary

    async def _depth(self, parked: Parked) -> int:
        try:
            connection, _ = await connect_first(self._url, name="attentive-router depth")
            async with connection:
                channel = await connection.channel()
                queue = await channel.declare_queue(parked.queue, passive=True)
                return queue.declaration_result.message_count or 0
        except (aiormq.exceptions.AMQPError, RuntimeError, OSError) as error:
            raise Unavailable(f"cannot read the depth of {parked.queue}: {error!r}") from None

    async def _walk(
        self,
        parked: Parked,
        visit: Callable[[AbstractChannel, AbstractIncomingMessage, Entry], Any],
        progress: Progress | None,
    ) -> int:
        """Get every message that was in the queue when the walk began, once; return the count."""
        connection, _ = await connect_first(self._url, name=f"attentive-router {parked.kind}")
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            try:
                queue = await channel.declare_queue(parked.queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                raise NotFound(f"queue {parked.queue} does not exist") from None
            total = queue.declaration_result.message_count or 0
            position = 0
            try:
                for position in range(1, total + 1):
                    message = await queue.get(no_ack=False, fail=False, timeout=CONFIRM_TIMEOUT)
                    if message is None:  # someone else took the rest
                        return position - 1
                    await visit(channel, message, entry_from_message(parked, position, message))
                    if progress is not None:
                        progress(position, total)
            except (aiormq.exceptions.AMQPError, RuntimeError, OSError, TimeoutError) as error:
                # nothing is lost: every message not acked goes back when the connection closes
                raise Unavailable(
                    f"stopped after {max(position - 1, 0)} of {total} in {parked.queue} "
                    f"({error!r}); what was not done stays parked"
                ) from None
            # leaving: the channel closes and every message not acked goes back, in place
            return total


def _replayed_copy(message: AbstractIncomingMessage, entry: Entry) -> aio_pika.Message:
    return aio_pika.Message(
        message.body,
        headers=envelope.replayed(entry.headers),
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        timestamp=message.timestamp,
    )


class _Pacer:
    """At most ``rate`` publishes per second."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        if self._next > now:
            await asyncio.sleep(self._next - now)
        self._next = max(self._next, now) + self._interval


__all__ = ["CONFIRM_TIMEOUT", "DeadLetters"]
