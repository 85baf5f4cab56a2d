"""A replay job at incident scale: 100,000 parked dead letters published back through the
broker, from SQLite and from PostgreSQL, against a bare aio-pika publisher with confirms
publishing the same bodies with the same window, in the same run. Not a test, and not part of
``make test``.

    python -m bench.replay_jobs [--entries 100000] [--window 256] [--backends sqlite,postgres]
                                [--json PATH] [--sqlite-dir DIR]

Each backend's store is filled directly (``add_many``) with dead letters of one application
(realistic webhooks of about 1 KiB, with a worker's failure headers); then a replay job of all
of them runs in this process (:class:`router.parked.runner.JobRunner`): each entry read from
the store, published with a confirm to the application's requeue exchange (its queue), marked
replayed after the confirm, progress recorded. The bare publisher publishes the same bodies,
persistent, with ``--window`` confirms outstanding (an ``asyncio.Semaphore``), through
aio-pika's ``Exchange.publish``, once with the bodies alone (the issue's baseline) and once
with every property a replay sends (its headers too: what the store itself costs shows
there); both run before the first and after the last backend, and the table compares each
replay with the mean of each pair. The application's queue is purged between phases, and the
next phase waits ``PAUSE`` seconds for the broker to settle. The issue's target: a replay at
>= 0.8x the bare publisher's confirmed rate.

The namespace (``bench-replay-<uuid>``), the SQLite file and the PostgreSQL table
(``bench_replay_<uuid>``, in ``ROUTER_BENCH_POSTGRES_URL`` or the local ``test`` database)
are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import orjson
from pamqp.commands import Basic

from bench import parked_store
from router.amqp import topology
from router.contract import envelope
from router.contract.events import EVENT_TYPES
from router.contract.examples import example_payload
from router.contract.names import Names
from router.parked.jobs import JobRequest
from router.parked.model import ParkedEvent, parked_event
from router.parked.postgres import PostgresParkedStore
from router.parked.query import Query
from router.parked.runner import JobRunner
from router.parked.sqlite import SqliteParkedStore
from router.parked.store import ParkedStore

AMQP_URL = os.environ.get("ROUTER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_URL = os.environ.get(
    "ROUTER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
APP = "bench-app"
BATCH = 5000
TARGET = 0.8
#: Seconds between phases, for the broker to finish with the purged queue (it works on its
#: log after a purge of 100,000 messages, and a phase started at once runs slower).
PAUSE = 10.0
NOW = datetime.now(UTC).replace(microsecond=0)


def dead_letter(n: int) -> ParkedEvent:
    """The ``n``th dead letter of the application, as the keeper stores it."""
    event_type = EVENT_TYPES[n % len(EVENT_TYPES)]
    company = f"company-{n % 200:03d}"
    body = orjson.dumps(example_payload(event_type, company, timestamp_ms=n, external_id=n))
    at = NOW - timedelta(seconds=n)
    error = f"ValueError: invalid phone number for subscriber {n % 997}"
    headers = envelope.dead_lettered(
        {"x-attentive-company-id": company},
        f"{event_type}.{company}",
        attempt=5,
        error=error,
        traceback=f'Traceback (most recent call last):\n  File "h.py", line 1\n{error}\n',
        reason="exhausted",
        app=APP,
        now=at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    )
    properties = Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id=f"{n:012d}",
        timestamp=at,
        headers=headers,
    )
    return parked_event(
        body, properties, place="dlq", app=APP, routing_key=f"{event_type}.{company}", seen_at=at
    )


async def fill(store: ParkedStore, count: int) -> None:
    """Park ``count`` dead letters."""
    for start in range(0, count, BATCH):
        await store.add_many([dead_letter(n) for n in range(start, min(count, start + BATCH))])


def bare_messages(count: int, *, as_replayed: bool) -> list[aio_pika.Message]:
    """The messages of the bare publisher: the same bodies (persistent, with a message id),
    and with ``as_replayed`` also every property a replay sends (its headers too)."""
    messages = []
    for n in range(count):
        entry = dead_letter(n)
        if as_replayed:
            properties = entry.properties
            messages.append(
                aio_pika.Message(
                    entry.body,
                    headers=envelope.replayed(entry.headers),
                    content_type=properties.content_type,
                    delivery_mode=properties.delivery_mode,
                    message_id=properties.message_id,
                    timestamp=properties.timestamp,
                )
            )
        else:
            messages.append(
                aio_pika.Message(
                    entry.body,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=f"{n:012d}",
                )
            )
    return messages


async def bare_publisher(names: Names, messages: Sequence[aio_pika.Message], window: int) -> float:
    """Publish ``messages`` (confirmed, mandatory, ``window`` outstanding); messages a second."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(names.app_requeue_exchange(APP), ensure=False)
        slots = asyncio.Semaphore(window)
        tasks: set[asyncio.Task[Any]] = set()

        async def one(message: aio_pika.Message) -> None:
            try:
                await exchange.publish(message, routing_key="bench", mandatory=True)
            finally:
                slots.release()

        started = time.perf_counter()
        for message in messages:
            await slots.acquire()
            task = asyncio.create_task(one(message))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        return len(messages) / (time.perf_counter() - started)


async def replay(store: ParkedStore, names: Names, count: int, window: int) -> dict[str, Any]:
    request = JobRequest.build("replay", Query.build(place="dlq", app=APP), "bench")
    job = await store.create_job(request)
    runner = JobRunner(store, AMQP_URL, names, window=window)
    started = time.perf_counter()
    ended = await runner.run_job(job.id)
    took = time.perf_counter() - started
    await runner.close()
    assert ended is not None and ended.done == count, ended
    return {"per_second": count / took, "seconds": took, "done": ended.done}


async def queue_purge(names: Names) -> int:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(names.app_queue(APP), passive=True)
        result = await queue.purge()
        return int(result.message_count or 0)


async def bare_runs(
    names: Names,
    messages: tuple[Sequence[aio_pika.Message], Sequence[aio_pika.Message]],
    window: int,
    results: dict[str, Any],
) -> None:
    """One run of the bare publisher with the bodies alone, one with the replay's properties."""
    for key, batch in zip(("bare", "bare_same_properties"), messages, strict=True):
        print(key.replace("_", " "), file=sys.stderr, flush=True)
        results[key].append(await bare_publisher(names, batch, window))
        await queue_purge(names)
        await asyncio.sleep(PAUSE)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    names = Names(prefix=f"bench-replay-{uuid.uuid4().hex[:8]}")
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await topology.declare(channel, names)
        await topology.declare_app_queue(channel, names, APP, with_dead_letter_queue=False)
    results: dict[str, Any] = {
        "entries": args.entries,
        "window": args.window,
        "bare": [],
        "bare_same_properties": [],
    }
    stores: dict[str, ParkedStore] = {}
    workdir = Path(tempfile.mkdtemp(prefix="replay-bench-", dir=args.sqlite_dir))
    table = f"bench_replay_{uuid.uuid4().hex[:12]}"
    try:
        for kind in args.backends:
            store: ParkedStore = (
                SqliteParkedStore(workdir / "router.db")
                if kind == "sqlite"
                else PostgresParkedStore(POSTGRES_URL, table=table)
            )
            await store.open()
            await store.upgrade()
            stores[kind] = store
            print(f"filling {kind} with {args.entries:,}", file=sys.stderr, flush=True)
            await fill(store, args.entries)
        plain = bare_messages(args.entries, as_replayed=False)
        same = bare_messages(args.entries, as_replayed=True)
        await bare_runs(names, (plain, same), args.window, results)
        for kind, store in stores.items():
            print(f"replay from {kind}", file=sys.stderr, flush=True)
            results[kind] = await replay(store, names, args.entries, args.window)
            await queue_purge(names)
            await asyncio.sleep(PAUSE)
        await bare_runs(names, (plain, same), args.window, results)
    finally:
        for store in stores.values():
            await store.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if "postgres" in stores:
            await parked_store.drop_tables(POSTGRES_URL, table)
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            await topology.delete_app(await connection.channel(), names, APP)
            await topology.delete(await connection.channel(), names)
    return results


def report(results: dict[str, Any], backends: Sequence[str]) -> None:
    """The table: each replay against the bare publisher of the bodies alone (the issue's
    baseline) and of the same properties (what the store itself costs)."""
    bare = sum(results["bare"]) / len(results["bare"])
    same = sum(results["bare_same_properties"]) / len(results["bare_same_properties"])
    print(f"replay of {results['entries']:,} entries, window {results['window']}")
    print(f"{'':<36}{'msg/s':>9}{'x bare':>8}{'x same':>8}  target (x bare)")
    for label, key, rate in (
        ("bare aio-pika publisher", "bare", bare),
        ("bare, the replay's properties", "bare_same_properties", same),
    ):
        runs = ", ".join(f"{r:,.0f}" for r in results[key])
        print(f"{label:<36}{rate:>9,.0f}{rate / bare:>8.2f}{rate / same:>8.2f}  (runs: {runs})")
    for kind in backends:
        rate = results[kind]["per_second"]
        verdict = "met" if rate / bare >= TARGET else "missed"
        print(
            f"{'replay job from ' + kind:<36}{rate:>9,.0f}{rate / bare:>8.2f}{rate / same:>8.2f}"
            f"  >= {TARGET} {verdict}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay_jobs", description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--sqlite-dir", help="where the SQLite file goes (a temporary dir)")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results = asyncio.run(run(args))
    report(results, args.backends)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
