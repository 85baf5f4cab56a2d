"""Phase j of ``make bench``: what newest wins costs a worker's drain (issue 29, item 6; the
target: >= 0.7x the same worker without it, over distinct subscribers).

Each drain is a no-op worker (prefetch as phase d) draining ``--newest-events`` subscribe
events from a pre-filled application queue, its idempotency store in Redis or PostgreSQL
(``WORKER_IDEMPOTENCY_URL``), in two shapes:

- **distinct**: the events of :data:`DISTINCT` subscribers, one lane and one lease each;
- **hot**: the events of :data:`HOT` subscribers, each subscriber's events one at a time.

and two modes, alternating which goes first from round to round:

- **off**: the handler has no key family (the worker as before newest wins);
- **on**: the same handler with ``newest="subscription"``: per event, a lane turn, then two
  calls to that same store (the key's lease taken with its newest time read; the time recorded
  with the lease released), on top of idempotency's two.

Every event carries the ingress's ordering headers, under a subject-key secret new to each
drain (so no drain finds the keys of another), its times rising in publish order. A
middleware outside the guard counts every delivery settled (handled or skipped), so a drain
ends when every event was settled either way. Beside the rate, the worker process's CPU per
event from the moment it consumes (a figure a busy machine disturbs less). After each drain,
what it left in its store (the handled ids, kept a day otherwise; the newest times and leases)
is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika
import asyncpg
import orjson
import redis.asyncio

from bench.common import AMQP_URL, APP, BenchError, Proc, proc_stats, purge, run_async, wait_until
from consumers import Event, Worker
from consumers.runtime.idempotency_postgres import DEFAULT_TABLE as IDEMPOTENCY_TABLE
from consumers.runtime.idempotency_redis import RedisStore
from consumers.runtime.middleware import Next
from consumers.runtime.newest_postgres import DEFAULT_TABLE as NEWEST_TABLE
from consumers.runtime.newest_redis import RedisNewestStore
from consumers.runtime.outcomes import Outcome
from router.contract.examples import example_payload
from router.contract.names import EVENT_TIME_HEADER, SUBJECT_KEY_HEADER, routing_key
from router.contract.ordering import SubjectKeys

if TYPE_CHECKING:
    from collections.abc import Iterator

    from bench.run import Bench

#: Subscribers of each shape.
DISTINCT, HOT = 10_000, 10
SHAPES = {"distinct": DISTINCT, "hot": HOT}
#: The stores each drain keeps its idempotency (and, on, its newest times) in.
STORES = {
    "redis": os.environ.get("ROUTER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "postgres": os.environ.get(
        "ROUTER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
}
#: The target: on over off, distinct subscribers.
TARGET = 0.7
#: How long the drains' newest times stay in the store (seconds): past the phase, no longer.
RETENTION = 600
FIELDS = ("msgs_per_s", "seconds", "cpu_us_per_event")
COMPANY = "MDc6Q29tcGFueTU"


class _Count:
    """Counts the deliveries settled; writes the drain's figures once ``BENCH_DRAIN_EXPECT``
    were, to ``BENCH_DRAIN_OUT``."""

    def __init__(self) -> None:
        self.seen = 0
        self.first = 0.0

    async def __call__(self, event: Event, call_next: Next) -> Outcome:
        outcome = await call_next(event)
        now = time.perf_counter()
        self.seen += 1
        if self.seen == 1:
            self.first = now
        if self.seen == int(os.environ["BENCH_DRAIN_EXPECT"]):
            seconds = now - self.first
            rate = round((self.seen - 1) / seconds) if seconds > 0 else None
            out = Path(os.environ["BENCH_DRAIN_OUT"])
            partial = out.with_suffix(".part")
            partial.write_text(
                json.dumps({"count": self.seen, "seconds": round(seconds, 3), "msgs_per_s": rate})
            )
            partial.rename(out)
        return outcome


async def _nothing(event: Event) -> None:
    return None


def _drain_worker(newest: str | None) -> Worker:
    worker = Worker(APP, prefetch=256, middleware=[_Count()])
    worker.on("*", newest=newest)(_nothing)
    return worker


#: The worker of each mode (``attentive-router worker bench.newest_phase:on``).
off = _drain_worker(None)
on = _drain_worker("subscription")


class _SetUpFailed(Exception):
    """The ingress did not start or the claim was refused (the cause says why)."""


@contextlib.contextmanager
def _claimed(bench: Bench) -> Iterator[None]:
    """The ingress running, the sink unbound and ``*`` claimed for the drains, the claim
    released afterwards if it was made here."""
    try:
        bench.ensure_ingress()
        bench.set_sink(False)
        held = bench.claimed
        if not held:
            bench.claim()
    except Exception as error:
        raise _SetUpFailed from error
    try:
        yield
    finally:
        if not held:
            bench.release()


def measure(bench: Bench) -> dict[str, Any]:
    """Phase j: off and on, per store and shape, round by round (see the module's text)."""
    n = min(bench.config.drain_events, 20_000)
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        with _claimed(bench):
            for k in range(bench.config.repeat):
                order = ["off", "on"] if k % 2 == 0 else ["on", "off"]
                for store, shape in itertools.product(STORES, SHAPES):
                    for mode in order:
                        label = f"j: {mode}, {store}, {shape}, {n:,} events (round {k + 1})"
                        drain = _drainer(bench, n, store, shape, mode)
                        sample = bench.in_round(k, label, drain)
                        runs.setdefault(f"{store}.{shape}.{mode}", []).append(sample)
    except _SetUpFailed as error:
        return {"error": f"set-up failed: {error.__cause__}"}
    merged = {name: bench.merge(samples, FIELDS) for name, samples in runs.items()}
    out: dict[str, Any] = {"events": n, "runs": merged}
    for store in STORES:
        for shape in SHAPES:
            base = f"{store}.{shape}"
            out[f"{base}.ratio"] = _ratio(
                merged[f"{base}.on"].get("msgs_per_s"), merged[f"{base}.off"].get("msgs_per_s")
            )
            out[f"{base}.ratio_by_round"] = [
                _ratio(a.get("msgs_per_s"), b.get("msgs_per_s"))
                for a, b in zip(runs[f"{base}.on"], runs[f"{base}.off"], strict=True)
            ]
            out[f"{base}.cpu_ratio"] = _ratio(
                merged[f"{base}.off"].get("cpu_us_per_event"),
                merged[f"{base}.on"].get("cpu_us_per_event"),
            )
    return out


def _drainer(bench: Bench, n: int, store: str, shape: str, mode: str) -> Callable[[], Any]:
    def drain() -> dict[str, Any]:
        queue = bench.app_queue()
        run_async(purge(queue))
        run_async(_prefill(bench.names.events_exchange, queue, n, SHAPES[shape]), timeout=300)
        out = bench.tmp / f"newest-{uuid.uuid4().hex[:6]}.json"
        worker = bench.start_worker(
            f"bench.newest_phase:{mode}",
            f"newest-{mode}",
            BENCH_DRAIN_EXPECT=str(n),
            BENCH_DRAIN_OUT=str(out),
            WORKER_IDEMPOTENCY_URL=STORES[store],
            WORKER_NEWEST_RETENTION=str(RETENTION),
        )
        try:

            def consuming() -> bool:
                worker.check_alive()
                return b'"worker_consuming"' in worker.log.read_bytes() or out.exists()

            def done() -> bool:
                worker.check_alive()
                return out.exists()

            wait_until("the worker to consume", consuming, timeout=60, interval=0.01)
            started = _ticks(worker)
            wait_until(f"the worker to drain {n:,} events", done, timeout=n / 50 + 60)
            ticks = _ticks(worker) - started
        finally:
            worker.stop()
            run_async(_forget(store), timeout=120)
        run_async(purge(queue))
        result: dict[str, Any] = json.loads(out.read_text())
        result["cpu_us_per_event"] = round(ticks / os.sysconf("SC_CLK_TCK") * 1e6 / n, 1)
        return result

    return drain


async def _forget(store: str) -> None:
    """Delete what a drain left in ``store``: the bench application's handled message ids
    (kept a day otherwise) and its keys' newest times and leases."""
    if store == "redis":
        client = redis.asyncio.Redis.from_url(STORES[store])
        try:
            url = STORES[store]
            for pattern in (RedisStore(url).keys_of(APP), RedisNewestStore(url).keys_of(APP)):
                keys = [key async for key in client.scan_iter(match=pattern)]
                for start in range(0, len(keys), 10_000):
                    await client.delete(*keys[start : start + 10_000])
        finally:
            await client.aclose()
        return
    conn = await asyncpg.connect(STORES[store])
    try:
        for table in (IDEMPOTENCY_TABLE, NEWEST_TABLE):
            with contextlib.suppress(asyncpg.UndefinedTableError):
                await conn.execute(f"DELETE FROM {table} WHERE app = $1", APP)
    finally:
        await conn.close()


async def _prefill(exchange_name: str, queue_name: str, count: int, subscribers: int) -> None:
    """Publish ``count`` subscribes of ``subscribers`` phones, times rising, with the ordering
    headers under a secret new to this drain; wait until the queue holds them."""
    keys = SubjectKeys(secrets.token_bytes(16))
    start = int(time.time() * 1000) - 3_600_000
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(exchange_name)
        key = routing_key("sms.subscribed", COMPANY)
        for first in range(0, count, 500):
            batch = []
            for i in range(first, min(count, first + 500)):
                payload = example_payload("sms.subscribed", COMPANY, timestamp_ms=start + i)
                payload["subscriber"]["phone"] = f"+1555{i % subscribers:07d}"
                body = orjson.dumps(payload)
                headers: dict[str, Any] = {
                    SUBJECT_KEY_HEADER: keys.key("sms.subscribed", COMPANY, payload),
                    EVENT_TIME_HEADER: start + i,
                }
                message = aio_pika.Message(
                    body,
                    headers=headers,
                    message_id=uuid.uuid4().hex,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                batch.append(exchange.publish(message, key))
            await asyncio.gather(*batch)
        deadline = time.monotonic() + 30
        while True:
            queue = await channel.declare_queue(queue_name, passive=True)
            if (queue.declaration_result.message_count or 0) >= count:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"{queue_name} holds fewer than {count}")
            await asyncio.sleep(0.2)


def _ticks(worker: Proc) -> int:
    """The CPU (user and system, clock ticks) the worker's processes have used so far."""
    stats = proc_stats()
    return sum(stats[pid].ticks for pid in worker.pids() if pid in stats)


def targets() -> list[tuple[str, str, str, Callable[[float], bool]]]:
    """(key, label, target text, passes) of phase j's targets: distinct subscribers, each
    store."""
    return [
        (
            f"newest_{store}",
            f"worker drain, newest wins on / off, {store}, {DISTINCT:,} subscribers",
            f">= {TARGET:.2f}x",
            lambda v: v >= TARGET,
        )
        for store in STORES
    ]


def values(results: dict[str, Any]) -> dict[str, float | None]:
    """The values of phase j's targets in ``results`` (None: not measured)."""
    j = results.get("j")
    out: dict[str, float | None] = {}
    for store in STORES:
        ratio = j.get(f"{store}.distinct.ratio") if isinstance(j, dict) else None
        out[f"newest_{store}"] = ratio if isinstance(ratio, int | float) else None
    return out


def rows(j: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(figure, value, target key) of phase j's rows: per store and shape, off and on, their
    ratio (round by round), and the worker's CPU per event."""
    out: list[tuple[str, str, str | None]] = []
    runs = j.get("runs") or {}
    for store in STORES:
        for shape, subscribers in SHAPES.items():
            base = f"{store}.{shape}"
            off, on = (runs.get(f"{base}.{mode}") or {} for mode in ("off", "on"))
            out.append(
                (
                    f"no-op worker drain, {store}, {subscribers:,} subscribers, off / on",
                    f"{_rate(off)} / {_rate(on)} msg/s",
                    None,
                )
            )
            out.append(
                (
                    "  ratio on / off",
                    _x(j.get(f"{base}.ratio"), j.get(f"{base}.ratio_by_round") or []),
                    f"newest_{store}" if shape == "distinct" else None,
                )
            )
            out.append(
                (
                    "  worker CPU per event, off / on",
                    f"{_us(off)} / {_us(on)} µs: {_x(j.get(f'{base}.cpu_ratio'), [])}",
                    None,
                )
            )
    return out


def _rate(node: dict[str, Any]) -> str:
    value = node.get("msgs_per_s")
    return f"{value:,.0f}" if isinstance(value, int | float) else "-"


def _us(node: dict[str, Any]) -> str:
    value = node.get("cpu_us_per_event")
    return f"{value:,.1f}" if isinstance(value, int | float) else "-"


def _x(ratio: Any, rounds: list[float]) -> str:
    """A ratio, and each round's when there were several."""
    parts = [f"{ratio:.2f}x" if isinstance(ratio, int | float) else "-"]
    if len(rounds) > 1:
        parts.append("round by round " + ", ".join(f"{r:.2f}x" for r in rounds))
    return " of the medians; ".join(parts)


def _ratio(numerator: Any, denominator: Any) -> float | None:
    if isinstance(numerator, int | float) and isinstance(denominator, int | float) and denominator:
        return round(numerator / denominator, 3)
    return None


__all__ = ["DISTINCT", "HOT", "TARGET", "measure", "off", "on", "rows", "targets", "values"]
