"""The router's connection to RabbitMQ: confirm-mode, every wait bounded, reconnecting.

:class:`Broker` connects in the background (the ingress serves 503 until it is up),
declares the topology with aio-pika, then publishes on a :class:`~router.amqp.publisher.
ConfirmPublisher` to the same node: a lean publish-only connection whose confirms are
pipelined (many publishes in flight, each awaiting only its own confirm). When that
connection is lost it connects again, to another node of the list first, and declares the
topology again. Anything short of a broker ack raises :class:`~router.errors.PublishFailed`.

With the archive on (a :class:`~router.amqp.topology.Retention`, the default), events go to
the exchange in front of the events exchange and of the archive stream, so a confirm means
both took the event; off (``archive=None``), to the events exchange itself. The archive's
topology is declared at each connection, so ``serve`` brings an installation of an earlier
release up to date at start. A stream that exists with other retention is kept as it is (a
warning says so): its arguments cannot change without deleting it and what it holds.

A half-open connection (the node or the path to it stopped answering, the socket still up)
is noticed by its confirms: after ``timeouts_to_recycle`` confirm timeouts in a row (no ack
between them) within ``recycle_window`` seconds, the connection is dropped and the next node
tried, instead of waiting two heartbeats for the publisher to notice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import Any

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection

from router.amqp.confirms import (
    ConfirmTimedOut,
    ConnectionLost,
    HeaderTooLarge,
    Nacked,
    NotConfirmed,
    Returned,
)
from router.amqp.frames import Properties
from router.amqp.nodes import CONNECT_TIMEOUT, connect_first, parse_urls
from router.amqp.publisher import ConfirmPublisher
from router.amqp.topology import Retention, Topology, declare, declare_archive, link_archive
from router.amqp.url import AmqpUrl
from router.contract.names import Names
from router.errors import PublishFailed, RouterError

log = structlog.get_logger("router.amqp.broker")

#: Seconds between attempts while the broker has never been reached, and between reconnects.
RECONNECT_INTERVAL = 1.0
#: Longest wait for the broker when declaring topology.
DECLARE_TIMEOUT = 10.0
#: Nacks with no ack in between for this long make the broker start over on a new
#: connection (at most once per NACK_RECYCLE_INTERVAL): after a cluster node is lost, a
#: channel whose quorum-queue publishing state went stale was seen to be nacked for good,
#: while a new channel publishes at once (tests/test_cluster_failover.py).
NACK_RECYCLE_AFTER = 3.0
NACK_RECYCLE_INTERVAL = 10.0
#: Defaults of ROUTER_CONFIRM_TIMEOUTS_TO_RECYCLE and ROUTER_CONFIRM_TIMEOUT_WINDOW.
TIMEOUTS_TO_RECYCLE = 3
RECYCLE_WINDOW = 30.0


class Broker:
    """A confirm-mode publishing connection to RabbitMQ and the router's declared topology.

    It connects to the first listed node that answers and, when that connection is lost,
    connects again, starting with the next node, and declares the topology again.
    """

    def __init__(
        self,
        urls: str | Sequence[str | AmqpUrl],
        names: Names,
        *,
        confirm_timeout: float,
        connection_name: str = "attentive-router",
        timeouts_to_recycle: int = TIMEOUTS_TO_RECYCLE,
        recycle_window: float = RECYCLE_WINDOW,
        archive: Retention | None = Retention(),  # noqa: B008 (frozen: one shared value)
    ) -> None:
        self._urls = parse_urls(urls)
        self._names = names
        self._archive = archive
        #: Where events are published: the exchange in front of the archive, or the events one.
        self._event_exchange = names.ingress_exchange if archive else names.events_exchange
        self._confirm_timeout = confirm_timeout
        self._connection_name = connection_name
        self._publisher: ConfirmPublisher | None = None
        self._topology: Topology | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._nacked_since: float | None = None
        self._last_recycle = -NACK_RECYCLE_INTERVAL
        self._timeouts_to_recycle = timeouts_to_recycle
        self._recycle_window = recycle_window
        #: When each confirm timeout since the last ack happened (loop time).
        self._timeouts: deque[float] = deque()
        #: Index of the URL currently (or last) connected to.
        self.node = 0

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Begin connecting in the background; :attr:`ready` tells when it is done."""
        if self._task is None:
            self._task = asyncio.create_task(self._stay_connected())

    async def wait_ready(self, timeout: float) -> None:
        """Wait until :attr:`ready` (raises TimeoutError)."""
        async with asyncio.timeout(timeout):
            while not self.ready:
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Stop reconnecting and close the connection."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._publisher is not None:
            await self._publisher.close()

    async def _stay_connected(self) -> None:
        attempt = 0
        start = 0
        while not self._closing:
            attempt += 1
            try:
                publisher = await self._connect(start)
            except (
                RouterError,
                OSError,
                aiormq.exceptions.AMQPError,
                TimeoutError,
                NotConfirmed,
            ) as error:
                if attempt == 1 or attempt % 30 == 0:
                    log.warning("broker_unreachable", attempt=attempt, error=str(error))
                start = (start + 1) % len(self._urls)
                await asyncio.sleep(RECONNECT_INTERVAL)
                continue
            log.info("broker_connected", attempt=attempt, node=self._urls[self.node].redacted)
            attempt = 0
            reason = await publisher.wait_closed()
            self._topology = None
            self._timeouts.clear()
            if self._closing:
                return
            log.warning(
                "broker_connection_lost", node=self._urls[self.node].redacted, reason=reason
            )
            start = (self.node + 1) % len(self._urls)  # another node first

    async def _connect(self, start: int) -> ConfirmPublisher:
        """Declare the topology on the first node that answers, then open the publisher there."""
        connection, self.node = await connect_first(
            self._urls, start, name=f"{self._connection_name} (declaring)"
        )
        try:
            channel = await connection.channel()
            async with asyncio.timeout(DECLARE_TIMEOUT):
                topology = await declare(channel, self._names)
                if self._archive is not None:
                    await self._declare_archive(connection, channel, self._archive)
        finally:
            await connection.close()
        publisher = await ConfirmPublisher.open(
            self._urls[self.node],
            name=self._connection_name,
            confirm_timeout=self._confirm_timeout,
            timeout=CONNECT_TIMEOUT,
        )
        self._publisher, self._topology = publisher, topology
        return publisher

    async def _declare_archive(
        self, connection: AbstractConnection, channel: AbstractChannel, retention: Retention
    ) -> None:
        """The archive stream and the exchange in front; a stream of other retention is kept."""
        try:
            await declare_archive(channel, self._names, retention)
        except aiormq.exceptions.ChannelPreconditionFailed as error:
            log.warning(
                "archive_retention_differs",
                stream=self._names.archive_stream,
                wanted=dict(retention.arguments()),
                error=str(error),
            )
            await link_archive(await connection.channel(), self._names)

    # -- state ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """The publishing connection is open and the topology was declared."""
        publisher = self._publisher
        return publisher is not None and self._topology is not None and publisher.is_open

    @property
    def blocked(self) -> bool:
        """RabbitMQ has blocked the connection (a memory or disk alarm): publishes stall."""
        publisher = self._publisher
        return publisher is not None and publisher.blocked

    @property
    def ready(self) -> bool:
        """Publishing can succeed now: connected and not blocked."""
        return self.connected and not self.blocked

    # -- publishing -------------------------------------------------------------------

    # The two below return _publish's coroutine rather than awaiting it: one coroutine less
    # for every webhook to create and to resume through when its confirm arrives.

    def publish_event(
        self, routing_key: str, body: bytes, properties: Properties
    ) -> Coroutine[Any, Any, None]:
        """Publish to the events exchange (through the exchange in front of it and of the
        archive, when the archive is on); awaiting it waits for the broker's confirm."""
        return self._publish(self._event_exchange, routing_key, body, properties)

    def publish_to_queue(
        self, queue: str, body: bytes, properties: Properties
    ) -> Coroutine[Any, Any, None]:
        """Publish straight into ``queue`` (through the default exchange); awaiting it waits
        for the confirm."""
        return self._publish("", queue, body, properties)

    @property
    def in_flight(self) -> int:
        """Publishes written and not yet confirmed (or failed)."""
        publisher = self._publisher
        return publisher.in_flight if publisher is not None else 0

    async def _publish(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties
    ) -> None:
        publisher = self._publisher
        if publisher is None or not self.connected:
            raise PublishFailed("not connected to RabbitMQ")
        if publisher.blocked:
            raise PublishFailed("RabbitMQ has blocked publishing (resource alarm)")
        try:
            await publisher.publish(exchange, routing_key, body, properties)
        except ConfirmTimedOut as error:
            self._timed_out(publisher)
            raise PublishFailed(str(error)) from None
        except Returned as error:
            raise PublishFailed(str(error)) from None
        except HeaderTooLarge as error:
            # names and sizes only: header values and the body may hold personal data
            headers = properties.headers
            largest = max(headers, key=lambda k: len(str(headers[k])), default=None)
            log.warning(
                "publish_refused_header_too_large",
                error=str(error),
                message_id=properties.message_id,
                largest_header=largest,
            )
            raise PublishFailed(str(error)) from None
        except ConnectionLost as error:
            raise PublishFailed(f"connection lost before the confirm: {error}") from None
        except Nacked as error:
            self._nacked()
            raise PublishFailed(str(error)) from None
        except Exception as error:  # whatever else: the broker did not confirm, so 503
            log.warning("publish_failed_unexpectedly", error=repr(error))
            raise PublishFailed(f"no confirm: {error!r}") from None
        self._nacked_since = None
        self._timeouts.clear()

    def _timed_out(self, publisher: ConfirmPublisher) -> None:
        """Count a confirm timeout; after enough in a row, drop the connection for another node.

        Not while RabbitMQ has said it blocks the connection (a resource alarm): that
        connection is alive, and so would be any other until the alarm clears.
        """
        if publisher.blocked or not publisher.is_open or publisher is not self._publisher:
            return
        now = asyncio.get_running_loop().time()
        timeouts = self._timeouts
        timeouts.append(now)
        while timeouts and timeouts[0] < now - self._recycle_window:
            timeouts.popleft()
        if len(timeouts) >= self._timeouts_to_recycle:
            timeouts.clear()
            log.warning(
                "broker_recycling_after_confirm_timeouts",
                node=self._urls[self.node].redacted,
                timeouts=self._timeouts_to_recycle,
                window=self._recycle_window,
            )
            publisher.abort(f"{self._timeouts_to_recycle} confirm timeouts in a row")

    def _nacked(self) -> None:
        """Count a nack; when nothing but nacks came for a while, start over elsewhere."""
        now = asyncio.get_running_loop().time()
        if self._nacked_since is None:
            self._nacked_since = now
            return
        stale = now - self._nacked_since >= NACK_RECYCLE_AFTER
        if stale and now - self._last_recycle >= NACK_RECYCLE_INTERVAL:
            self._last_recycle, self._nacked_since = now, None
            publisher = self._publisher
            if publisher is not None and publisher.is_open:
                log.warning("broker_recycling_after_nacks", node=self._urls[self.node].redacted)
                asyncio.get_running_loop().create_task(publisher.close())


__all__ = ["Broker"]
