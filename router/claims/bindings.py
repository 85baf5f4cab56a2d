"""The broker side of claims: application queues and their bindings to ``attentive.events``.

Each change opens a short-lived, plain (not robust) connection on purpose: a robust channel
records every binding and replays it after a reconnect, which would resurrect a binding
that another router replica has removed since.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import aiormq

from router.amqp import topology
from router.amqp.nodes import BrokerUnreachable, connect_first
from router.contract.names import Names
from router.errors import PublishFailed


class BrokerUnavailable(PublishFailed):
    """Raised when the bindings could not be changed because RabbitMQ did not answer."""


class Bindings:
    """Declares application queues and binds or unbinds their routing keys."""

    def __init__(self, amqp_url: str, names: Names, *, timeout: float = 10.0) -> None:
        self._url = amqp_url
        self._names = names
        self._timeout = timeout

    async def bind(self, app: str, keys: Iterable[str]) -> None:
        """Make sure the app's queue exists and is bound with every one of ``keys``."""
        await self.apply({app: set(keys)}, {})

    async def unbind(self, app: str, keys: Iterable[str]) -> None:
        """Remove these bindings of the app's queue (the queue and its messages stay)."""
        await self.apply({}, {app: set(keys)})

    async def apply(self, bind: dict[str, set[str]], unbind: dict[str, set[str]]) -> None:
        """Bind and unbind in one connection; idempotent."""
        if not any(bind.values()) and not any(unbind.values()):
            return
        try:
            async with asyncio.timeout(self._timeout):
                connection, _ = await connect_first(self._url, name="attentive-router claims")
                async with connection:
                    channel = await connection.channel()
                    events = self._names.events_exchange
                    await topology.declare(channel, self._names)
                    for app, keys in bind.items():
                        queue = await topology.declare_app_queue(channel, self._names, app)
                        for key in sorted(keys):
                            await queue.bind(events, key)
                    for app, keys in unbind.items():
                        queue = await topology.declare_app_queue(channel, self._names, app)
                        for key in sorted(keys):
                            await queue.unbind(events, key)
        except (OSError, TimeoutError, aiormq.exceptions.AMQPError, BrokerUnreachable) as error:
            raise BrokerUnavailable(
                f"RabbitMQ did not take the binding change: {error!r}"
            ) from None


__all__ = ["Bindings", "BrokerUnavailable"]
