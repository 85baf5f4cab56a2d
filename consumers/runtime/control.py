"""A worker's side of the control exchange, on one connection: what ops and the other replicas
of its application say (pause, resume, breaker open and closed), what it says itself, and
the probe lock.

::

    <prefix>.control (topic) ──<app>──▶ a server-named exclusive queue per replica
    <prefix>.app.<app>.probe-lock        exclusive queue of the replica that probes

The lock is a queue only one connection can hold (``exclusive``): it exists exactly while
the breaker is open and a replica is alive to probe. When its holder's connection ends, the
broker deletes it and another replica takes it. Every call here is bounded by a timeout; a
broker refusal of the lock (another replica holds it) is an answer, not an error.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from router.admin.client import AdminClient, AdminRequestFailed, AdminUnreachable
from router.amqp.topology import CLASSIC_QUEUE_ARGUMENTS
from router.contract.control import CONTENT_TYPE, ControlKind, ControlMessage
from router.contract.names import Names

log = structlog.get_logger("consumers")

#: Seconds a control call (declare, publish confirm, lock) may take before it is given up.
CONTROL_TIMEOUT = 5.0
#: Seconds a worker waits for the admin API's answer about its application's pause.
ADMIN_TIMEOUT = 5.0

OnControl = Callable[[ControlMessage], Awaitable[None]]


def control_queue(names: Names, app: str) -> str:
    """A replica's own control queue, named among its application's queues
    (``<prefix>.app.<app>.control.<random>``), which the application's broker user may
    declare; binding it and publishing need read and write on the control exchange too."""
    return names.app_control_queue(app, uuid.uuid4().hex[:12])


def replica_name(app: str) -> str:
    """Who a replica is in the control messages it sends (``by``): app, host, process and a
    few random characters (two runners in one process differ)."""
    return f"{app}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class ControlLink:
    """The control exchange and the probe lock of ``app`` on one connection.

    :meth:`open` binds the replica's own queue and hands every readable message for ``app``
    to ``on_message`` (garbage is ignored); :meth:`publish` says something to every replica
    and waits for the broker's confirm.
    """

    def __init__(self, connection: AbstractConnection, names: Names, app: str, *, by: str) -> None:
        self.connection = connection
        self.names = names
        self.app = app
        self.by = by
        self._channel: AbstractChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    async def open(self, on_message: OnControl) -> None:
        """Find the control exchange, bind a queue of this replica's own, start listening;
        ``ChannelAccessRefused`` when the broker user may not (see :func:`control_queue`)."""
        await self._find_exchange()
        channel = await self.connection.channel(publisher_confirms=True)
        self._channel = channel
        self._exchange = await channel.get_exchange(self.names.control_exchange, ensure=False)
        queue = await channel.declare_queue(
            control_queue(self.names, self.app),
            exclusive=True,
            auto_delete=True,
            arguments=CLASSIC_QUEUE_ARGUMENTS,
            timeout=CONTROL_TIMEOUT,
        )
        await queue.bind(self._exchange, self.app, timeout=CONTROL_TIMEOUT)

        async def deliver(incoming: AbstractIncomingMessage) -> None:
            message = ControlMessage.from_bytes(incoming.body)
            if message is None or message.app != self.app:
                log.warning("control_message_ignored", app=self.app, size=len(incoming.body))
                return
            await on_message(message)

        await queue.consume(deliver, no_ack=True, timeout=CONTROL_TIMEOUT)

    async def _find_exchange(self) -> None:
        """Declare the control exchange (the router does too); an application's own broker
        user, which may not declare it, finds it with a passive declare."""
        channel = await self.connection.channel()
        try:
            await channel.declare_exchange(
                self.names.control_exchange,
                aio_pika.ExchangeType.TOPIC,
                durable=True,
                timeout=CONTROL_TIMEOUT,
            )
        except aiormq.exceptions.ChannelAccessRefused:
            channel = await self.connection.channel()
            await channel.declare_exchange(
                self.names.control_exchange, passive=True, timeout=CONTROL_TIMEOUT
            )
        finally:
            await _close(channel)

    async def publish(self, kind: ControlKind, reason: str = "") -> None:
        """Tell every replica of the application ``kind``, persistent, once the broker
        confirmed it (raises on a timeout or a closed channel)."""
        if self._exchange is None:
            raise RuntimeError("open the control link first")
        message = ControlMessage(kind, self.app, self.by, reason)
        await self._exchange.publish(
            aio_pika.Message(
                message.to_bytes(),
                content_type=CONTENT_TYPE,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            self.app,
            mandatory=False,
            timeout=CONTROL_TIMEOUT,
        )

    async def take_probe_lock(self) -> bool:
        """Declare the probe lock as this connection's; False when another connection holds
        it (the broker refuses: RESOURCE_LOCKED)."""
        channel = await self.connection.channel()
        try:
            await channel.declare_queue(
                self.names.app_probe_lock(self.app),
                durable=False,
                exclusive=True,
                arguments=CLASSIC_QUEUE_ARGUMENTS,
                timeout=CONTROL_TIMEOUT,
            )
        except aiormq.exceptions.ChannelLockedResource:
            return False
        finally:
            await _close(channel)
        return True

    async def probe_lock_exists(self) -> bool:
        """Whether some replica holds the probe lock (the breaker is open) (a passive declare)."""
        channel = await self.connection.channel()
        try:
            await channel.declare_queue(
                self.names.app_probe_lock(self.app), passive=True, timeout=CONTROL_TIMEOUT
            )
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        except aiormq.exceptions.ChannelLockedResource:
            return True  # exclusive to another replica's connection
        finally:
            await _close(channel)
        return True

    async def release_probe_lock(self) -> None:
        """Delete the probe lock (the breaker closed): a replica starting now starts closed."""
        channel = await self.connection.channel()
        try:
            await channel.queue_delete(self.names.app_probe_lock(self.app), timeout=CONTROL_TIMEOUT)
        finally:
            await _close(channel)

    async def close(self) -> None:
        """Stop listening (the connection's end does it too)."""
        if self._channel is not None:
            await _close(self._channel)
            self._channel = None


async def _close(channel: AbstractChannel) -> None:
    """Close a throwaway channel, which the broker may have closed already."""
    with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError, OSError):
        if not channel.is_closed:
            await channel.close()


@dataclass(frozen=True, slots=True)
class PauseState:
    """What the router says of an application's pause: whether, who, why."""

    paused: bool
    by: str = ""
    reason: str = ""


class AdminView:
    """Asks the router's admin API whether the application is paused (``GET
    /admin/apps/{app}``): at start and after each reconnect, since a message sent while the
    worker was away is not in its (new) control queue.

    A router without that route (404: older, or an application it never heard of) means
    not paused, said once in the log. No token or an unreachable API: None (unknown; the
    caller keeps what it knew).
    """

    def __init__(self, url: str, token: str, *, ca_file: str = "") -> None:
        self.url = url
        self.token = token
        self.ca_file = ca_file
        self._said_missing = False

    async def pause_state(self, app: str) -> PauseState | None:
        """Whether ``app`` is paused, as the router says; None when it cannot say."""
        if not self.token:
            return None
        try:
            async with AdminClient(
                self.url, self.token, ca_file=self.ca_file, timeout=ADMIN_TIMEOUT
            ) as admin:
                state = await admin.app_state(app)
        except AdminRequestFailed as error:
            if error.status == 404:
                if not self._said_missing:
                    log.warning("app_state_unknown_to_router", app=app, assumed="not paused")
                    self._said_missing = True
                return PauseState(False)
            log.warning("app_state_unavailable", app=app, error=str(error))
            return None
        except AdminUnreachable as error:
            log.warning("app_state_unavailable", app=app, error=str(error))
            return None
        return PauseState(
            bool(state.get("paused", False)),
            str(state.get("by") or "admin API"),
            str(state.get("reason") or ""),
        )


__all__ = [
    "ADMIN_TIMEOUT",
    "CONTROL_TIMEOUT",
    "AdminView",
    "ControlLink",
    "OnControl",
    "PauseState",
    "control_queue",
    "replica_name",
]
