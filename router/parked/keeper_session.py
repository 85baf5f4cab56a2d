"""One keeper connection's work: consume the landing zones, commit in batches, then ack.

All landing zones are consumed on one channel with a bounded prefetch per consumer
(``basic.qos`` per consumer, never global). Each delivery is made into its store entry as it
arrives (while the batch before it commits) and collects in an :class:`Inbox`, in the order
the broker sent them; a batch is its oldest ``batch_size`` deliveries (or fewer, after
``batch_wait`` seconds). It is committed to the store, and only then acked with one
``basic.ack multiple=True`` up to its last delivery tag: every delivery of the channel up to
that tag belongs to this batch or an earlier one, all committed. A commit is retried until
the store takes it (:class:`~router.parked.keeper_commit.Committer`); meanwhile nothing is
acked and the prefetch stops the broker from sending more. A delivery seen again (the
connection was lost before its ack, or another keeper had it) is stored once: the store
dedupes by fingerprint.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from router.amqp import topology
from router.contract.names import Names
from router.parked.jobs import JobState
from router.parked.keeper_commit import Committer
from router.parked.landing import (
    DeadLetterQueues,
    LandingZone,
    Readiness,
    dead_letter_zone,
    shared_zones,
)
from router.parked.metrics import KeeperMetrics
from router.parked.model import ParkedEvent
from router.parked.query import Query
from router.parked.settings import KeeperSettings
from router.parked.store import ParkedStoreError

log = structlog.get_logger("router.parked.keeper")

#: Seconds a stopping keeper gives the deliveries it holds to be committed and acked.
STOP_TIMEOUT = 10.0
#: Reasons counted per landing zone, at most (a worker's reasons are a handful).
MAX_REASONS = 20

#: A delivery's entry, made as it arrived (while the batch before it commits), and its tag.
Delivered = tuple[ParkedEvent, int]
T = TypeVar("T")


class Inbox:
    """Deliveries waiting for their batch, oldest first."""

    def __init__(self, batch_size: int) -> None:
        self._size = batch_size
        self._items: list[Delivered] = []
        self._some = asyncio.Event()
        self._full = asyncio.Event()
        self._failed: BaseException | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, entry: ParkedEvent, tag: int) -> None:
        self._items.append((entry, tag))
        self._some.set()
        if len(self._items) >= self._size:
            self._full.set()

    def fail(self, error: BaseException) -> None:
        """A delivery could not be taken in: the next :meth:`take` raises ``error``, so no ack
        goes past it (acks are ``multiple``); the broker redelivers it with the connection."""
        self._failed = error
        self._some.set()

    async def take(self, wait: float) -> list[Delivered]:
        """The oldest ``batch_size`` deliveries, once there are that many or ``wait`` seconds
        after there was one."""
        await self._some.wait()
        if not self._full.is_set() and wait > 0 and self._failed is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._full.wait()
        if self._failed is not None:
            raise self._failed
        batch, self._items = self._items[: self._size], self._items[self._size :]
        if len(self._items) < self._size:
            self._full.clear()
        if not self._items:
            self._some.clear()
        return batch


class Session:
    """The keeper's work on one broker connection, until it stops or the connection ends."""

    def __init__(
        self,
        connection: AbstractConnection,
        names: Names,
        settings: KeeperSettings,
        committer: Committer,
        claimed_apps: Callable[[], Awaitable[set[str] | None]],
        metrics: KeeperMetrics | None,
        on_ready: Callable[[frozenset[str]], None],
    ) -> None:
        self._connection = connection
        self._names = names
        self._settings = settings
        self._committer = committer
        self._claimed_apps = claimed_apps
        self._metrics = metrics
        self._on_ready = on_ready
        self._inbox = Inbox(settings.batch_size)
        self._dead_letters = DeadLetterQueues(connection, names, committer, settings.batch_size)
        self._zones: list[LandingZone] = []
        self._tags: list[str] = []
        self._committing = False
        self._underlay: aiormq.abc.AbstractChannel | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until ``stop`` is set (then settle what is held) or the connection ends."""
        connection = self._connection
        await self._on_channel(lambda channel: topology.declare(channel, self._names))
        channel = await connection.channel()
        channel.close_callbacks.add(lambda *_: asyncio.ensure_future(connection.close()))
        await channel.set_qos(prefetch_count=self._settings.prefetch)
        self._underlay = await channel.get_underlay_channel()
        for zone in shared_zones(self._names):
            await self._consume(zone)
        tasks = {
            asyncio.create_task(self._flush(), name="keeper-flush"),
            asyncio.create_task(self._watch_apps(), name="keeper-apps"),
        }
        if self._metrics is not None:
            tasks.add(asyncio.create_task(self._poll_stats(self._metrics), name="keeper-stats"))
        closed = asyncio.ensure_future(connection.closed())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({closed, stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set() and not connection.is_closed:
                await self._settle()
            for task in tasks:
                if task.done() and not task.cancelled():
                    task.result()  # (raises what ended it: the channel closed, a broker error)
        finally:
            for future in (closed, stopping, *tasks):
                future.cancel()
            await asyncio.gather(closed, stopping, *tasks, return_exceptions=True)

    async def _consume(self, zone: LandingZone) -> None:
        assert self._underlay is not None
        inbox = self._inbox

        async def delivered(message: DeliveredMessage) -> None:
            try:
                inbox.put(zone.entry(message, datetime.now(UTC)), _tag(message))
            except Exception as error:  # (ends the session: see Inbox.fail)
                inbox.fail(error)

        consuming = await self._underlay.basic_consume(zone.queue, delivered)
        if consuming.consumer_tag is not None:
            self._tags.append(consuming.consumer_tag)
        self._zones.append(zone)
        log.info("keeper_draining", queue=zone.queue, place=zone.place.value, app=zone.app)

    async def _flush(self) -> None:
        """Take batches, commit each, then ack it."""
        assert self._underlay is not None
        underlay, inbox, wait = self._underlay, self._inbox, self._settings.batch_wait
        while True:
            batch = await inbox.take(wait)
            self._committing = True
            try:
                await self._committer.commit([entry for entry, _ in batch])
                await underlay.basic_ack(batch[-1][1], multiple=True)
            finally:
                self._committing = False

    async def _settle(self) -> None:
        """Stop taking deliveries; commit and ack what is held (within :data:`STOP_TIMEOUT`:
        what is still unacked then goes back to the queues when the connection closes)."""
        assert self._underlay is not None
        with contextlib.suppress(TimeoutError, aiormq.exceptions.AMQPError, RuntimeError):
            async with asyncio.timeout(STOP_TIMEOUT):
                for tag in self._tags:
                    await self._underlay.basic_cancel(tag)
                await asyncio.sleep(0)  # (deliveries read before the cancel reach the inbox)
                while len(self._inbox) or self._committing:
                    await asyncio.sleep(0.02)

    async def _watch_apps(self) -> None:
        """Every ``apps_interval`` seconds, drain the DLQ of each newly claimed application."""
        consumed: set[str] = set()
        while True:
            apps = await self._claimed_apps()
            for app in sorted((apps or set()) - consumed):
                if await self._dead_letters.prepare(app) is Readiness.READY:
                    await self._consume(dead_letter_zone(self._names, app))
                    consumed.add(app)
            self._on_ready(frozenset(consumed))
            await asyncio.sleep(self._settings.apps_interval)

    async def _poll_stats(self, metrics: KeeperMetrics) -> None:
        """Every ``stats_interval`` seconds: each landing zone's depth, the store's size; every
        ``parked_interval`` seconds (or ten times as long as the last counting took), the
        entries still parked of each zone's place, by reason."""
        loop = asyncio.get_running_loop()
        channel: AbstractChannel | None = None
        counted_at: float | None = None
        wait_for_count = self._settings.parked_interval
        while True:
            channel = await self._show_depths(metrics, channel)
            due = counted_at is None or loop.time() - counted_at >= wait_for_count
            if self._committer.available:
                with contextlib.suppress(ParkedStoreError):
                    started = loop.time()
                    await self._show_store(metrics, count_parked=due)
                    if due:
                        # counting millions takes seconds: never more than a tenth of the time
                        counted_at = loop.time()
                        took = counted_at - started
                        wait_for_count = max(self._settings.parked_interval, 10 * took)
            await asyncio.sleep(self._settings.stats_interval)

    async def _show_depths(
        self, metrics: KeeperMetrics, channel: AbstractChannel | None
    ) -> AbstractChannel | None:
        """Each landing zone's ready messages (passive declares); the channel to use next."""
        for zone in list(self._zones):
            if channel is None or channel.is_closed:
                channel = await self._connection.channel()
            try:
                queue = await channel.declare_queue(zone.queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                continue
            metrics.lag.labels(zone.queue).set(queue.declaration_result.message_count or 0)
        return channel

    async def _show_store(self, metrics: KeeperMetrics, *, count_parked: bool) -> None:
        store = self._committer.store
        metrics.show_stats(await store.stats())
        unfinished = [
            job for state in (JobState.QUEUED, JobState.RUNNING) for job in await store.jobs(state)
        ]
        metrics.show_jobs(unfinished)
        if count_parked:
            for zone in list(self._zones):
                counted = await store.facets(Query(place=zone.place, app=zone.app), MAX_REASONS)
                by_reason = {bucket.value or "": bucket.count for bucket in counted.reasons}
                metrics.show_parked(zone.place.value, zone.app, by_reason)

    async def _on_channel(self, action: Callable[[AbstractChannel], Awaitable[T]]) -> T:
        channel = await self._connection.channel()
        try:
            return await action(channel)
        finally:
            if not channel.is_closed:
                await channel.close()


def _tag(message: DeliveredMessage) -> int:
    """A consumed delivery's tag."""
    frame = message.delivery
    if not isinstance(frame, Basic.Deliver) or frame.delivery_tag is None:
        raise TypeError(f"not a consumed delivery: {frame!r}")
    return frame.delivery_tag


__all__ = ["STOP_TIMEOUT", "Inbox", "Session"]
