"""Connecting to one of several RabbitMQ nodes.

``ROUTER_AMQP_URL`` (and ``WORKER_AMQP_URL``) may list several comma-separated URLs, one per
node of a cluster. :func:`connect_first` tries them in turn, starting where the caller says,
so a process whose node died moves to the next one. aio-pika's robust connection reconnects to
its one URL only; the router and the workers therefore run their own reconnect loops with this.
Each URL is read once by :class:`~router.amqp.url.AmqpUrl`, which refuses what it cannot honour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection

from router.amqp.url import AmqpUrl, redact
from router.errors import ConfigError, Unavailable

#: Seconds one node gets to accept a connection before the next one is tried.
CONNECT_TIMEOUT = 5.0


class BrokerUnreachable(Unavailable):
    """Raised when no listed RabbitMQ node accepted a connection."""


def parse_urls(raw: str | Sequence[str | AmqpUrl]) -> tuple[AmqpUrl, ...]:
    """The URLs of a comma-separated list (or a sequence), each read by :class:`AmqpUrl`
    (:class:`ConfigError` in one line naming the first thing it refuses)."""
    if isinstance(raw, str):
        raw = [u.strip() for u in raw.split(",")]
    urls = tuple(u if isinstance(u, AmqpUrl) else AmqpUrl.parse(u) for u in raw if u)
    if not urls:
        raise ConfigError("no RabbitMQ URL: set ROUTER_AMQP_URL")
    return urls


def split_urls(raw: str | Sequence[str]) -> tuple[str, ...]:
    """The URLs of a comma-separated list (or a sequence), each checked by :class:`AmqpUrl`."""
    return tuple(url.raw for url in parse_urls(raw))


async def connect_first(
    urls: str | Sequence[str | AmqpUrl],
    start: int = 0,
    *,
    name: str,
    timeout: float = CONNECT_TIMEOUT,
) -> tuple[AbstractConnection, int]:
    """Connect to the first node that answers, trying ``urls`` from index ``start`` round.

    Returns the connection and the index of the URL it went to. A URL's ``timeout`` and
    ``name`` win over ``timeout`` and ``name`` here, as in the publisher.
    """
    candidates = parse_urls(urls)
    errors: list[str] = []
    for offset in range(len(candidates)):
        index = (start + offset) % len(candidates)
        url = candidates[index]
        try:
            async with asyncio.timeout(url.connect_timeout or timeout):
                connection = await aio_pika.connect(
                    url.for_aio_pika(),
                    ssl_context=url.ssl_context(),
                    client_properties={"connection_name": url.name or name},
                )
        except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as error:
            errors.append(f"{url.redacted}: {error!r}")
            continue
        return connection, index
    raise BrokerUnreachable("no RabbitMQ node answered: " + "; ".join(errors))


__all__ = ["AmqpUrl", "BrokerUnreachable", "connect_first", "parse_urls", "redact", "split_urls"]
