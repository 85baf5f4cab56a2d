"""The open-loop HTTP sender of phase c, light enough to share two cores with what it measures.

Request i leaves at start + i/rate whatever the server does. Its body carries
``bench_sent_at``: that scheduled moment (wall clock), so the end-to-end latency the worker
records counts from when the request was due, and a sender that falls behind shows in the
figure instead of hiding in it.

aiohttp's client, which sent them before, cost about 600 µs of CPU per request on the slower
2-core machines: 61 % of a core at 1,000/s, more than the ingress it measured, and enough to
saturate the machine with the ingress, the broker and the worker beside it. This sender keeps
what a request needs ready (the body around its timestamp, the request head), signs each body
as it goes, writes it on an idle keep-alive connection (a new one when none is idle) and reads
only the status line and ``Content-Length`` of the answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

import orjson
from yarl import URL

from bench.common import (
    KEY,
    PAYLOAD_BYTES,
    SENT_AT,
    WARMUP,
    BenchError,
    payload_templates,
    summarize_ms,
)
from router.contract.names import SIGNATURE_HEADER
from router.contract.signing import sign

#: Seconds an answer may take before the request counts as an error.
ANSWER_TIMEOUT = 10.0
_PLACEHOLDER = "@sent_at@"
_HEAD_END = b"\r\n\r\n"

Done = Callable[[int | None], None]


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.done: Done | None = None
        self.reusable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def request(self, data: bytes, done: Done) -> None:
        assert self.transport is not None
        self.done = done
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(_HEAD_END)
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip() == b"close":
                self.reusable = False
        if len(self.buffer) < end + len(_HEAD_END) + length:
            return  # the rest of the body is still on its way
        del self.buffer[: end + len(_HEAD_END) + length]
        self._finish(int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._finish(None)

    def _finish(self, status: int | None) -> None:
        done, self.done = self.done, None
        if done is not None:
            done(status)


class OpenLoopSender:
    """Sends ``rate`` requests a second to ``url`` for ``warmup + seconds``; the warm-up's
    bodies carry ``bench_warmup`` and are not measured."""

    def __init__(self, url: str, rate: float, seconds: float, warmup: float) -> None:
        parsed = URL(url)
        if parsed.host is None or parsed.port is None:
            raise BenchError(f"the sender needs a URL with a host and a port: {url}")
        self.host, self.port, self.rate = parsed.host, parsed.port, rate
        self.total = int(rate * (warmup + seconds))
        self.measured_from = int(rate * warmup)
        self.head = (
            f"POST {parsed.raw_path_qs} HTTP/1.1\r\nHost: {parsed.raw_authority}\r\n"
            f"Content-Type: application/json\r\n{SIGNATURE_HEADER}: "
        ).encode()
        self.bodies = [  # (before the timestamp, after it) per template, measured or warm-up
            {warm: _around_timestamp(template, warm) for warm in (False, True)}
            for template in payload_templates(PAYLOAD_BYTES)
        ]
        self.idle: list[_Connection] = []
        self.connections = 0
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.errors = 0
        self.outstanding = 0
        self.max_lag = 0.0
        self.connecting: set[asyncio.Task[None]] = set()

    def prepared(self, i: int, due_wall: float) -> bytes:
        before, after = self.bodies[i % len(self.bodies)][i < self.measured_from]
        body = b"%b%.6f%b" % (before, due_wall, after)
        return b"%b%b\r\nContent-Length: %d\r\n\r\n%b" % (
            self.head,
            sign(body, KEY).encode(),
            len(body),
            body,
        )

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        clock = time.perf_counter  # uvloop's loop.time() has a 1 ms resolution
        start = clock() + 0.05
        start_wall = time.time() + (start - clock())
        for i in range(self.total):
            due = start + i / self.rate
            wait = due - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                self.max_lag = max(self.max_lag, -wait)
            data = self.prepared(i, start_wall + i / self.rate)
            self.outstanding += 1
            if self.idle:
                self._send(self.idle.pop(), data, i, due)
            else:
                task = loop.create_task(self._connect_and_send(data, i, due))
                self.connecting.add(task)
                task.add_done_callback(self.connecting.discard)
        span = clock() - (start + self.measured_from / self.rate)
        deadline = clock() + ANSWER_TIMEOUT + 5
        while self.outstanding and clock() < deadline:
            await asyncio.sleep(0.05)
        self.errors += self.outstanding  # never answered
        for connection in self.idle:
            if connection.transport is not None:
                connection.transport.close()
        measured = self.total - self.measured_from
        return {
            "requests": measured,
            "achieved_rps": round(measured / span, 1) if span > 0 else None,
            "statuses": self.statuses,
            "errors": self.errors,
            "sched_lag_max_ms": round(self.max_lag * 1000, 3),
            "connections": self.connections,
            "http": summarize_ms(self.latencies),
        }

    async def _connect_and_send(self, data: bytes, i: int, due: float) -> None:
        try:
            _, connection = await asyncio.wait_for(
                asyncio.get_running_loop().create_connection(_Connection, self.host, self.port),
                ANSWER_TIMEOUT,
            )
        except (OSError, TimeoutError):
            self._answered(None, i, due)
            return
        self.connections += 1
        self._send(connection, data, i, due)

    def _send(self, connection: _Connection, data: bytes, i: int, due: float) -> None:
        def done(status: int | None) -> None:
            self._answered(status, i, due)
            if connection.reusable:
                self.idle.append(connection)

        connection.request(data, done)

    def _answered(self, status: int | None, i: int, due: float) -> None:
        self.outstanding -= 1
        if i < self.measured_from:
            return
        if status is None:
            self.errors += 1
            return
        self.latencies.append((time.perf_counter() - due) * 1000)
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1


def _around_timestamp(template: dict[str, Any], warmup: bool) -> tuple[bytes, bytes]:
    payload = {**template, SENT_AT: _PLACEHOLDER}
    if warmup:
        payload[WARMUP] = True  # the e2e worker does not count it
    before, after = orjson.dumps(payload).split(orjson.dumps(_PLACEHOLDER))
    return before, after


__all__ = ["OpenLoopSender"]
