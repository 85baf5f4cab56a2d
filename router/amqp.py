"""Connecting to one of several RabbitMQ nodes.

``ROUTER_AMQP_URL`` (and ``WORKER_AMQP_URL``) may list several comma-separated URLs, one per
node of a cluster. :func:`connect_first` tries them in turn, starting where the caller says,
so a process whose node died moves to the next one. aio-pika's robust connection reconnects to
its one URL only; the router and the workers therefore run their own reconnect loops with this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection
from yarl import URL

from router.errors import ConfigError, RouterError

#: Seconds one node gets to accept a connection before the next one is tried.
CONNECT_TIMEOUT = 5.0


class BrokerUnreachable(RouterError):
    """Raised when no listed RabbitMQ node accepted a connection."""


def split_urls(raw: str | Sequence[str]) -> tuple[str, ...]:
    """The URLs of a comma-separated list (or a sequence), each checked to be amqp(s)://."""
    urls = tuple(u.strip() for u in raw.split(",")) if isinstance(raw, str) else tuple(raw)
    urls = tuple(u for u in urls if u)
    if not urls:
        raise ConfigError("no RabbitMQ URL: set ROUTER_AMQP_URL")
    for url in urls:
        if URL(url).scheme not in ("amqp", "amqps"):
            raise ConfigError(f"{redact(url)} is not an amqp:// or amqps:// URL")
    return urls


def redact(url: str) -> str:
    """The URL without its password, for logs and messages."""
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else url


async def connect_first(
    urls: str | Sequence[str],
    start: int = 0,
    *,
    name: str,
    timeout: float = CONNECT_TIMEOUT,
) -> tuple[AbstractConnection, int]:
    """Connect to the first node that answers, trying ``urls`` from index ``start`` round.

    Returns the connection and the index of the URL it went to.
    """
    candidates = split_urls(urls)
    errors: list[str] = []
    for offset in range(len(candidates)):
        index = (start + offset) % len(candidates)
        url = candidates[index]
        try:
            async with asyncio.timeout(timeout):
                connection = await aio_pika.connect(
                    url, client_properties={"connection_name": name}
                )
        except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as error:
            errors.append(f"{redact(url)}: {error!r}")
            continue
        return connection, index
    raise BrokerUnreachable("no RabbitMQ node answered: " + "; ".join(errors))


__all__ = ["BrokerUnreachable", "connect_first", "redact", "split_urls"]
