"""The router's one connection to RabbitMQ: confirm-mode, every wait bounded, reconnecting.

:class:`Broker` connects in the background (the ingress serves 503 until it is up),
declares the topology, reconnects by itself (to another node of the list when its node is
gone), and publishes each message with a publisher confirm awaited under a timeout. Many
publishes share the channel and are in flight at once; each awaits only its own confirm.
Anything short of a broker ack raises :class:`~router.errors.PublishFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection
from pamqp.commands import Basic

from router.amqp import connect_first, redact, split_urls
from router.errors import PublishFailed, RouterError
from router.names import Names
from router.topology import Topology, declare

log = structlog.get_logger("router.broker")

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


class Broker:
    """A confirm-mode channel to RabbitMQ and the router's declared topology.

    It connects to the first listed node that answers and, when that connection is lost,
    connects again, starting with the next node, and declares the topology again.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        names: Names,
        *,
        confirm_timeout: float,
        connection_name: str = "attentive-router",
    ) -> None:
        self._urls = split_urls(urls)
        self._names = names
        self._confirm_timeout = confirm_timeout
        self._connection_name = connection_name
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._topology: Topology | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._nacked_since: float | None = None
        self._last_recycle = -NACK_RECYCLE_INTERVAL
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
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()

    async def _stay_connected(self) -> None:
        attempt = 0
        start = 0
        while not self._closing:
            attempt += 1
            try:
                connection = await self._connect(start)
            except (RouterError, OSError, aiormq.exceptions.AMQPError, TimeoutError) as error:
                if attempt == 1 or attempt % 30 == 0:
                    log.warning("broker_unreachable", attempt=attempt, error=str(error))
                start = (start + 1) % len(self._urls)
                await asyncio.sleep(RECONNECT_INTERVAL)
                continue
            log.info("broker_connected", attempt=attempt, node=redact(self._urls[self.node]))
            attempt = 0
            await connection.closed()
            self._topology = None
            if self._closing:
                return
            log.warning("broker_connection_lost", node=redact(self._urls[self.node]))
            start = (self.node + 1) % len(self._urls)  # another node first

    async def _connect(self, start: int) -> AbstractConnection:
        connection, self.node = await connect_first(self._urls, start, name=self._connection_name)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            async with asyncio.timeout(DECLARE_TIMEOUT):
                topology = await declare(channel, self._names)
        except BaseException:
            await connection.close()
            raise
        # a channel closed by the broker takes the connection with it: one way to recover
        channel.close_callbacks.add(lambda *_: asyncio.ensure_future(connection.close()))
        self._connection, self._channel, self._topology = connection, channel, topology
        return connection

    # -- state ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """The connection is open and the topology was declared on it."""
        connection = self._connection
        return connection is not None and self._topology is not None and not connection.is_closed

    @property
    def blocked(self) -> bool:
        """RabbitMQ has blocked the connection (a memory or disk alarm): publishes stall."""
        connection = self._connection
        return connection is not None and _is_blocked(connection)

    @property
    def ready(self) -> bool:
        """Publishing can succeed now: connected and not blocked."""
        return self.connected and not self.blocked

    # -- publishing -------------------------------------------------------------------

    async def publish_event(
        self, routing_key: str, body: bytes, properties: Basic.Properties
    ) -> None:
        """Publish to the events exchange and wait for the broker's confirm."""
        await self._publish(self._names.events_exchange, routing_key, body, properties)

    async def publish_to_queue(self, queue: str, body: bytes, properties: Basic.Properties) -> None:
        """Publish straight into ``queue`` (through the default exchange) with a confirm."""
        await self._publish("", queue, body, properties)

    async def _publish(
        self, exchange: str, routing_key: str, body: bytes, properties: Basic.Properties
    ) -> None:
        channel = self._channel
        if channel is None or not self.connected:
            raise PublishFailed("not connected to RabbitMQ")
        if self.blocked:
            raise PublishFailed("RabbitMQ has blocked publishing (resource alarm)")
        try:
            underlay = await channel.get_underlay_channel()
            confirmation = await underlay.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=True,
                timeout=self._confirm_timeout,
            )
        except TimeoutError:
            raise PublishFailed(f"no confirm within {self._confirm_timeout:g}s") from None
        except aiormq.exceptions.PublishError:
            raise PublishFailed("unroutable: no queue took the message") from None
        except aiormq.exceptions.DeliveryError:
            self._nacked()
            raise PublishFailed("RabbitMQ refused the message (nack)") from None
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as error:
            raise PublishFailed(f"connection lost before the confirm: {error!r}") from None
        except Exception as error:  # whatever else: the broker did not confirm, so 503
            log.warning("publish_failed_unexpectedly", error=repr(error))
            raise PublishFailed(f"no confirm: {error!r}") from None
        if not isinstance(confirmation, Basic.Ack):
            raise PublishFailed(f"unexpected confirmation {confirmation!r}")
        self._nacked_since = None

    def _nacked(self) -> None:
        """Count a nack; when nothing but nacks came for a while, start over elsewhere."""
        now = asyncio.get_running_loop().time()
        if self._nacked_since is None:
            self._nacked_since = now
            return
        stale = now - self._nacked_since >= NACK_RECYCLE_AFTER
        if stale and now - self._last_recycle >= NACK_RECYCLE_INTERVAL:
            self._last_recycle, self._nacked_since = now, None
            connection = self._connection
            if connection is not None and not connection.is_closed:
                log.warning("broker_recycling_after_nacks", node=redact(self._urls[self.node]))
                asyncio.get_running_loop().create_task(connection.close())


def _is_blocked(connection: AbstractConnection) -> bool:
    # aiormq tracks Connection.Blocked/Unblocked in a private event and exposes no
    # property for it; tests/test_broker_faults.py fails if that ever changes.
    transport = connection.transport
    if transport is None:
        return False
    unblocked = getattr(transport.connection, "_Connection__connection_unblocked", None)
    return isinstance(unblocked, asyncio.Event) and not unblocked.is_set()


__all__ = ["Broker"]
