"""One delivery as the runtime handles it: read once from aiormq's frame, settled on its channel.

aio-pika wraps every delivery in an ``IncomingMessage``, whose constructor makes a dozen
guarded attribute writes (about a tenth of a no-op worker's CPU while draining, by py-spy),
and runs the consumer callback in one more task. The runtime reads only the body, a few
properties and the delivery tag, so it consumes on aio-pika's underlying aiormq channel
(``WorkerRunner._start_consuming``) and keeps what it reads here. Acks and nacks go to that
channel as aio-pika's would: each waits until its frame is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic

from router.contract.names import ROUTING_KEY_HEADER


@dataclass(slots=True)
class Delivery:
    """The parts of a consumed message the runtime uses, and its acknowledgement."""

    body: bytes
    headers: Mapping[str, Any]
    message_id: str | None
    content_type: str | None
    timestamp: datetime | None
    #: The routing key it was delivered with (a retry comes back with the delay tier's).
    delivered_with: str
    delivery_tag: int
    channel: AbstractChannel

    @classmethod
    def from_aiormq(cls, message: DeliveredMessage) -> Delivery:
        frame = message.delivery
        if not isinstance(frame, Basic.Deliver) or frame.delivery_tag is None:
            raise TypeError(f"not a consumed delivery: {frame!r}")
        properties = message.header.properties
        return cls(
            body=message.body,
            headers=properties.headers or {},
            message_id=properties.message_id,
            content_type=properties.content_type,
            timestamp=properties.timestamp,
            delivered_with=frame.routing_key or "",
            delivery_tag=frame.delivery_tag,
            channel=message.channel,
        )

    def header(self, name: str) -> str | None:
        """A header's value when it is text (a bytes value decoded), else None."""
        value = self.headers.get(name)
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        return value if isinstance(value, str) else None

    @property
    def routing_key(self) -> str:
        """The event's routing key on the events exchange, wherever the delivery came from."""
        return self.header(ROUTING_KEY_HEADER) or self.delivered_with

    async def ack(self) -> None:
        """Acknowledge; raises when the channel is closed (the broker then redelivers it)."""
        await self.channel.basic_ack(self.delivery_tag)

    async def requeue(self) -> None:
        """Return it to the queue now (nack with requeue)."""
        await self.channel.basic_nack(self.delivery_tag, requeue=True)


__all__ = ["Delivery"]
