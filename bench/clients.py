"""The bench's own client processes; each prints one JSON line and exits.

    python -m bench.clients publish --exchange X [--seconds S --warmup W --in-flight 64]
    python -m bench.clients publish-count --exchange X --count N [--callgrind]
    python -m bench.clients prefill --exchange X --queue Q --count N
    python -m bench.clients consume --queue Q --count N [--prefetch 256]
    python -m bench.clients send --url URL [--rate 1000 --seconds S --warmup W]

``publish`` is the bare aio-pika publisher (confirms, N in flight, no HTTP): the client-side
ceiling. ``consume`` is the bare aio-pika consumer (manual ack). ``send`` is the open-loop
HTTP sender of :mod:`bench.sender`: request i leaves at start + i/rate whatever the server
does, and its body carries ``bench_sent_at``, that scheduled moment, for the end-to-end
latency. ``--loop uvloop`` runs any of them on uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from bench import callgrind as bench_callgrind
from bench.common import (
    AMQP_URL,
    PAYLOAD_BYTES,
    SEQ,
    BenchError,
    amqp_message,
    parsed,
    payload_bodies,
    payload_templates,
    summarize_ms,
)
from bench.sender import OpenLoopSender


@contextlib.asynccontextmanager
async def confirming(exchange_name: str) -> AsyncIterator[AbstractExchange]:
    """The exchange on a channel in confirm mode: each publish waits for its confirm."""
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        yield await channel.get_exchange(exchange_name)


async def publish(exchange_name: str, seconds: float, warmup: float, in_flight: int) -> Any:
    """Publish for ``seconds`` (after ``warmup``) with ``in_flight`` awaiting confirms."""
    bodies = payload_bodies(PAYLOAD_BYTES)
    events = [parsed(body) for body in bodies]
    loop = asyncio.get_running_loop()
    async with confirming(exchange_name) as exchange:

        async def run(until: float, latencies: list[float] | None, offset: int) -> None:
            i = offset
            while loop.time() < until:
                k = i % len(bodies)
                started = time.perf_counter()
                await exchange.publish(
                    amqp_message(bodies[k], events[k]), routing_key=events[k].routing_key
                )
                if latencies is not None:
                    latencies.append((time.perf_counter() - started) * 1000)
                i += in_flight

        if warmup > 0:
            until = loop.time() + warmup
            await asyncio.gather(*(run(until, None, n) for n in range(in_flight)))
        latencies: list[float] = []
        started = time.perf_counter()
        until = loop.time() + seconds
        await asyncio.gather(*(run(until, latencies, n) for n in range(in_flight)))
        elapsed = time.perf_counter() - started
    return {
        "messages": len(latencies),
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(len(latencies) / elapsed),
        **summarize_ms(latencies),
    }


async def publish_count(
    exchange_name: str, count: int, warmup: int, in_flight: int, callgrind: bool
) -> Any:
    """Publish ``warmup`` messages, then ``count`` more, ``in_flight`` awaiting confirms; with
    ``callgrind`` (this process runs under it), only the ``count`` are counted."""
    bodies = payload_bodies(PAYLOAD_BYTES)
    events = [parsed(body) for body in bodies]
    async with confirming(exchange_name) as exchange:

        async def publish_all(total: int) -> None:
            numbers = iter(range(total))

            async def one_at_a_time() -> None:
                for i in numbers:
                    k = i % len(bodies)
                    message = amqp_message(bodies[k], events[k])
                    await exchange.publish(message, routing_key=events[k].routing_key)

            await asyncio.gather(*(one_at_a_time() for _ in range(in_flight)))

        await publish_all(warmup)
        if callgrind:
            bench_callgrind.count(os.getpid(), True)
        started = time.perf_counter()
        await publish_all(count)
        elapsed = time.perf_counter() - started
        if callgrind:
            bench_callgrind.count(os.getpid(), False)
    return {"messages": count, "seconds": round(elapsed, 3)}


async def prefill(exchange_name: str, queue_name: str, count: int, timeout: float) -> Any:
    """Publish ``count`` unique events (confirmed), then wait until the queue holds them."""
    templates = payload_templates(PAYLOAD_BYTES)
    started = time.perf_counter()
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(exchange_name)
        counter = iter(range(count))

        async def publisher() -> None:
            for i in counter:
                body = orjson.dumps({**templates[i % len(templates)], SEQ: i})
                event = parsed(body)
                await exchange.publish(amqp_message(body, event), routing_key=event.routing_key)

        await asyncio.wait_for(asyncio.gather(*(publisher() for _ in range(64))), timeout)
        queue = await channel.declare_queue(queue_name, passive=True)
        deadline = time.monotonic() + 30
        while (queue.declaration_result.message_count or 0) < count:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{queue_name} holds {queue.declaration_result.message_count} of {count}"
                )
            await asyncio.sleep(0.2)
            queue = await channel.declare_queue(queue_name, passive=True)
        held = queue.declaration_result.message_count
    return {"published": count, "depth": held, "seconds": round(time.perf_counter() - started, 2)}


async def consume(queue_name: str, count: int, prefetch: int, timeout: float) -> Any:
    """Drain ``count`` deliveries, acking each; the rate from the first to the last arrival."""
    done = asyncio.Event()
    first = last = 0.0
    seen = 0
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(queue_name)

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal first, last, seen
            now = time.perf_counter()
            seen += 1
            if seen == 1:
                first = now
            await message.ack()
            if seen == count:
                last = now
                done.set()

        tag = await queue.consume(on_message)
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            raise BenchError(f"consumed {seen} of {count} in {timeout:.0f} s") from None
        finally:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
    return {
        "messages": count,
        "seconds": round(last - first, 3),
        "msgs_per_s": round((count - 1) / (last - first)) if last > first else None,
        "prefetch": prefetch,
    }


async def send(url: str, rate: float, seconds: float, warmup: float) -> Any:
    """Open loop: request i at start + i/rate, its body stamped with that moment."""
    return await OpenLoopSender(url, rate, seconds, warmup).run()


def run_on(loop_name: str, coroutine: Coroutine[Any, Any, Any]) -> Any:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop_name == "uvloop":
        factory = importlib.import_module("uvloop").new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine)


def _shared(flag: str, **spec: Any) -> argparse.ArgumentParser:
    """A parent parser with the argument ``flag``, for the commands that take it."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(flag, **spec)
    return parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.clients")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    commands = parser.add_subparsers(dest="command", required=True)
    # The arguments several commands take, each spelled (with its default) once.
    exchange = _shared("--exchange", required=True)
    queue = _shared("--queue", required=True)
    count = _shared("--count", type=int, required=True)
    in_flight = _shared("--in-flight", type=int, default=64)
    timeout = _shared("--timeout", type=float, default=600)
    timed = _shared("--seconds", type=float, default=10)
    timed.add_argument("--warmup", type=float, default=2)
    commands.add_parser("publish", parents=[exchange, timed, in_flight])
    n = commands.add_parser("publish-count", parents=[exchange, count, in_flight])
    n.add_argument("--warmup", type=int, default=500)
    n.add_argument("--callgrind", action="store_true", help="count only --count under callgrind")
    commands.add_parser("prefill", parents=[exchange, queue, count, timeout])
    c = commands.add_parser("consume", parents=[queue, count, timeout])
    c.add_argument("--prefetch", type=int, default=256)
    s = commands.add_parser("send", parents=[timed])
    s.add_argument("--url", required=True)
    s.add_argument("--rate", type=float, default=1000)
    args = parser.parse_args(argv)
    coroutine: Coroutine[Any, Any, Any]
    match args.command:
        case "publish":
            coroutine = publish(args.exchange, args.seconds, args.warmup, args.in_flight)
        case "publish-count":
            coroutine = publish_count(
                args.exchange, args.count, args.warmup, args.in_flight, args.callgrind
            )
        case "prefill":
            coroutine = prefill(args.exchange, args.queue, args.count, args.timeout)
        case "consume":
            coroutine = consume(args.queue, args.count, args.prefetch, args.timeout)
        case _:
            coroutine = send(args.url, args.rate, args.seconds, args.warmup)
    try:
        result = run_on(args.loop, coroutine)
    except BenchError as error:
        print(f"bench.clients {args.command}: {error}", file=sys.stderr)
        return 1
    result["loop"] = args.loop
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
