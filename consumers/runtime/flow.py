"""Whether a replica takes deliveries: running, paused by ops, or its breaker open.

The runner asks :attr:`Flow.admitting` before each handler start and tells :meth:`Flow.record`
each outcome. The flow keeps the consumer of the application queue in step with its state
(basic.consume to run, basic.cancel to stop: the events wait in the queue), listens on the
control exchange (:mod:`consumers.runtime.control`) and, while the breaker is open, runs
the prober: the replica holding the probe lock takes one event at a time (basic.get), handles
it as usual, backs off 1 s, 2 s, 4 s … up to ``probe_max`` after each failure, and closes
the breaker for every replica when one succeeds. The others try to take the lock every
:data:`LOCK_RETRY` seconds, in case its holder died.

State outlives a reconnect: after one the flow asks the admin API whether the application is
paused (a message sent meanwhile went to a queue that no longer exists) and the broker
whether the probe lock exists (the breaker is open); an answer older than a control message
that arrived meanwhile is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal

import aiormq
import structlog
from aiormq.abc import AbstractChannel, ConsumerCallback
from prometheus_client import CollectorRegistry, Counter, Gauge

from consumers.runtime.breaker import Breaker, BreakerPolicy, counts_as_failure
from consumers.runtime.control import ControlLink, PauseState
from consumers.runtime.outcomes import Outcome
from router.contract.control import ControlKind, ControlMessage

log = structlog.get_logger("consumers")

#: Seconds between a replica's attempts to take the probe lock while another holds it.
LOCK_RETRY = 3.0
#: Errors of a broker call the flow survives (the connection loop handles a lost connection).
_BROKER_ERRORS = (aiormq.exceptions.AMQPError, OSError, RuntimeError, TimeoutError)

#: What a probe says: the event was handled (success), failed (failure), said nothing about
#: the downstream (neutral: rejected, skipped, deferred), or there was no event (empty).
ProbeResult = Literal["success", "failure", "neutral", "empty"]
Probe = Callable[[], Awaitable[ProbeResult]]
AskPaused = Callable[[], Awaitable[PauseState | None]]


def probe_result(outcome: Outcome | None) -> ProbeResult:
    """What a probe's outcome says about the downstream."""
    if outcome is None:
        return "neutral"
    failed = counts_as_failure(outcome)
    if failed is None:
        return "neutral"
    return "failure" if failed else "success"


class FlowMetrics:
    """The flow's series in a worker's registry (made once per worker)."""

    def __init__(self, app: str, registry: CollectorRegistry) -> None:
        self.app = app
        self.breaker_open = Gauge(
            "attentive_worker_breaker_open",
            "1 while the application's circuit breaker is open on this replica.",
            ["app"],
            registry=registry,
        ).labels(app)
        self.paused = Gauge(
            "attentive_worker_paused",
            "1 while the application is paused (by ops) on this replica.",
            ["app"],
            registry=registry,
        ).labels(app)
        self._probes = Counter(
            "attentive_worker_probes",
            "Probes of the downstream while the breaker is open, by result "
            "(success, failure, neutral, empty).",
            ["app", "result"],
            registry=registry,
        )
        self.returned = Counter(
            "attentive_worker_returned",
            "Deliveries returned to the queue unstarted (paused or breaker open), "
            "no attempt counted.",
            ["app"],
            registry=registry,
        ).labels(app)

    def probed(self, result: ProbeResult) -> None:
        self._probes.labels(self.app, result).inc()


class Consumer:
    """The runner's consumer of the application queue, started and cancelled at will;
    ``consuming`` is set exactly while it is registered at the broker."""

    def __init__(
        self,
        channel: AbstractChannel,
        queue: str,
        callback: ConsumerCallback,
        consuming: asyncio.Event,
    ) -> None:
        self.channel = channel
        self.queue = queue
        self._callback = callback
        self._consuming = consuming
        self._tag: str | None = None

    @property
    def active(self) -> bool:
        return self._tag is not None

    async def start(self) -> None:
        if self._tag is not None:
            return
        ok = await self.channel.basic_consume(self.queue, self._callback)
        if ok.consumer_tag is None:
            raise RuntimeError(f"RabbitMQ gave no consumer tag for {self.queue}")
        self._tag = ok.consumer_tag
        self._consuming.set()

    async def stop(self) -> None:
        """basic.cancel: no new deliveries (those already sent still arrive and are returned)."""
        tag, self._tag = self._tag, None
        self._consuming.clear()
        if tag is not None and not self.channel.is_closed:
            await self.channel.basic_cancel(tag)


class Flow:
    """One replica's state (paused, breaker open) and what follows from it."""

    def __init__(
        self,
        app: str,
        policy: BreakerPolicy,
        metrics: FlowMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        interrupt: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        #: Called whenever handlers may no longer start (the rate limit's waiters return).
        self._interrupt = interrupt
        self.policy = policy
        self.breaker = Breaker(policy, clock)
        self.metrics = metrics
        self.paused = False
        #: Whether a handler may start now: neither paused nor the breaker open.
        self.admitting = True
        self._link: ControlLink | None = None
        self._consumer: Consumer | None = None
        self._probe: Probe | None = None
        self._holding = False
        self._prober: asyncio.Task[None] | None = None
        self._unpaused = asyncio.Event()
        self._unpaused.set()
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        #: Control messages heard, to tell an answer that is older than one of them.
        self._pause_heard = 0
        self._breaker_heard = 0
        metrics.breaker_open.set(0)
        metrics.paused.set(0)

    @property
    def state(self) -> Literal["running", "paused", "breaker-open"]:
        if self.paused:
            return "paused"
        return "breaker-open" if self.breaker.is_open else "running"

    @property
    def holding_probe_lock(self) -> bool:
        return self._holding

    def record(self, outcome: Outcome) -> None:
        """Count a handled delivery's outcome; open the breaker when it says so."""
        if not self.policy.enabled or self.breaker.is_open:
            return
        failed = counts_as_failure(outcome)
        if failed is not None and self.breaker.record(failed):
            self._spawn(self._trip())

    async def attach(
        self, link: ControlLink, consumer: Consumer, probe: Probe, ask_paused: AskPaused
    ) -> None:
        """A new connection: listen, learn the state (admin API, probe lock), consume if
        running, probe if the breaker is open."""
        self._link, self._consumer, self._probe = link, consumer, probe
        self._holding = False
        pause_heard, breaker_heard = self._pause_heard, self._breaker_heard
        try:
            await link.open(self.on_control)
        except aiormq.exceptions.ChannelAccessRefused as error:
            log.error(
                "control_exchange_refused",
                app=self.app,
                error=str(error),
                effect="no pause or breaker messages reach or leave this replica",
            )
        said = await ask_paused()
        if said is not None and self._pause_heard == pause_heard:
            self._set_paused(said.paused, by=said.by, reason=said.reason)
        unheard = self._breaker_heard == breaker_heard and not self.breaker.is_open
        if self.policy.enabled and unheard and await link.probe_lock_exists():
            self._open(by="probe lock", reason="the probe lock exists")
        await self._sync()
        if self.breaker.is_open:
            self._start_prober()

    async def detach(self) -> None:
        """The connection is going or gone: stop probing (its lock goes with it)."""
        self._link = self._consumer = self._probe = None
        self._holding = False
        prober, self._prober = self._prober, None
        if prober is not None and prober is not asyncio.current_task():
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await prober

    async def on_control(self, message: ControlMessage) -> None:
        """Act on a control message for this application."""
        by, reason = message.by, message.reason
        match message.kind:
            case ControlKind.PAUSE | ControlKind.RESUME:
                self._pause_heard += 1
                self._set_paused(message.kind is ControlKind.PAUSE, by=by, reason=reason)
            case ControlKind.BREAKER_OPEN if self.policy.enabled:
                self._breaker_heard += 1
                if not self.breaker.is_open:
                    self._open(by=by, reason=reason)
                    self._start_prober()
            case ControlKind.BREAKER_CLOSED if self.policy.enabled:
                self._breaker_heard += 1
                if self.breaker.is_open:
                    await self._close(by=by)
        await self._sync()

    def _set_paused(self, paused: bool, *, by: str, reason: str = "") -> None:
        if paused == self.paused:
            return
        self.paused = paused
        self._admit()
        if paused:
            self._unpaused.clear()
            log.warning("worker_paused", app=self.app, by=by, reason=reason)
        else:
            self._unpaused.set()
            log.info("worker_resumed", app=self.app, by=by, breaker=self._breaker_word)

    @property
    def _breaker_word(self) -> str:
        return "open" if self.breaker.is_open else "closed"

    def _admit(self) -> None:
        self.admitting = not self.paused and not self.breaker.is_open
        if not self.admitting:
            self._interrupt()
        self.metrics.paused.set(1 if self.paused else 0)
        self.metrics.breaker_open.set(1 if self.breaker.is_open else 0)

    def _open(self, *, by: str, reason: str) -> None:
        self.breaker.open()
        self._admit()
        log.error("breaker_opened", app=self.app, by=by, reason=reason)

    async def _trip(self) -> None:
        """This replica's breaker opened: stop, take the lock, tell the others, probe."""
        breaker = self.breaker
        reason = (
            f"{breaker.failures} of {breaker.counted} outcomes failed in {self.policy.window:g} s"
        )
        self._admit()
        log.error("breaker_opened", app=self.app, by="this replica", reason=reason)
        await self._sync()
        link = self._link
        if link is None:
            return  # attach finds the breaker open and starts probing
        try:
            self._holding = await link.take_probe_lock()
        except _BROKER_ERRORS as error:
            log.warning("breaker_probe_lock_failed", app=self.app, error=repr(error))
        try:
            await link.publish(ControlKind.BREAKER_OPEN, reason)
        except _BROKER_ERRORS as error:
            log.warning("breaker_announce_failed", app=self.app, error=repr(error))
        self._start_prober()

    async def _close(self, *, by: str) -> None:
        """Close the breaker here; give the lock back if this replica holds it."""
        self.breaker.close()
        self._admit()
        link, holding, self._holding = self._link, self._holding, False
        if holding and link is not None:
            with contextlib.suppress(*_BROKER_ERRORS):
                await link.release_probe_lock()
        prober, self._prober = self._prober, None
        if prober is not None and prober is not asyncio.current_task():
            prober.cancel()
        log.warning("breaker_closed", app=self.app, by=by)
        await self._sync()

    def _start_prober(self) -> None:
        if self._prober is None or self._prober.done():
            self._prober = asyncio.create_task(self._probe_until_closed())

    async def _probe_until_closed(self) -> None:
        """Take the lock (or retry every :data:`LOCK_RETRY` seconds), then probe one event at
        a time, backing off after each failure, until one succeeds or the breaker closes."""
        failed = 0
        while self.breaker.is_open:
            await self._unpaused.wait()
            link, probe = self._link, self._probe
            if link is None or probe is None:
                return
            try:
                if not self._holding:
                    self._holding = await link.take_probe_lock()
                    if not self._holding:
                        await asyncio.sleep(LOCK_RETRY)
                        continue
                    log.info("breaker_probe_lock_taken", app=self.app)
                result = await probe()
            except _BROKER_ERRORS as error:
                log.warning("breaker_probe_failed", app=self.app, error=repr(error))
                await asyncio.sleep(LOCK_RETRY)
                continue
            self.metrics.probed(result)
            failed = failed + 1 if result == "failure" else failed
            wait = self._probe_wait(result, failed)
            log.info("breaker_probe", app=self.app, result=result, next_in_s=wait)
            if not self.breaker.is_open:
                return  # closed by another replica while this probe ran
            if result == "success":
                await self._recover(link)
                return
            await asyncio.sleep(wait)

    def _probe_wait(self, result: ProbeResult, failed: int) -> float:
        match result:
            case "failure":
                return self.policy.probe_delay(failed)
            case "empty":
                return self.policy.probe_first
            case _:
                return 0.0

    async def _recover(self, link: ControlLink) -> None:
        """A probe succeeded: delete the lock, tell every replica, run again."""
        self._holding = False
        try:
            await link.release_probe_lock()
            await link.publish(ControlKind.BREAKER_CLOSED, "a probe succeeded")
        except _BROKER_ERRORS as error:
            log.warning("breaker_announce_failed", app=self.app, error=repr(error))
        await self._close(by=link.by)

    async def _sync(self) -> None:
        """Consume exactly when running (one change at a time)."""
        self._admit()
        async with self._lock:
            consumer = self._consumer
            if consumer is None:
                return
            try:
                if self.admitting:
                    await consumer.start()
                else:
                    await consumer.stop()
            except _BROKER_ERRORS as error:
                log.warning("consumer_change_failed", app=self.app, error=repr(error))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


__all__ = [
    "LOCK_RETRY",
    "AskPaused",
    "Consumer",
    "Flow",
    "FlowMetrics",
    "Probe",
    "ProbeResult",
    "probe_result",
]
