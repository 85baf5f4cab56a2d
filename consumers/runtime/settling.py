"""Settling a delivery with the broker: what became of it (an :class:`Outcome`) becomes acks
and publishes, in one place.

Every move between queues is publish-with-confirm, then ack: a retry is published to the
delay tier and a dead letter to the dead-letter queue, and only once RabbitMQ confirmed it is
the delivery acked. A deferred delivery (its message id or its key busy elsewhere) takes the
same way through the shortest delay tier, without counting an attempt. If the publish fails,
the delivery is returned (nack, requeue) and comes back.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractExchange

from consumers.runtime.delivery import Delivery
from consumers.runtime.middleware import error_summary, traceback_summary
from consumers.runtime.outcomes import DeadLetter, Deferred, Handled, Outcome, RetryLater, Skipped
from router.amqp.topology import retry_routing_key
from router.contract import envelope

log = structlog.get_logger("consumers")


class Settler:
    """Settles the deliveries of ``app``: ``tiers_ms`` are its delay tiers (the first one is
    where a deferred delivery waits), ``publish_timeout`` how long a publish waits for its
    confirm. :meth:`use` gives it the exchanges of the channel consuming now."""

    def __init__(self, app: str, tiers_ms: tuple[int, ...], publish_timeout: float) -> None:
        self.app = app
        self.tiers_ms = tiers_ms
        self.publish_timeout = publish_timeout
        self._retry: AbstractExchange | None = None
        self._dead: AbstractExchange | None = None

    def use(self, retry: AbstractExchange, dead: AbstractExchange) -> None:
        """Publish retries to ``retry`` and dead letters to ``dead`` from now on."""
        self._retry = retry
        self._dead = dead

    async def settle(self, message: Delivery, attempt: int, outcome: Outcome) -> None:
        """Ack, or move the delivery (publish with confirm, then ack); on failure, return it."""
        try:
            move = self._move(message, attempt, outcome)
            if move is not None:
                await self._republish(message, *move)
            await message.ack()
        except Exception as error:
            log.warning("settle_failed_returning", error=repr(error), message_id=message.message_id)
            with contextlib.suppress(Exception):
                await message.requeue()

    def _move(
        self, message: Delivery, attempt: int, outcome: Outcome
    ) -> tuple[AbstractExchange | None, str, dict[str, Any]] | None:
        """Where a copy of the delivery goes, and its headers; None: nowhere (ack only)."""
        headers, key = message.headers, message.routing_key
        match outcome:
            case Handled() | Skipped():
                return None
            case Deferred():
                # the same attempt comes back after the shortest tier: waiting for another
                # delivery is no failure (no attempt counted, no error headers)
                deferred = envelope.deferred(headers, key, attempt=attempt)
                return self._retry, retry_routing_key(self.tiers_ms[0]), deferred
            case RetryLater(delay_ms=delay_ms, error=error):
                summary = error_summary(error)
                retried = envelope.retried(headers, key, attempt=attempt, error=summary, now=_now())
                return self._retry, retry_routing_key(delay_ms), retried
            case DeadLetter(reason=reason, error=error):
                dead = envelope.dead_lettered(
                    headers,
                    key,
                    attempt=attempt,
                    error=error_summary(error),
                    traceback=traceback_summary(error),
                    reason=reason,
                    app=self.app,
                    now=_now(),
                )
                return self._dead, key, dead

    async def _republish(
        self,
        message: Delivery,
        exchange: AbstractExchange | None,
        routing_key: str,
        headers: dict[str, Any],
    ) -> None:
        """Publish a copy of ``message`` with ``headers`` (its envelope) and await the confirm."""
        assert exchange is not None, "topology is declared before consuming"
        copy = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            timestamp=message.timestamp,
        )
        await exchange.publish(copy, routing_key, timeout=self.publish_timeout)


def _now() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = ["Settler"]
