"""A TCP proxy between an AMQP client and the real RabbitMQ, for faults a broker never makes.

It forwards whole frames, each direction on its own, and on the way it can:

- split every write into pieces of a few bytes (``piece``), each written on its own;
- freeze one direction or both (:meth:`AmqpProxy.freeze`): bytes are held, not forwarded, the
  sockets stay up (a half-open path);
- rewrite what RabbitMQ offers in Connection.Tune (``offer_heartbeat``), to play a server
  configured differently from this machine's;
- drop every connection at once (:meth:`AmqpProxy.drop`).

It records every frame the client sent (:attr:`AmqpProxy.from_client`), so a test can read the
TuneOk the client answered or count its heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from pamqp import frame as pamqp_frame
from pamqp.commands import Connection
from yarl import URL

_PREFIX = struct.Struct(">BHI")
_PROTOCOL_HEADER = 8  # b"AMQP\0\0\x09\x01", ahead of the client's first frame
_TUNE = struct.pack(">HH", 10, 30)
_TUNE_FIELDS = struct.Struct(">HHHIH")  # class, method, channel_max, frame_max, heartbeat
FRAME_METHOD, FRAME_HEARTBEAT = 1, 8


@dataclass
class _Direction:
    flowing: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.flowing.set()


class AmqpProxy:
    """Listens on 127.0.0.1 (an OS-chosen port) and forwards to ``upstream``."""

    def __init__(
        self,
        upstream: tuple[str, int] = ("127.0.0.1", 5672),
        *,
        piece: int | None = None,
        offer_heartbeat: int | None = None,
    ) -> None:
        self._upstream = upstream
        self._piece = piece
        self._offer_heartbeat = offer_heartbeat
        self._server: asyncio.Server | None = None
        self._to_broker = _Direction()
        self._to_client = _Direction()
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: Every frame any client sent through this proxy, whole (prefix, payload, end octet).
        self.from_client: list[bytes] = []
        #: Connections accepted so far.
        self.accepted = 0
        #: Writes made (one per piece when splitting).
        self.writes = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, **options: Any) -> AsyncIterator[AmqpProxy]:
        """A started proxy, closed with its connections afterwards."""
        proxy = cls(**options)
        proxy._server = await asyncio.start_server(proxy._accept, "127.0.0.1", 0)
        try:
            yield proxy
        finally:
            proxy.drop()
            proxy._server.close()
            await proxy._server.wait_closed()
            for task in list(proxy._tasks):
                task.cancel()
            await asyncio.gather(*proxy._tasks, return_exceptions=True)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, base: str) -> str:
        """``base`` (a RabbitMQ URL) going through this proxy instead."""
        return str(URL(base).with_host("127.0.0.1").with_port(self.port))

    # -- faults ---------------------------------------------------------------------------

    def freeze(self, *, to_broker: bool = False, to_client: bool = False) -> None:
        """Hold what flows in the directions named, until :meth:`thaw`."""
        if to_broker:
            self._to_broker.flowing.clear()
        if to_client:
            self._to_client.flowing.clear()

    def thaw(self) -> None:
        self._to_broker.flowing.set()
        self._to_client.flowing.set()

    def drop(self) -> None:
        """Cut every connection (both sides) at once."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    # -- what the client sent -------------------------------------------------------------

    def client_methods(self) -> list[object]:
        """The method frames the clients sent, unmarshalled by pamqp."""
        return [pamqp_frame.unmarshal(raw)[2] for raw in self.from_client if raw[0] == FRAME_METHOD]

    def tune_oks(self) -> list[Connection.TuneOk]:
        return [m for m in self.client_methods() if isinstance(m, Connection.TuneOk)]

    def client_heartbeats(self) -> int:
        return sum(raw[0] == FRAME_HEARTBEAT for raw in self.from_client)

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (at most ``timeout`` seconds) until ``condition()`` holds."""
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)

    # -- forwarding -----------------------------------------------------------------------

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            broker_r, broker_w = await asyncio.open_connection(*self._upstream)
        except OSError:
            client_w.transport.abort()
            return
        self._writers += (client_w, broker_w)
        pumps = [
            asyncio.create_task(self._pump(client_r, broker_w, self._to_broker, from_client=True)),
            asyncio.create_task(self._pump(broker_r, client_w, self._to_client, from_client=False)),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:  # one side is gone: so is the other
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        self._tasks.difference_update(pumps)
        for writer in (client_w, broker_w):
            writer.transport.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: _Direction,
        *,
        from_client: bool,
    ) -> None:
        buffer = bytearray()
        if from_client:
            buffer += await reader.readexactly(_PROTOCOL_HEADER)
            await self._forward(writer, direction, bytes(buffer))
            buffer.clear()
        while data := await reader.read(65536):
            buffer += data
            whole = bytearray()
            while len(buffer) >= _PREFIX.size:
                _, _, size = _PREFIX.unpack_from(buffer)
                end = _PREFIX.size + size + 1
                if len(buffer) < end:
                    break
                raw = bytes(buffer[:end])
                del buffer[:end]
                if from_client:
                    self.from_client.append(raw)
                else:
                    raw = self._rewrite(raw)
                whole += raw
            if whole:
                await self._forward(writer, direction, bytes(whole))

    def _rewrite(self, raw: bytes) -> bytes:
        """A Connection.Tune from RabbitMQ with the heartbeat this proxy offers instead."""
        start = _PREFIX.size
        if (
            self._offer_heartbeat is None
            or raw[0] != FRAME_METHOD
            or raw[start : start + 4] != _TUNE
        ):
            return raw
        fields = list(_TUNE_FIELDS.unpack_from(raw, start))
        fields[4] = self._offer_heartbeat
        return raw[:start] + _TUNE_FIELDS.pack(*fields) + raw[start + _TUNE_FIELDS.size :]

    async def _forward(
        self, writer: asyncio.StreamWriter, direction: _Direction, data: bytes
    ) -> None:
        await direction.flowing.wait()
        step = self._piece or len(data)
        for offset in range(0, len(data), step):
            writer.write(data[offset : offset + step])
            self.writes += 1
            await writer.drain()
            if self._piece:
                await asyncio.sleep(0)  # let the reader see this piece on its own


__all__ = ["AmqpProxy"]
