"""The ingress as ``attentive-router serve`` runs it, spoken to byte by byte: what the tests
of its connections (router.ingress.http1) and of hostile input share."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pytest

from router.contract.names import SIGNATURE_HEADER
from router.contract.signing import sign
from router.ingress.http1 import HttpServer
from router.ingress.service import Ingress
from router.settings import Settings

if TYPE_CHECKING:
    from tests.conftest import Tap

STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9]) ")


@dataclass
class Served:
    """An :class:`~router.ingress.service.Ingress` listening on a local port."""

    settings: Settings
    port: int
    server: HttpServer
    #: The internal listener's port (/metrics, /readyz).
    internal_port: int = 0

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(5):
            return await asyncio.open_connection("127.0.0.1", self.port)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def internal_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.internal_port}{path}"

    async def handling(self, count: int) -> None:
        """Wait until ``count`` requests have been handed to the app (their heads arrived)."""
        async with asyncio.timeout(5):
            while self.server.requests_count < count:
                await asyncio.sleep(0.01)


#: Starts an ingress; ``serve_settings``'s takes settings and changes to them by keyword.
Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve_settings(test_id: str) -> AsyncIterator[Serve]:
    """``serve_settings(settings, **changes)``: serve the ingress as ``serve`` does, on a
    port of its own on 127.0.0.1."""
    started: list[Ingress] = []

    async def start(base: Settings, **changes: Any) -> Served:
        changed = replace(base, **{"host": "127.0.0.1", "port": 0, "internal_port": 0, **changes})
        ingress = Ingress(changed, connection_name=test_id)
        await ingress.start()
        started.append(ingress)
        await ingress.broker.wait_ready(timeout=15)
        return Served(changed, ingress.port, ingress.http, ingress.internal_port)

    yield start
    for ingress in started:
        await ingress.stop()


#: The body limit of :func:`served`: small, so a test can go over it cheaply.
SMALL_BODY_LIMIT = 4096


@pytest.fixture
async def served(serve_settings: Serve, settings: Settings) -> Served:
    """The test's ingress served as ``serve`` serves it, with a body limit of
    :data:`SMALL_BODY_LIMIT` bytes."""
    return await serve_settings(settings, max_body_bytes=SMALL_BODY_LIMIT)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def until_closed(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything received until the server closes the connection (at most ``within`` s)."""
    received = b""
    async with asyncio.timeout(within):
        try:
            while chunk := await reader.read(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP response (with Content-Length) off a kept-alive connection: status and body."""
    status, _, body = await read_response_head(reader)
    return status, body


async def read_response_head(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """One HTTP response (with Content-Length): status, head and body."""
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line = STATUS_LINE.match(head)
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        assert status_line is not None and length is not None, head
        return int(status_line[1]), head, await reader.readexactly(int(length[1]))


async def published_as_sent(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tap: Tap, body: bytes
) -> None:
    """The webhook written on this connection is answered 200, and ``tap`` gets ``body``
    exactly as it was sent; the connection is closed."""
    assert (await read_response(reader))[0] == 200
    writer.close()
    assert [m.body for m in await tap.take(1)] == [body]


def signed_request(body: bytes, key: str, *, headers: bytes = b"") -> bytes:
    """A webhook request signed with ``key`` that keeps its connection open."""
    return (
        b"POST /webhooks/attentive HTTP/1.1\r\nHost: router\r\nContent-Type: application/json\r\n"
        + SIGNATURE_HEADER.encode()
        + b": "
        + sign(body, key).encode()
        + b"\r\nContent-Length: %d\r\n" % len(body)
        + headers
        + b"\r\n"
        + body
    )
