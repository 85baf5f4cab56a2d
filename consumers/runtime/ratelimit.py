"""A rate limit per application, shared by all its replicas: at most R handler starts a second.

The replicas agree without talking to each other: each allows ``R / n`` starts a second, ``n``
being the consumer count of the application's queue (each consuming replica holds one
consumer there), read by a passive declare every :data:`REFRESH_INTERVAL` seconds. A replica
that joins or leaves is counted by the others within that interval; a paused replica or one
whose breaker is open holds no consumer, so the others take its share. A failed count keeps
the last one, and ``n`` is at least 1.

Within a replica, a :class:`TokenBucket` holding at most one second's share (and one token
at the start, so a restart or a resume does not begin with a burst) is shared by the
handler starts in arrival order (:class:`FairQueue`); one timer wakes the first waiter when
its token is due, nothing polls. The bucket and the queue are pure (they are told the time);
:class:`RateLimiter` runs them on the event loop's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection
from prometheus_client import CollectorRegistry, Counter, Gauge

from consumers.runtime.errors import WorkerConfigError

log = structlog.get_logger("consumers")

#: Seconds between two counts of the application queue's consumers.
REFRESH_INTERVAL = 2.0
#: Tokens within this much of a whole one count as a whole one (float rounding of a refill).
_EPSILON = 1e-9

T = TypeVar("T")


class TokenBucket:
    """Tokens that come at ``rate`` a second, at most ``burst`` seconds' worth held (one
    token at least). Pure: each method is told the time ``now`` (seconds, any clock that
    does not go back)."""

    def __init__(self, rate: float, now: float, *, burst: float = 1.0, tokens: float = 1.0) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("a token bucket needs a positive rate and burst")
        self._rate = rate
        self._burst = burst
        self._tokens = min(tokens, self.capacity)
        self._at = now

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def capacity(self) -> float:
        """The most tokens the bucket holds: ``burst`` seconds' worth, one at least."""
        return max(1.0, self._rate * self._burst)

    def set_rate(self, rate: float, now: float) -> None:
        """Tokens come at ``rate`` from ``now`` on (those held stay, up to the new capacity)."""
        if rate <= 0:
            raise ValueError("a token bucket needs a positive rate")
        self._refill(now)
        self._rate = rate
        self._tokens = min(self._tokens, self.capacity)

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        self._refill(now)
        if self._tokens < 1.0 - _EPSILON:
            return False
        self._tokens = max(0.0, self._tokens - 1.0)
        return True

    def ready_in(self, now: float) -> float:
        """Seconds from ``now`` until a token is there (0 when one is)."""
        self._refill(now)
        return max(0.0, (1.0 - self._tokens) / self._rate)

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self._rate)
            self._at = now


class FairQueue(Generic[T]):
    """A bucket's tokens given to waiters in the order they came: a newcomer passes at once
    only when nobody waits. Pure, like the bucket."""

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        self._waiting: deque[T] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def try_pass(self, now: float) -> bool:
        """Take a token for a newcomer if nobody waits and there is one; else it must wait."""
        return not self._waiting and self.bucket.take(now)

    def join(self, item: T) -> None:
        """``item`` waits behind those already waiting."""
        self._waiting.append(item)

    def leave(self, item: T) -> None:
        """``item`` no longer waits (it gave up); those behind it move up."""
        with contextlib.suppress(ValueError):
            self._waiting.remove(item)

    def due(self, now: float, gone: Callable[[T], bool] = lambda _: False) -> list[T]:
        """The waiters whose token is there now, first come first, each taking one; waiters
        for which ``gone`` holds are dropped without a token."""
        out: list[T] = []
        while self._waiting:
            if gone(self._waiting[0]):
                self._waiting.popleft()
            elif self.bucket.take(now):
                out.append(self._waiting.popleft())
            else:
                break
        return out

    def clear(self) -> list[T]:
        """Every waiter, first come first, now none waiting (no token taken)."""
        out = list(self._waiting)
        self._waiting.clear()
        return out

    def next_in(self, now: float) -> float | None:
        """Seconds until the first waiter's token is there; None when nobody waits."""
        return self.bucket.ready_in(now) if self._waiting else None


class RateLimiter:
    """At most ``rate`` handler starts a second across every replica of ``app`` (None: no
    limit: :meth:`acquire` costs nothing and there are no metrics); ``queue`` is the
    application's queue, whose consumers are the replicas.

    ``await acquire()`` before each handler start; ``await start(connection)`` once
    connected (again after a reconnect, with the new connection) to count the replicas
    every ``interval`` seconds; ``interrupt()`` when handlers may no longer start (every
    waiter returns); ``await stop()`` at the end. ``registry`` gets
    ``attentive_worker_rate_limited_seconds_total{app}`` (time handler starts waited) and
    ``attentive_worker_rate_limit_per_second{app}`` (this replica's share now).
    """

    def __init__(
        self,
        app: str,
        queue: str,
        rate: float | None,
        *,
        registry: CollectorRegistry | None = None,
        interval: float = REFRESH_INTERVAL,
    ) -> None:
        if rate is not None and not rate > 0:
            raise WorkerConfigError(f"the rate limit of {app} must be positive, not {rate}")
        self.app = app
        self.queue = queue
        self.rate = rate
        self.interval = interval
        self.replicas = 1
        self._fair: FairQueue[asyncio.Future[None]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._source: AbstractConnection | AbstractChannel | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._failing = False
        if rate is not None:
            self._waited, self._share_gauge = _metrics(
                app, registry if registry is not None else CollectorRegistry()
            )
            self._share_gauge.set(rate)

    @property
    def share(self) -> float | None:
        """Handler starts a second this replica allows now (None: no limit)."""
        return None if self.rate is None else self.rate / self.replicas

    async def acquire(self) -> float:
        """Wait for this replica's turn to start a handler; the seconds it waited."""
        if self.rate is None:
            return 0.0
        loop = asyncio.get_running_loop()
        now = loop.time()
        fair = self._queue(now)
        if fair.try_pass(now):
            return 0.0
        waiter: asyncio.Future[None] = loop.create_future()
        fair.join(waiter)
        self._arm(loop)
        try:
            await waiter
        except asyncio.CancelledError:
            fair.leave(waiter)
            raise
        waited = loop.time() - now
        self._waited.inc(waited)
        return waited

    def interrupt(self) -> None:
        """Every handler start waiting now returns at once, without a token: for when no
        handler may start any more (paused, the breaker open, a drain), so the deliveries in
        hand go back to the queue now rather than at the rate limit's pace. The caller asks
        again whether the handler may start after :meth:`acquire` returns."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fair is not None:
            for waiter in self._fair.clear():
                if not waiter.done():
                    waiter.set_result(None)

    async def start(self, source: AbstractConnection | AbstractChannel) -> None:
        """Count the replicas now and then every ``interval`` on ``source``: a connection
        (a channel of its own for each count) or a channel (used as it is: a queue that
        does not exist closes it)."""
        if self.rate is None:
            return
        self._source = source
        await self.refresh()
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh_forever())

    async def stop(self) -> None:
        """Stop counting the replicas (waiters keep the last share)."""
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher

    async def refresh(self) -> int:
        """Count the replicas once (the last count stays if this fails); the count."""
        if self._source is None:
            return self.replicas
        try:
            async with asyncio.timeout(self.interval):
                consumers = await _consumer_count(self._source, self.queue)
        except (TimeoutError, aiormq.exceptions.AMQPError, OSError, RuntimeError) as error:
            if not self._failing:
                log.warning(
                    "rate_limit_count_failed", app=self.app, queue=self.queue, error=repr(error)
                )
            self._failing = True
            return self.replicas
        self._failing = False
        self._set_replicas(max(1, consumers))
        return self.replicas

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()

    def _set_replicas(self, replicas: int) -> None:
        if replicas == self.replicas:
            return
        self.replicas = replicas
        share = self.share
        assert share is not None
        self._share_gauge.set(share)
        log.info("rate_limit_share", app=self.app, rate=self.rate, replicas=replicas, share=share)
        if self._fair is not None:
            loop = asyncio.get_running_loop()
            self._fair.bucket.set_rate(share, loop.time())
            if self._timer is not None:  # the first waiter's token comes sooner or later now
                self._timer.cancel()
                self._timer = None
                self._arm(loop)

    def _queue(self, now: float) -> FairQueue[asyncio.Future[None]]:
        if self._fair is None:
            share = self.share
            assert share is not None
            self._fair = FairQueue(TokenBucket(share, now))
        return self._fair

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """One timer, for when the first waiter's token is due."""
        if self._timer is not None or self._fair is None:
            return
        delay = self._fair.next_in(loop.time())
        if delay is not None:
            self._timer = loop.call_later(delay, self._wake, loop)

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        assert self._fair is not None
        for waiter in self._fair.due(loop.time(), gone=_done):
            waiter.set_result(None)
        self._arm(loop)


def _metrics(app: str, registry: CollectorRegistry) -> tuple[Counter, Gauge]:
    """The waits and the share of ``app``'s rate limit, in ``registry``."""
    waited = Counter(
        "attentive_worker_rate_limited_seconds",
        "Seconds handler starts waited for the application's rate limit.",
        ["app"],
        registry=registry,
    )
    share = Gauge(
        "attentive_worker_rate_limit_per_second",
        "Handler starts a second this replica allows now: the limit over the replicas.",
        ["app"],
        registry=registry,
    )
    return waited.labels(app), share.labels(app)


def _done(waiter: asyncio.Future[None]) -> bool:
    return waiter.done()


async def _consumer_count(source: AbstractConnection | AbstractChannel, queue: str) -> int:
    """The consumers of ``queue`` (a passive declare), on ``source``."""
    if isinstance(source, AbstractChannel):
        underlay = await source.get_underlay_channel()
        return int((await underlay.queue_declare(queue, passive=True)).consumer_count or 0)
    channel = await source.channel(publisher_confirms=False)
    try:
        underlay = await channel.get_underlay_channel()
        return int((await underlay.queue_declare(queue, passive=True)).consumer_count or 0)
    finally:
        if not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()


__all__ = ["REFRESH_INTERVAL", "FairQueue", "RateLimiter", "TokenBucket"]
