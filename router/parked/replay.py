"""A job's messages on the broker, many in flight: a replay's parked entries, a backfill's
archived events.

Where each goes and with what is its source's business (:mod:`router.parked.sources`): a
parked entry byte-exact (its body; its properties, the headers through
:func:`router.contract.envelope.replayed`: no trace of the failure, one more replay counted)
to where it came from. Every publish is mandatory and confirmed: a publish the broker
returns (no queue bound, the application queue gone) or nacks is a failure, and the entry
stays parked.

Up to ``window`` publishes wait for their confirm at once (as a bare publisher's window), and
up to ``unmarked`` (four times the window unless set) are published and not yet marked replayed:
that is the in-flight window a runner killed at any moment leaves published and still parked,
for the next runner to publish again (workers skip those by message id). Marks never wait
on the publishing, nor the publishing on the marks, until ``unmarked`` is reached. The store
records a batch (marks, counts, the last id up to which every entry is handled, the lease)
when a window's worth came back, or every ``settle_every`` seconds; a job cancelled
meanwhile, or a lease another runner took, stops the publishing there. The next entries are
read from the store while the current ones go out.

The publishes go out on a connection of their own, through the ingress's
:class:`~router.amqp.publisher.ConfirmPublisher` (a turn's publishes written together, confirms
read without a general unmarshaller), each entry's properties encoded once by
:func:`router.amqp.properties.encode`; whether an exchange exists is asked once per exchange
on the runner's aio-pika connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import aiormq
import structlog
from aio_pika.abc import AbstractConnection

from router.amqp.confirms import ConnectionLost, NotConfirmed
from router.amqp.nodes import CONNECT_TIMEOUT
from router.amqp.publisher import ConfirmPublisher
from router.amqp.url import AmqpUrl
from router.contract.names import Names
from router.errors import Unavailable
from router.parked.jobs import Job, JobState
from router.parked.sources import Outgoing, ParkedSource, Source
from router.parked.store import ParkedStore, Settled

#: Publishes outstanding at most (from the publish to the mark), unless asked otherwise.
DEFAULT_WINDOW = 256
#: How long one publish waits for its confirm before it counts as failed (seconds).
CONFIRM_TIMEOUT = 30.0
#: The longest between two records of a running replay's progress (seconds).
SETTLE_EVERY = 1.0
#: Entries read from the store at a time (at least a window).
FETCH = 512

_log = structlog.get_logger("router.jobs")


class BrokerLost(Unavailable):
    """Raised when the broker connection or channel went away during a replay: what was not
    confirmed stays parked, and the job is resumed by the next runner."""


class Pacer:
    """At most ``rate`` publishes a second (None: no limit); ``waits`` counts the pauses."""

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next = clock()
        self.waits = 0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = self._clock()
        if self._next > now:
            self.waits += 1
            await self._sleep(self._next - now)
        self._next = max(self._next, now) + self._interval


class Publisher:
    """Confirmed, mandatory publishes on a :class:`ConfirmPublisher` of its own (to ``url``);
    exchanges are checked on ``connection``."""

    def __init__(
        self,
        connection: AbstractConnection,
        url: AmqpUrl,
        names: Names,
        confirm_timeout: float,
    ) -> None:
        self._connection = connection
        self._url = url
        self.names = names
        self._timeout = confirm_timeout
        self._confirming: ConfirmPublisher | None = None
        self._exchanges: dict[str, bool] = {}

    async def open(self, name: str) -> None:
        try:
            self._confirming = await ConfirmPublisher.open(
                self._url, name=name, confirm_timeout=self._timeout, timeout=CONNECT_TIMEOUT
            )
        except (NotConfirmed, aiormq.exceptions.AMQPError, OSError, TimeoutError) as error:
            raise BrokerLost(f"cannot open a connection for the replay: {error!r}") from None

    async def close(self) -> None:
        confirming, self._confirming = self._confirming, None
        if confirming is not None:
            await confirming.close()

    async def reachable(self, exchange: str) -> bool:
        """Whether ``exchange`` exists (asked once per exchange, on a channel of its own:
        publishing to a missing exchange would close the publishing connection)."""
        known = self._exchanges.get(exchange)
        if known is None:
            try:
                channel = await self._connection.channel()
                try:
                    await channel.declare_exchange(exchange, passive=True)
                    known = True
                except aiormq.exceptions.ChannelNotFoundEntity:
                    known = False
                finally:
                    if not channel.is_closed:
                        await channel.close()
            except (aiormq.exceptions.AMQPError, RuntimeError, OSError) as error:
                raise BrokerLost(f"cannot check exchange {exchange}: {error!r}") from None
            self._exchanges[exchange] = known
        return known

    def start(self, outgoing: Outgoing) -> asyncio.Future[None]:
        """Write ``outgoing`` (its exchange found :meth:`reachable`); the future resolves on
        the broker's confirm, or fails with :class:`NotConfirmed` (returned, nacked, not
        confirmed in time: it stays where it was) or :class:`ConnectionLost`. Raises
        :class:`BrokerLost` when the connection is closed, :class:`NotConfirmed` when the
        message cannot be written (its header too large for a frame)."""
        assert outgoing.exchange is not None  # (what has nowhere to go is never started)
        if self._confirming is None:
            raise BrokerLost("the replay's connection is closed")
        try:
            return self._confirming.publish_encoded(
                outgoing.exchange, outgoing.routing_key, outgoing.body, outgoing.properties
            )
        except ConnectionLost as lost:
            raise BrokerLost(f"the broker went away during the replay: {lost}") from None


class _Window:
    """At most ``size`` taken at once, by one taker (the publishing loop): a semaphore without
    the fairness among many waiters that it does not need, and cheaper to take from."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiter: asyncio.Future[None] | None = None

    async def take(self) -> None:
        while self.free <= 0:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        self.free -= 1

    def give(self, count: int = 1) -> None:
        self.free += count
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


@dataclass
class _Flights:
    """Published entries in id order until the store recorded them: ``order[head:]`` are
    unrecorded, ``order[head:scan]`` have their outcome."""

    #: Outcomes since the last record that wake the settler (a window's worth).
    wake_at: int
    order: list[int] = field(default_factory=list)
    outcomes: dict[int, bool] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    head: int = 0
    scan: int = 0
    fresh: int = 0
    #: Why publishing stops early: the broker went away, or the store failed.
    stopped_by: BaseException | None = None

    def landed(self, entry_id: int, confirmed: bool) -> None:
        self.outcomes[entry_id] = confirmed
        self.fresh += 1
        if self.fresh >= self.wake_at:
            self.ready.set()

    def finished_prefix(self) -> int:
        """How many unrecorded entries at the head of the order have their outcome."""
        while self.scan < len(self.order) and self.order[self.scan] in self.outcomes:
            self.scan += 1
        return self.scan - self.head

    def take(self, count: int) -> tuple[list[int], int, int | None]:
        """The first ``count`` unrecorded entries: (confirmed ids, failed count, last id)."""
        taken = self.order[self.head : self.head + count]
        self.head += count
        if self.head > 4096:  # forget what was recorded, now and then
            del self.order[: self.head]
            self.scan -= self.head
            self.head = 0
        done = [entry_id for entry_id in taken if self.outcomes.pop(entry_id)]
        self.fresh = len(self.outcomes)
        return done, len(taken) - len(done), taken[-1] if taken else None


@dataclass
class Replay:
    """One run of a replay job by ``owner``: :meth:`run` publishes until the job is done,
    cancelled, taken by another runner, or the broker went away.

    ``window`` publishes at most wait for their confirm at once; ``unmarked`` (four times the
    window unless given) at most are published and not yet marked, which bounds what a
    runner killed at any moment leaves to be published twice.
    """

    store: ParkedStore
    job: Job
    owner: str
    publisher: Publisher
    lease: timedelta
    pacer: Pacer
    window: int = DEFAULT_WINDOW
    settle_every: float = SETTLE_EVERY
    unmarked: int | None = None
    #: Where the messages come from (None: the job's parked entries).
    source: Source | None = None

    @property
    def unmarked_bound(self) -> int:
        return self.unmarked or 4 * self.window

    async def run(self) -> Job:
        """The job as last recorded; :class:`BrokerLost` when the broker went away (what was
        confirmed is recorded first)."""
        flights = _Flights(wake_at=max(self.window, 1))
        slots = _Window(self.unmarked_bound)
        confirms = _Window(self.window)
        stopping = asyncio.Event()
        settler = asyncio.create_task(self._settle_loop(flights, slots, stopping))
        pending: set[asyncio.Future[None]] = set()
        try:
            await self._publish_all(flights, (slots, confirms), pending)
        finally:
            if unsettled := [future for future in pending if not future.done()]:
                await asyncio.wait(unsettled)
            stopping.set()
            flights.ready.set()
            await settler
        if flights.stopped_by is not None:
            raise flights.stopped_by
        return self.job

    def _going(self, flights: _Flights) -> bool:
        return (
            self.job.state is JobState.RUNNING
            and self.job.lease_owner == self.owner
            and flights.stopped_by is None
        )

    async def _publish_all(
        self,
        flights: _Flights,
        windows: tuple[_Window, _Window],
        pending: set[asyncio.Future[None]],
    ) -> None:
        """Publish the job's messages in the source's order, each confirm settled by a
        callback (no task per message)."""
        slots, confirms = windows
        budget = None if self.job.limit is None else self.job.limit - self.job.handled
        source = self.source or ParkedSource(self.store, self.publisher.names)
        published = 0
        batches = source.batches(self.job, max(self.window, FETCH))
        async with contextlib.aclosing(batches):
            async for batch in batches:
                for message in batch:
                    if budget is not None and published >= budget:
                        return
                    await slots.take()
                    await confirms.take()
                    if not self._going(flights):
                        return
                    await self.pacer.wait()
                    flights.order.append(message.id)
                    published += 1
                    try:
                        future = await self._start(message)
                    except BrokerLost as lost:
                        flights.stopped_by = flights.stopped_by or lost
                        return
                    if future is None:  # nowhere to go, or cannot be written: it stays
                        flights.landed(message.id, False)
                        confirms.give()
                        continue
                    pending.add(future)
                    future.add_done_callback(pending.discard)
                    future.add_done_callback(
                        functools.partial(self._confirmed, message.id, flights, confirms)
                    )
                if not self._going(flights):
                    return

    async def _start(self, message: Outgoing) -> asyncio.Future[None] | None:
        """The confirm of ``message`` once written; None when it has nowhere to go or cannot
        be written."""
        if message.exchange is None or not await self.publisher.reachable(message.exchange):
            return None
        try:
            return self.publisher.start(message)
        except NotConfirmed:
            return None

    def _confirmed(
        self,
        entry_id: int,
        flights: _Flights,
        confirms: _Window,
        future: asyncio.Future[None],
    ) -> None:
        """One publish settled: confirmed, failed (it stays parked) or the broker gone."""
        confirms.give()
        error = None if future.cancelled() else future.exception()
        if future.cancelled() or isinstance(error, ConnectionLost):
            why = "its confirm was cancelled" if error is None else str(error)
            lost = BrokerLost(f"the broker went away during the replay: {why}")
            flights.stopped_by = flights.stopped_by or lost
            flights.ready.set()
        elif error is None:
            flights.landed(entry_id, True)
        else:
            if not isinstance(error, NotConfirmed):  # a defect: this entry fails, others go on
                _log.error("replay_publish_failed", job=self.job.id, entry=entry_id, error=error)
            flights.landed(entry_id, False)

    async def _settle_loop(
        self, flights: _Flights, slots: _Window, stopping: asyncio.Event
    ) -> None:
        """Record what was confirmed: when a window's worth came back, at least every
        ``settle_every`` seconds (which renews the lease), and all of it at the end. When the
        store fails, publishing stops (every slot is given back so that it sees it)."""
        last = time.monotonic()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settle_every):
                        await flights.ready.wait()
                flights.ready.clear()
                ending = stopping.is_set()
                count = flights.finished_prefix()
                due = time.monotonic() - last >= self.settle_every
                if count >= flights.wake_at or due or (ending and count):
                    await self._settle(flights, count, slots)
                    last = time.monotonic()
                if ending:
                    return
        except Exception as error:
            flights.stopped_by = flights.stopped_by or error
            slots.give(self.unmarked_bound)

    async def _settle(self, flights: _Flights, count: int, slots: _Window) -> None:
        done, failed, last = flights.take(count)
        last_id = self.job.last_id if last is None else last
        self.job = await self.store.settle(
            self.job, self.owner, Settled(done, failed, last_id), self.lease
        )
        slots.give(count)


__all__ = [
    "CONFIRM_TIMEOUT",
    "DEFAULT_WINDOW",
    "FETCH",
    "SETTLE_EVERY",
    "BrokerLost",
    "Pacer",
    "Publisher",
    "Replay",
]
