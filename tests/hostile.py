"""Hostile clients against the ingress process: what tests/test_hostile_clients.py and
bench/hostile_memory.py share.

The ingress runs as ``attentive-router serve`` does (one process, so its RSS is the ingress's),
spoken to over raw sockets. :func:`connection_bound` is the most memory one connection may
make it hold, whatever the client sends, part by part; docs/security.md's "Memory under
hostile clients" explains each part and gives the figures measured with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from router.contract.examples import example_body
from router.contract.names import SIGNATURE_HEADER, WEBHOOK_PATH
from router.contract.signing import sign
from router.ingress.http1 import MAX_HEADER_FIELDS, MAX_PIPELINED
from tests.wire import free_port, until_closed

KIB = 1024
MIB = 1024 * KIB
#: The most uvloop reads from a socket at once. The read being parsed is kept whole while
#: parsing waits for answers, and one more may arrive as reading pauses: two at most.
READ_BYTES = 256 * KIB
#: The transport's write buffer above which it pauses the connection's writing (asyncio's
#: and uvloop's default high-water mark); one more answer may be added to it as it pauses.
WRITE_HIGH_WATER = 64 * KIB
#: A request line and headers (trailers too): llhttp's unparsed remainder is refused at twice
#: max_head_bytes, what is parsed at max_head_bytes.
HEAD_BYTES = 16 * KIB
#: What one header field costs as Python objects beyond its bytes (a dict entry, two bytes
#: objects), rounded up; a request has at most MAX_HEADER_FIELDS of them.
FIELD_OBJECTS = 256
#: What a connection costs before anyone sends anything: its protocol, transport, parser,
#: timer and the kernel-facing structures uvloop keeps (measured: about 5 KiB; rounded up).
IDLE_CONNECTION = 16 * KIB


def connection_bound(max_body_bytes: int) -> int:
    """The most bytes one connection can make the ingress hold, whatever its client does."""
    head_objects = HEAD_BYTES + MAX_HEADER_FIELDS * FIELD_OBJECTS
    return (
        IDLE_CONNECTION
        + 2 * READ_BYTES  # the read kept while parsing waits, and one more
        + 2 * HEAD_BYTES  # the head being read, raw
        + head_objects  # ... and as Python objects
        + 2 * max_body_bytes  # queued requests: parsing pauses once they hold max_body_bytes
        + MAX_PIPELINED * head_objects  # ... and their heads as Python objects
        + max_body_bytes  # the request in progress
        + max_body_bytes  # the body being decoded (one at a time, in its turn)
        + WRITE_HIGH_WATER
        + 64 * KIB  # the answer that crossed the high-water mark (the internal /metrics)
    )


#: The internal listener's pages (never the webhook port's).
METRICS = b"GET /metrics HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n"
READYZ = b"GET /readyz HTTP/1.1\r\nHost: r\r\n\r\n"

#: Bytes the process's RSS may move by with no hostile client at all (allocator arenas,
#: log buffers, the broker connection's frames, pytest's own probing).
RSS_MARGIN = 24 * MIB

#: The settings a hostile-suite ingress runs with: short timers, a small body limit.
HOSTILE_ENV = {
    "ROUTER_WORKERS": "1",
    "ROUTER_MAX_BODY_BYTES": str(16 * KIB),
    "ROUTER_HEADER_TIMEOUT": "1",
    "ROUTER_BODY_TIMEOUT": "1",
    "ROUTER_KEEPALIVE_TIMEOUT": "2",
    "ROUTER_CONFIRM_TIMEOUT": "5",
    "ROUTER_LOG_LEVEL": "warning",
    "ROUTER_LOG_FORMAT": "json",
}


def raise_open_files(wanted: int) -> None:
    """Raise this process's soft limit of open files to ``wanted`` (up to the hard limit);
    children started afterwards inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@dataclass
class Ingress:
    """``attentive-router serve`` with one ingress process, on a port of its own."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    env: Mapping[str, str]

    @property
    def internal_port(self) -> int:
        """The internal listener's port: /metrics and /readyz are there."""
        return int(self.env["ROUTER_INTERNAL_PORT"])

    @property
    def max_body_bytes(self) -> int:
        return int(self.env["ROUTER_MAX_BODY_BYTES"])

    def rss(self) -> int:
        """The process's resident memory now, in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KIB
        raise AssertionError(f"no VmRSS for {self.process.pid}")

    async def connect(
        self, *, receive_buffer: int | None = None, internal: bool = False
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection (to the internal listener if ``internal``); ``receive_buffer`` fixes
        the client's kernel buffer (small: the ingress meets a client that does not read after
        a few KiB, not megabytes)."""
        sock = socket.socket()
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(5):
                port = self.internal_port if internal else self.port
                await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
                return await asyncio.open_connection(sock=sock, limit=4 * MIB)
        except BaseException:
            sock.close()
            raise

    async def ask(
        self, request: bytes, *, within: float = 5.0, internal: bool = False
    ) -> list[Response]:
        """The answers to ``request`` (on the internal listener if ``internal``), sent by a
        client that then shuts its end, parsed."""
        reader, writer = await self.connect(internal=internal)
        try:
            writer.write(request)
            writer.write_eof()
            return parse_responses(await until_closed(reader, within=within))
        finally:
            writer.close()

    async def wait_ready(self, within: float = 30.0) -> None:
        async with asyncio.timeout(within):
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(f"the ingress exited: {self.log.read_text()[-2000:]}")
                with contextlib.suppress(OSError):
                    answers = await self.ask(READYZ, within=2, internal=True)
                    if answers and answers[0].status == 200:
                        return
                await asyncio.sleep(0.1)

    async def outcomes(self) -> dict[str, float]:
        """``attentive_router_requests_total`` by outcome, from its internal listener's /metrics."""
        answers = await self.ask(METRICS, internal=True)
        text = answers[0].body.decode()
        found = re.findall(r'attentive_router_requests_total\{outcome="(\w+)"\} ([0-9.e+]+)', text)
        return {outcome: float(count) for outcome, count in found}


@contextlib.contextmanager
def running_ingress(
    namespace: str, workdir: Path, amqp_url: str, signing_key: str, **env: str
) -> Iterator[Ingress]:
    """Start the ingress (``ROUTER_*`` from :data:`HOSTILE_ENV`, then ``env``); stop it after."""
    port = free_port()
    settings = {
        "ROUTER_AMQP_URL": amqp_url,
        "ROUTER_SIGNING_KEYS": signing_key,
        "ROUTER_HOST": "127.0.0.1",
        "ROUTER_PORT": str(port),
        "ROUTER_ADMIN_PORT": str(free_port()),
        "ROUTER_INTERNAL_PORT": str(free_port()),
        "ROUTER_NAMESPACE": namespace,
        "ROUTER_DATABASE_URL": f"sqlite:///{workdir / 'claims.db'}",
        **HOSTILE_ENV,
        **env,
    }
    log = workdir / f"ingress-{port}.log"
    command = Path(sys.executable).with_name("attentive-router")
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [str(command), "serve"],
            env={**os.environ, **settings},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        yield Ingress(process, port, log, settings)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# -- answers on the wire -----------------------------------------------------------------------

_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [^\r\n]*\r\n")
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+): ?([^\r\n]*)\r\n")


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    @property
    def closes(self) -> bool:
        return self.headers.get(b"connection", b"").lower() == b"close"


class Malformed(AssertionError):
    """Raised when bytes from the ingress are not a sequence of well-formed responses."""


def parse_responses(data: bytes, *, complete: bool = True) -> list[Response]:
    """The HTTP/1.1 responses in ``data``: each a status line, header fields and a body of
    exactly its Content-Length (none for 1xx). With ``complete``, nothing may be left over;
    otherwise a last, incomplete response is ignored (a connection cut while it was sent)."""
    return split_responses(data, complete=complete)[0]


def split_responses(data: bytes, *, complete: bool = False) -> tuple[list[Response], bytes]:
    """:func:`parse_responses`, and the bytes of an incomplete last response."""
    responses: list[Response] = []
    at = 0
    while at < len(data):
        status_line = _STATUS_LINE.match(data, at)
        head_end = data.find(b"\r\n\r\n", at)
        if head_end < 0 and not complete and b"HTTP/1.1 "[: len(data) - at] == data[at:][:9]:
            break  # (the start of a response the connection was cut in)
        if status_line is None or head_end < 0:
            raise Malformed(f"not a status line at byte {at}: {data[at : at + 120]!r}")
        headers: dict[bytes, bytes] = {}
        position = status_line.end()
        while position < head_end + 2:
            found = _FIELD.match(data, position)
            if found is None:
                raise Malformed(f"not a header field: {data[position : position + 120]!r}")
            headers[found[1].lower()] = found[2]
            position = found.end()
        status = int(status_line[1])
        body_start = head_end + 4
        if status < 200:
            length = 0
        elif b"content-length" in headers and headers[b"content-length"].isdigit():
            length = int(headers[b"content-length"])
        else:
            raise Malformed(f"no Content-Length: {data[at:body_start]!r}")
        if body_start + length > len(data):
            if complete:
                raise Malformed(f"a body shorter than its Content-Length: {data[at:][:200]!r}")
            break
        responses.append(Response(status, headers, data[body_start : body_start + length]))
        at = body_start + length
    return responses, data[at:]


@dataclass
class Silent:
    """A client that writes and never reads: a bare socket, nothing reading it behind the
    scenes (an asyncio stream would read megabytes into its buffer on its own)."""

    sock: socket.socket
    sending: asyncio.Task[None]

    @classmethod
    async def connect(cls, port: int, data: bytes) -> Silent:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KIB)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(5):
                await loop.sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        return cls(sock, asyncio.create_task(cls._send(sock, data)))

    @staticmethod
    async def _send(sock: socket.socket, data: bytes) -> None:
        with contextlib.suppress(OSError):
            await asyncio.get_running_loop().sock_sendall(sock, data)

    async def drain(self, within: float = 1.0) -> tuple[bytes, bool]:
        """What the kernel holds for it now (and arrives within ``within`` s), and whether
        the ingress had closed or reset the connection by then."""
        loop = asyncio.get_running_loop()
        return await _collect(lambda: loop.sock_recv(self.sock, 256 * KIB), within)

    def close(self) -> None:
        self.sending.cancel()
        self.sock.close()


async def read_available(reader: asyncio.StreamReader, within: float = 0.5) -> tuple[bytes, bool]:
    """What arrives within ``within`` seconds, and whether the connection was closed by then."""
    return await _collect(lambda: reader.read(256 * KIB), within)


async def _collect(read: Callable[[], Awaitable[bytes]], within: float) -> tuple[bytes, bool]:
    """Read until the peer closes or ``within`` seconds pass: the bytes, and whether it closed."""
    received = bytearray()
    try:
        async with asyncio.timeout(within):
            while chunk := await read():
                received += chunk
    except TimeoutError:
        return bytes(received), False
    except ConnectionResetError:
        pass
    return bytes(received), True


# -- requests --------------------------------------------------------------------------------


def webhook(
    body: bytes, key: str, *, target: bytes = WEBHOOK_PATH.encode(), extra: bytes = b""
) -> bytes:
    """A signed webhook request (``extra``: more header lines, each ending in CRLF)."""
    return (
        b"POST %s HTTP/1.1\r\nHost: router\r\nContent-Type: application/json\r\n" % target
        + b"%s: %s\r\n" % (SIGNATURE_HEADER.encode(), sign(body, key).encode())
        + b"Content-Length: %d\r\n" % len(body)
        + extra
        + b"\r\n"
        + body
    )


def event(company: str, n: int, event_type: str = "sms.sent") -> bytes:
    """An event body of ``company``, distinct for each ``n``."""
    return example_body(event_type, company, external_id=n)


def trailer_fields(total: int, *, start: int = 0) -> Iterator[bytes]:
    """Distinct trailer fields, about ``total`` bytes of them, in blocks of ~64 KiB."""
    n = start
    written = 0
    while written < total:
        block = b"".join(b"X-T%d: v\r\n" % i for i in range(n, n + 4096))
        n += 4096
        written += len(block)
        yield block


def chunked_head(key: str, body: bytes) -> bytes:
    """A signed chunked webhook up to its last chunk: the trailer section comes next."""
    return (
        b"POST /webhooks/attentive HTTP/1.1\r\nHost: router\r\nContent-Type: application/json\r\n"
        + b"%s: %s\r\n" % (SIGNATURE_HEADER.encode(), sign(body, key).encode())
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n" % (len(body), body)
    )


# -- watching the ingress while it is attacked ------------------------------------------------


@dataclass
class RssWatch:
    """The ingress's RSS before an attack and the highest seen while it went on."""

    ingress: Ingress
    before: int = 0
    peak: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.before = self.peak = self.ingress.rss()
        while not stop.is_set():
            self.peak = max(self.peak, self.ingress.rss())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await stop.wait()

    @property
    def growth(self) -> int:
        return self.peak - self.before


@dataclass
class Prober:
    """A well-behaved client on a connection of its own: one signed webhook every
    ``interval`` seconds, each of which must be answered 200 within ``bound`` seconds."""

    ingress: Ingress
    key: str
    company: str = "prober"
    interval: float = 0.1
    bound: float = 1.0
    accepted: set[str] = field(default_factory=set)
    sent: int = 0
    late: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while not stop.is_set():
            if connection is None or connection[0].at_eof():
                if connection is not None:
                    connection[1].close()
                connection = await self.ingress.connect()
            reader, writer = connection
            body = event(self.company, self.sent)
            self.sent += 1
            started = time.monotonic()
            try:
                writer.write(webhook(body, self.key))
                async with asyncio.timeout(self.bound):
                    answer = await _one_response(reader)
            except (TimeoutError, ConnectionError, EOFError, Malformed) as error:  # (EOF: closed)
                self.late.append(f"probe {self.sent}: {type(error).__name__} {error}")
                writer.close()
                connection = None
                continue
            if answer.status != 200:
                self.late.append(f"probe {self.sent}: {answer.status} {answer.body[:200]!r}")
            else:
                self.accepted.add(answer.body.decode())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self.interval - (time.monotonic() - started))):
                    await stop.wait()
        if connection is not None:
            connection[1].close()


async def _one_response(reader: asyncio.StreamReader) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)\r\n", head)
    if length is None:
        raise Malformed(f"no Content-Length: {head!r}")
    body = await reader.readexactly(int(length[1]))
    return parse_responses(head + body)[0]


__all__ = [
    "HOSTILE_ENV",
    "KIB",
    "MAX_PIPELINED",
    "MIB",
    "RSS_MARGIN",
    "Ingress",
    "Malformed",
    "Prober",
    "Response",
    "RssWatch",
    "Silent",
    "chunked_head",
    "connection_bound",
    "event",
    "parse_responses",
    "raise_open_files",
    "read_available",
    "running_ingress",
    "split_responses",
    "trailer_fields",
    "webhook",
]
