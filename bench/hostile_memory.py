"""The ingress's memory under hostile connections: one, and a thousand.

``python -m bench.hostile_memory [--connections 1 1000]`` starts ``attentive-router serve``
(one process, the default limits: 256 KiB bodies, 16 KiB heads, 10/30/75 s timers) for each
kind of attack and each count, opens that many connections that all do the same worst thing
and never read, and prints the process's RSS before, at its peak, and the growth per
connection. A connection's worst is the sum of what it can make the ingress hold at once
(docs/security.md, "Memory under hostile clients"); each kind below fills some of those parts:

* ``pipelined``: 40,000 pipelined ``GET /metrics``, a path the webhook port does not serve
  (5 MB of 404 answers it never reads, more than the kernel holds for it: writing
  stalls), then large signed bodies pipelined (the queue of parsed requests fills to its byte
  bound), then more (a read kept unparsed);
* ``heads``: the same stall, then requests whose 16 KiB heads are as many fields as a request
  may have (``MAX_HEADER_FIELDS``: the most Python objects a head makes);
* ``in-progress``: such a head and a body of max_body_bytes less one byte,
  never finished (a deflate body, decompressed only once complete, cannot be held half-way);
* ``trailers``: a chunked body of max_body_bytes, then trailer fields up to the limit,
  never finished.

The namespace is the run's own (``bench-hostile-<hex>``) and deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aio_pika

from router.amqp import topology
from router.contract.names import SIGNATURE_HEADER, Names
from router.ingress.http1 import MAX_HEADER_FIELDS
from tests.hostile import (
    KIB,
    MIB,
    Ingress,
    Silent,
    connection_bound,
    raise_open_files,
    running_ingress,
)

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
KEY = "bench-hostile-key"
#: The defaults of ``serve``: what a user's ingress runs with.
DEFAULTS = {
    "ROUTER_MAX_BODY_BYTES": str(256 * KIB),
    "ROUTER_HEADER_TIMEOUT": "10",
    "ROUTER_BODY_TIMEOUT": "30",
    "ROUTER_KEEPALIVE_TIMEOUT": "75",
}
MAX_BODY = 256 * KIB
#: Answered 404 on the webhook port (/metrics is the internal listener's).
NOT_FOUND = b"GET /metrics HTTP/1.1\r\nHost: r\r\n\r\n"
#: Answers enough (5 MB of small 404s: more than the kernel holds for a client on the
#: loopback) to stall the ingress's writing to a client that does not read.
STALL = NOT_FOUND * 40_000


def _tiny_fields(total: int) -> bytes:
    """Distinct header fields of 3-5 bytes each (name and value), ``total`` bytes of them."""
    fields, n = [], 0
    size = 0
    while size < total:
        field = b"%x:\r\n" % n
        fields.append(field)
        size += len(field) - 3  # (what the limit counts: the name and the value)
        n += 1
    return b"".join(fields)


def _mis_signed(body_size: int) -> bytes:
    """A webhook that llhttp and the queue treat as any other (its answer: 401)."""
    return (
        b"POST /webhooks/attentive HTTP/1.1\r\nHost: r\r\n%s: %s\r\nContent-Length: %d\r\n\r\n"
        % (SIGNATURE_HEADER.encode(), b"0" * 64, body_size)
        + b"x" * body_size
    )


def _many_fields(total: int, count: int) -> bytes:
    """``count`` distinct header fields, ``total`` bytes of names and values in all."""
    value = b"v" * (total // count - 4)
    return b"".join(b"f%03d:%s\r\n" % (n, value) for n in range(count))


def pipelined() -> bytes:
    return STALL + _mis_signed(MAX_BODY - KIB) * 8


def heads() -> bytes:
    fields = _many_fields(16 * KIB - 64, MAX_HEADER_FIELDS - 1)  # (Host is one)
    head = b"GET /healthz HTTP/1.1\r\nHost: r\r\n" + fields + b"\r\n"
    return STALL + head * 40


def in_progress() -> bytes:
    head = b"POST /webhooks/attentive HTTP/1.1\r\nHost: r\r\nContent-Length: %d\r\n" % MAX_BODY
    fields = _many_fields(16 * KIB - 128, MAX_HEADER_FIELDS - 2)
    return head + fields + b"\r\n" + b"x" * (MAX_BODY - 1)


def trailers() -> bytes:
    head = b"POST /webhooks/attentive HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"%x\r\n%s\r\n0\r\n" % (MAX_BODY, b"x" * MAX_BODY)
    return head + body + _tiny_fields(16 * KIB - 256)


KINDS: dict[str, Callable[[], bytes]] = {
    "pipelined": pipelined,
    "heads": heads,
    "in-progress": in_progress,
    "trailers": trailers,
}


async def measure(kind: str, connections: int, settle: float) -> tuple[int, int, int]:
    """RSS before, at its peak, and at the end (bytes) of one ingress under ``connections``
    connections of ``kind``."""
    namespace = f"bench-hostile-{uuid.uuid4().hex[:10]}"
    data = KINDS[kind]()
    try:
        with (
            tempfile.TemporaryDirectory() as workdir,
            running_ingress(namespace, Path(workdir), AMQP_URL, KEY, **DEFAULTS) as ingress,
        ):
            await ingress.wait_ready()
            await _warm_up(ingress)
            before = peak = ingress.rss()
            clients = []
            for _ in range(connections):
                clients.append(await Silent.connect(ingress.port, data))
            deadline = time.monotonic() + settle
            while time.monotonic() < deadline:
                peak = max(peak, ingress.rss())
                await asyncio.sleep(0.1)
            end = ingress.rss()
            for client in clients:
                client.close()
            return before, max(peak, end), end
    finally:
        await _delete(namespace)


async def _warm_up(ingress: Ingress) -> None:
    for request in (NOT_FOUND, _mis_signed(MAX_BODY - KIB), _mis_signed(10)):
        await ingress.ask(request)


async def _delete(namespace: str) -> None:
    connection = await aio_pika.connect(
        AMQP_URL, client_properties={"connection_name": "bench-hostile-memory"}
    )
    async with connection:
        await topology.delete(await connection.channel(), Names(prefix=namespace))


async def run(counts: list[int], kinds: list[str], settle: float) -> None:
    raise_open_files(2 * max(counts) + 256)  # (the ingress, started from here, inherits it)
    bound = connection_bound(MAX_BODY)
    print(
        f"bound per connection (docs/security.md): {bound / MIB:.2f} MiB,"
        f" x1000: {bound * 1000 / MIB:,.0f}"
    )
    header = ("kind", "conns", "before MiB", "peak MiB", "end MiB", "per conn KiB")
    print("{:<12} {:>6} {:>11} {:>9} {:>8} {:>13}".format(*header))
    for kind in kinds:
        for count in counts:
            before, peak, end = await measure(kind, count, settle)
            per = (peak - before) / count / KIB
            print(
                f"{kind:<12} {count:>6} {before / MIB:>11.1f} {peak / MIB:>9.1f} "
                f"{end / MIB:>8.1f} {per:>13.1f}",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile_memory", description=__doc__)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 1000])
    parser.add_argument("--kind", choices=sorted(KINDS), nargs="+", default=list(KINDS))
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to watch the RSS")
    args = parser.parse_args(argv)
    if min(args.connections) < 1:
        parser.error("--connections must be at least 1")
    asyncio.run(run(args.connections, args.kind, args.settle))
    return 0


if __name__ == "__main__":
    sys.exit(main())
