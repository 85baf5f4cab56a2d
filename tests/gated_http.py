"""An :class:`~router.ingress.http1.HttpServer` with no broker behind it, whose handler a test
holds: ``/slow`` waits until the gate is set, ``/big`` answers 64 KiB, ``/broken`` answers a
header our own writer cannot encode, any other path is echoed as ``{"path": ...}``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from router.ingress.http1 import HttpServer, Limits
from router.ingress.messages import Answer, Request
from tests.wire import SMALL_BODY_LIMIT

#: Deadlines short enough for a test to see them pass (a head within 1 s, a body within 5 s,
#: an idle connection closed after 3 s), and the body limit of the served ingress.
LIMITS = Limits(
    max_body_bytes=SMALL_BODY_LIMIT, head_timeout=1, body_timeout=5, keepalive_timeout=3
)


@dataclass
class Gated:
    """The server, its port, the gate that releases /slow, and the paths it began to handle."""

    server: HttpServer
    port: int
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    handled: list[str] = field(default_factory=list)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(5):
            return await asyncio.open_connection("127.0.0.1", self.port)

    async def until_handled(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.handled) < count:
                await asyncio.sleep(0.01)

    async def asking_slow(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new connection whose request /slow the server is answering (held by the gate)."""
        asked = len(self.handled)
        reader, writer = await self.connect()
        writer.write(b"GET /slow HTTP/1.1\r\nHost: r\r\n\r\n")
        await self.until_handled(asked + 1)
        return reader, writer


@asynccontextmanager
async def gated_server(limits: Limits = LIMITS) -> AsyncIterator[Gated]:
    """A :class:`Gated` server listening on a free port of 127.0.0.1 with ``limits``."""
    holder: list[Gated] = []

    async def handler(request: Request) -> Answer:
        state = holder[0]
        if request.refusal is not None:  # (as the ingress answers one: its status)
            return Answer(int(request.refusal), b'{"error":"refused"}')
        state.handled.append(request.path)
        if request.path == "/slow":
            await state.gate.wait()
        if request.path == "/big":
            return Answer(200, b"b" * 65536, content_type="text/plain")
        if request.path == "/broken":  # (a header our own writer cannot encode)
            return Answer(200, b"", content_type="text/plain; charset=\u20ac")
        return Answer(200, b'{"path":"%s"}' % request.raw_path.encode())

    server = HttpServer(handler, limits)
    listening = await asyncio.get_running_loop().create_server(server, "127.0.0.1", 0)
    holder.append(Gated(server, listening.sockets[0].getsockname()[1]))
    try:
        yield holder[0]
    finally:
        listening.close()


__all__ = ["LIMITS", "Gated", "gated_server"]
