"""What every hand-written AMQP 0-9-1 connection of the router does alike: connect to the
URL's node (TLS, the socket options), log in, agree on ``frame_max`` and the heartbeat, keep
the heartbeat.

The publish-only connection (:mod:`router.amqp.publisher`) and the read-only stream reader
(:mod:`router.amqp.stream_reader`) each do only what their job needs after the handshake; the
handshake itself is here, once.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pamqp import commands
from pamqp import frame as pamqp_frame
from pamqp.base import Frame

from router.amqp.frames import FRAME_END, FRAME_HEARTBEAT, FRAME_PREFIX
from router.amqp.url import AmqpUrl, negotiate_heartbeat

#: A heartbeat frame (channel 0, no payload).
HEARTBEAT = FRAME_PREFIX.pack(FRAME_HEARTBEAT, 0, 0) + FRAME_END


class LoginRefused(Exception):
    """RabbitMQ does not offer the URL's login mechanism."""


@dataclass(frozen=True, slots=True)
class Tuned:
    """What Connection.Tune settled: the frame size, the heartbeat (seconds, 0: none) and the
    frames that answer it (TuneOk, then Connection.Open of the URL's vhost)."""

    frame_max: int
    heartbeat: int
    reply: bytes


def frame_of(value: Frame, channel: int) -> bytes:
    """A method frame marshalled by pamqp (for the few methods sent outside a hot path)."""
    return pamqp_frame.marshal(value, channel)


async def connect(
    url: AmqpUrl,
    protocol: asyncio.Protocol,
    ready: asyncio.Future[None],
    abort: Callable[[], None],
    timeout: float,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Connect ``protocol`` to ``url``'s node and wait until it is ``ready``, within the URL's
    ``timeout`` (else ``timeout``) seconds; on any failure ``abort`` it and raise. TLS is
    ``tls`` when given, else the URL's."""
    loop = asyncio.get_running_loop()
    options: dict[str, Any] = {}
    if url.interleave is not None:
        options["interleave"] = url.interleave
    if url.happy_eyeballs_delay is not None:
        options["happy_eyeballs_delay"] = url.happy_eyeballs_delay
    try:
        async with asyncio.timeout(url.connect_timeout or timeout):
            await loop.create_connection(
                lambda: protocol, url.host, url.port, ssl=tls or url.ssl_context(), **options
            )
            await ready
    except BaseException:
        abort()
        raise


def start_ok(url: AmqpUrl, name: str, mechanisms: object, capabilities: dict[str, bool]) -> bytes:
    """The answer to Connection.Start: the URL's login, the connection's name and the client's
    ``capabilities``; :class:`LoginRefused` when RabbitMQ does not offer the URL's mechanism."""
    if url.auth not in str(mechanisms).split():
        raise LoginRefused(f"RabbitMQ offers no {url.auth} login: {mechanisms!r}")
    # as aiormq's PlainAuth and ExternalAuth (the user comes from the certificate)
    login = f"\0{url.user}\0{url.password}" if url.auth == "PLAIN" else ""
    properties: dict[str, Any] = {
        "connection_name": name,
        "product": "attentive-router",
        "capabilities": {"authentication_failure_close": True, **capabilities},
    }
    answer = commands.Connection.StartOk(
        client_properties=properties, mechanism=url.auth, response=login
    )
    return frame_of(answer, 0)


def tune(url: AmqpUrl, offered_frame_max: int, offered_heartbeat: int, frame_max: int) -> Tuned:
    """The frame size (RabbitMQ's, at most ``frame_max``) and heartbeat
    (:func:`~router.amqp.url.negotiate_heartbeat`) both sides keep, and the frames saying so."""
    size = min(offered_frame_max or frame_max, frame_max)
    heartbeat = negotiate_heartbeat(url.heartbeat, offered_heartbeat)
    reply = frame_of(commands.Connection.TuneOk(1, size, heartbeat), 0) + frame_of(
        commands.Connection.Open(url.vhost), 0
    )
    return Tuned(size, heartbeat, reply)


def heartbeat_due(now: float, last_received: float, last_sent: float, heartbeat: float) -> str:
    """``"dead"`` when RabbitMQ missed two heartbeats, ``"send"`` when ours is due, else ``""``
    (always ``""`` without a heartbeat)."""
    if not heartbeat:
        return ""
    if now - last_received > 2 * heartbeat:
        return "dead"
    return "send" if now - last_sent >= heartbeat / 2 else ""


__all__ = [
    "HEARTBEAT",
    "LoginRefused",
    "Tuned",
    "connect",
    "frame_of",
    "heartbeat_due",
    "start_ok",
    "tune",
]
