"""Running a worker against RabbitMQ: claim, consume, settle every delivery, drain on stop.

Whether it consumes at all is the flow's (:mod:`consumers.runtime.flow`): it stops while
the application is paused or its circuit breaker is open, returning deliveries it has not
started (no attempt counted), and then probes one event at a time.

Every move between queues is publish-with-confirm, then ack
(:mod:`consumers.runtime.settling`). A worker killed at any instant leaves its unacked
deliveries to be redelivered; one that crashes again and again is stopped by the queue's
delivery limit (RabbitMQ dead-letters it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import aiormq
import structlog
from aio_pika.abc import AbstractConnection
from aiohttp import web
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic
from prometheus_client import generate_latest

from consumers.runtime.claiming import claim_events
from consumers.runtime.control import (
    CONTROL_TIMEOUT,
    AdminView,
    ControlLink,
    PauseState,
    replica_name,
)
from consumers.runtime.delivery import Delivery
from consumers.runtime.errors import Reject, WorkerConfigError
from consumers.runtime.event import Event
from consumers.runtime.flow import Consumer, Flow, ProbeResult, probe_result
from consumers.runtime.lanes import Lanes
from consumers.runtime.newest_open import newest_store_from_url
from consumers.runtime.newest_stores import MemoryNewestStore
from consumers.runtime.outcomes import DeadLetter, Outcome
from consumers.runtime.ratelimit import RateLimiter
from consumers.runtime.settings import WorkerSettings
from consumers.runtime.settling import Settler
from consumers.runtime.shared_stores import idempotency_store_from_url
from consumers.runtime.worker import Worker
from router.amqp.nodes import BrokerUnreachable, connect_first
from router.amqp.topology import declare_app_queue, declare_retry_queues
from router.contract import envelope
from router.errors import ConfigError
from router.observability import log_trace_ids
from router.tracing import start_tracing

if TYPE_CHECKING:
    from consumers.runtime.tracing import DeliverySpans
    from router.tracing.provider import Tracing

log = structlog.get_logger("consumers")

#: Seconds between attempts to reach a broker node.
RECONNECT_INTERVAL = 1.0
#: The delay tier a deferred delivery waits in when the retry policy has no tier at all.
DEFER_MS_WITHOUT_TIERS = 1_000


class WorkerRunner:
    """Consumes one application's queue with one worker definition."""

    def __init__(self, worker: Worker, settings: WorkerSettings) -> None:
        self.worker = worker
        self.settings = settings
        self.names = settings.names
        self._tasks: set[asyncio.Task[Outcome | None]] = set()
        self._stopping = False
        self._settler = Settler(worker.app, self._tiers_ms, settings.publish_timeout)
        self._channel: AbstractChannel | None = None
        self._queue = self.names.app_queue(worker.app)
        #: Set exactly while the application queue's consumer is registered.
        self.consuming = asyncio.Event()
        #: Running, paused or breaker open: :mod:`consumers.runtime.flow`.
        rate = settings.rate_limit or worker.rate_limit
        self._limiter = RateLimiter(worker.app, self._queue, rate, registry=worker.registry)
        self._limited = rate is not None
        #: Per-key lanes taken before the rate limit, for handlers with a newest family.
        self._lanes = Lanes()
        self.flow = Flow(
            worker.app,
            settings.breaker_policy(worker.breaker),
            worker.flow_metrics,
            interrupt=self._limiter.interrupt,
        )
        self._by = replica_name(worker.app)
        self._admin = AdminView(
            settings.admin_url, settings.admin_token.reveal(), ca_file=settings.admin_ca
        )
        #: With tracing on (``OTEL_*``: router.tracing), this process's tracer, from :meth:`run`.
        self.tracing: Tracing | None = None
        self._spans: DeliverySpans | None = None

    async def run(self, stop: asyncio.Event, *, claim: bool = True) -> None:
        """Claim, consume until ``stop`` is set, then drain and close."""
        worker = self.worker
        worker.metrics_max_other_types = self.settings.metrics_max_other_types
        if claim:
            await claim_events(worker, self.settings)
        if self.settings.idempotency_url:
            worker.use_idempotency(
                idempotency_store_from_url(
                    self.settings.idempotency_url.reveal(), lease=self.settings.idempotency_lease
                )
            )
        self._use_newest()
        async with contextlib.AsyncExitStack() as resources:
            await worker.idempotency.open()
            resources.push_async_callback(worker.idempotency.close)
            if worker.families:
                await worker.newest_store.open()
                resources.push_async_callback(worker.newest_store.close)
            for hook in worker.on_startup:
                await hook()
            for hook in reversed(worker.on_shutdown):
                resources.push_async_callback(hook)
            metrics = await self._start_metrics()
            if metrics is not None:
                resources.push_async_callback(metrics.cleanup)
            if self._trace() is not None:
                resources.push_async_callback(self._stop_tracing)
            await self._consume_until_stopped(stop)
        log.info("worker_stopped", app=worker.app)

    def _trace(self) -> Tracing | None:
        """Start tracing if the settings say so: each delivery in a span, its handler in a
        child span (:mod:`consumers.runtime.tracing`), log lines with their trace's ids."""
        worker = self.worker
        try:
            self.tracing = start_tracing(self.settings.tracing, worker.app)
        except ConfigError as error:
            raise WorkerConfigError(str(error)) from None
        if self.tracing is not None:
            from consumers.runtime.tracing import DeliverySpans, HandlerSpan  # (only when on)

            tracer = self.tracing.tracer
            worker.use_tracing(HandlerSpan(tracer, worker.route))
            self._spans = DeliverySpans(tracer, worker.app, self._queue)
            log_trace_ids()
        return self.tracing

    async def _stop_tracing(self) -> None:
        tracing, self.tracing, self._spans = self.tracing, None, None
        if tracing is not None:
            await tracing.close()

    def _use_newest(self) -> None:
        """Newest wins in the idempotency store's place (``WORKER_IDEMPOTENCY_URL``), else in
        the worker's own store (a memory store of its own made with the retention set)."""
        settings, worker = self.settings, self.worker
        url, retention = settings.idempotency_url, settings.newest_retention
        store = worker.newest_store
        if url:
            store = newest_store_from_url(url.reveal(), retention=retention)
        elif isinstance(store, MemoryNewestStore) and store.retention != retention:
            store = MemoryNewestStore(retention=retention)
        worker.use_newest(store, skew=settings.newest_skew, lease=settings.key_lease)

    async def _consume_until_stopped(self, stop: asyncio.Event) -> None:
        """Consume on one node; when its connection is lost, go on with the next node."""
        worker, start = self.worker, 0
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                try:
                    connection, node = await connect_first(
                        self.settings.amqp_url.reveal(), start, name=f"worker {worker.app}"
                    )
                except BrokerUnreachable as error:
                    log.warning("broker_unreachable", error=str(error))
                    start += 1
                    await asyncio.wait({stopping}, timeout=RECONNECT_INTERVAL)
                    continue
                try:
                    consumer = await self._start_consuming(connection)
                    state = self.flow.state
                    log.info(
                        "worker_consuming" if consumer.active else "worker_not_consuming",
                        app=worker.app,
                        queue=consumer.queue,
                        node=node,
                        state=state,
                    )
                    lost = asyncio.ensure_future(connection.closed())
                    await asyncio.wait({stopping, lost}, return_when=asyncio.FIRST_COMPLETED)
                    if stop.is_set():
                        await self._drain(consumer)
                        return
                    log.warning("broker_connection_lost", app=worker.app, node=node)
                    start = node + 1  # unacked deliveries come back; another node first
                except (aiormq.exceptions.AMQPError, OSError, RuntimeError) as error:
                    log.warning("consume_failed", app=worker.app, error=repr(error))
                    start = node + 1
                    await asyncio.wait({stopping}, timeout=RECONNECT_INTERVAL)
                finally:
                    self.consuming.clear()
                    await self.flow.detach()
                    await self._limiter.stop()
                    if not connection.is_closed:
                        await connection.close()  # what was not acked goes back to the queue
        finally:
            stopping.cancel()

    async def _start_consuming(self, connection: AbstractConnection) -> Consumer:
        """Declare the application's queues, join the control exchange, learn the state
        (:meth:`Flow.attach`), and consume if running."""
        worker = self.worker
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        channel.close_callbacks.add(lambda *_: asyncio.ensure_future(connection.close()))
        await channel.set_qos(prefetch_count=self.settings.prefetch or worker.prefetch)
        queue = await declare_app_queue(
            channel, self.names, worker.app, with_dead_letter_queue=False
        )
        self._settler.use(
            await declare_retry_queues(channel, self.names, worker.app, self._tiers_ms),
            await channel.get_exchange(self.names.app_dead_letter_exchange(worker.app)),
        )
        # on aio-pika's own aiormq channel: see consumers.runtime.delivery
        self._channel = await channel.get_underlay_channel()
        self._queue = queue.name
        consumer = Consumer(self._channel, queue.name, self._on_delivery, self.consuming)
        link = ControlLink(connection, self.names, worker.app, by=self._by)
        await self._limiter.start(connection)
        await self.flow.attach(link, consumer, self._probe, self._paused_says_admin)
        return consumer

    async def _paused_says_admin(self) -> PauseState | None:
        return await self._admin.pause_state(self.worker.app)

    async def _probe(self) -> ProbeResult:
        """Take one event (basic.get) and handle it as any delivery: the breaker's probe."""
        channel = self._channel
        if channel is None or self._stopping:
            return "empty"
        got = await channel.basic_get(self._queue, no_ack=False, timeout=CONTROL_TIMEOUT)
        if not isinstance(got.delivery, Basic.GetOk):
            return "empty"
        task = self._spawn(self._work(_got(got), gated=False))
        return probe_result(await asyncio.shield(task))

    @property
    def _tiers_ms(self) -> tuple[int, ...]:
        """The delay tiers to declare: the retry policy's, or one to defer with if it has none."""
        return self.worker.retry.tiers_ms or (DEFER_MS_WITHOUT_TIERS,)

    async def _drain(self, consumer: Consumer) -> None:
        """Stop taking deliveries; give in-flight handlers until the deadline to finish."""
        self._stopping = True
        self._limiter.interrupt()
        await self.flow.detach()
        with contextlib.suppress(Exception):
            await consumer.stop()
        deadline = self.settings.shutdown_timeout or self.worker.shutdown_timeout
        if self._tasks:
            log.info("worker_draining", in_flight=len(self._tasks), deadline_s=deadline)
            _, pending = await asyncio.wait(self._tasks, timeout=deadline)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("worker_drain_deadline", unfinished=len(pending))
                await asyncio.wait(pending, timeout=5)

    async def _on_delivery(self, message: DeliveredMessage) -> None:
        """aiormq runs this in a task it cancels when the channel closes, so the delivery is
        handled in a task of the runner's own, which only the drain deadline cancels: a
        handler running when the connection is lost runs to its end (its ack then fails and
        the broker redelivers the event, as for any unacked delivery)."""
        if not self._stopping:  # (else it goes back to the queue when the channel closes)
            self._spawn(self._work(Delivery.from_aiormq(message)))

    def _spawn(self, work: Coroutine[Any, Any, Outcome | None]) -> asyncio.Task[Outcome | None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _work(
        self, message: Delivery, *, gated: bool = True
    ) -> Coroutine[Any, Any, Outcome | None]:
        """Handling ``message`` (see :meth:`_process`), in its span with tracing on."""
        spans = self._spans
        if spans is None:
            return self._process(message, gated=gated)
        return spans.process(message, lambda traced: self._process(traced, gated=gated))

    async def _process(self, message: Delivery, *, gated: bool = True) -> Outcome | None:
        """Handle one delivery and settle it; its outcome (None: returned unstarted). A probe
        is not ``gated``: it is handled while the breaker is open.

        Under a rate limit, an event whose handler has a newest family takes its key's lane
        before waiting for the limit: the limiter wakes its waiters in order, but one that
        arrives as they wake may pass them, and a key's events must start in arrival order.
        Without a limit nothing is awaited before the guard's own lane."""
        attempt = envelope.attempt(message.headers)
        try:
            event: Event | Reject = Event.from_body(
                message.body,
                message_id=message.message_id,
                attempt=attempt,
                routing_key=message.routing_key,
                headers=message.headers,
            )
        except Reject as error:
            event = error
        lane = None
        if gated and self._limited and isinstance(event, Event):
            lane = self.worker.lane_of(event)
        if lane is None:
            return await self._start(message, attempt, event, gated=gated)
        async with self._lanes.turn(lane):
            return await self._start(message, attempt, event, gated=gated)

    async def _start(
        self, message: Delivery, attempt: int, event: Event | Reject, *, gated: bool
    ) -> Outcome | None:
        if gated:  # each handler start waits for the rate limit, then asks the flow's gate
            if self._limited and self._admitting:
                await self._limiter.acquire()
            if not self._admitting:
                await self._return(message)
                return None
        if isinstance(event, Reject):
            dead = DeadLetter("rejected", event)
            await self._settler.settle(message, attempt, dead)
            return dead
        outcome = await self.worker.handle(event)
        self.flow.record(outcome)
        await self._settler.settle(message, attempt, outcome)
        return outcome

    @property
    def _admitting(self) -> bool:
        return self.flow.admitting and not self._stopping

    async def _return(self, message: Delivery) -> None:
        """Give an unstarted delivery back to the queue (paused, or the breaker open): no
        attempt is counted, our headers are untouched."""
        self.worker.flow_metrics.returned.inc()
        with contextlib.suppress(Exception):
            await message.requeue()

    async def _start_metrics(self) -> web.AppRunner | None:
        if not self.settings.metrics_port:
            return None
        registry = self.worker.registry

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(registry), content_type="text/plain")

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response(
                {"status": "alive", "consuming": self.consuming.is_set(), "state": self.flow.state}
            )

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.settings.metrics_host, self.settings.metrics_port).start()
        return runner


def _got(message: DeliveredMessage) -> Delivery:
    """The probe's basic.get answer, read as a consumed delivery is."""
    frame = message.delivery
    assert isinstance(frame, Basic.GetOk)
    deliver = Basic.Deliver(
        consumer_tag="probe",
        delivery_tag=frame.delivery_tag,
        redelivered=frame.redelivered,
        exchange=frame.exchange,
        routing_key=frame.routing_key,
    )
    return Delivery.from_aiormq(dataclasses.replace(message, delivery=deliver))


__all__ = ["WorkerRunner", "claim_events"]
