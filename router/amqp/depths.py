"""Read-only looks at the broker: how many messages wait in the router's queues."""

from __future__ import annotations

from collections.abc import Iterable

import aiormq

from router.amqp.nodes import connect_first
from router.contract.names import Names
from router.errors import NotFound


async def queue_depths(
    amqp_url: str, names: Names, *, apps: Iterable[str] = (), timeout: float = 10.0
) -> dict[str, int]:
    """Message count of each router queue and of the given applications' queues.

    Passive declares: nothing is created or consumed.
    """
    connection, _ = await connect_first(amqp_url, name="attentive-router queues", timeout=timeout)
    depths: dict[str, int] = {}
    async with connection:
        for queue_name in (*map(names.app_queue, apps), names.unrouted_queue, names.invalid_queue):
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(queue_name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                raise NotFound(
                    f"queue {queue_name} does not exist: has the router run on this broker?"
                ) from None
            depths[queue_name] = queue.declaration_result.message_count or 0
            await channel.close()
    return depths


__all__ = ["queue_depths"]
