"""Phase h of ``make bench``: parked events at incident scale, SQLite and PostgreSQL.

    python -m bench.parked_phase [--quick] [--dead-letters N] [--parked-entries N]
                                 [--backends sqlite,postgres] [--json PATH]

For each backend, in a namespace of its own (``bench-parked-<uuid>``):

1. **drain**: ``--dead-letters`` (100,000) dead letters of one application sit in its DLQ
   (published there directly, as a worker's dead-lettering leaves them: about 1 KiB, the
   failure headers); the keeper (:class:`router.parked.keeper.Keeper`, jobs off) drains them
   into a fresh store, from its start until every one is stored (it acks after each commit).
   Against it, a bare aio-pika consumer (manual ack, the keeper's prefetch) drains the same
   number, from its connection until the last ack.
2. **replay**: those stored dead letters replayed as a job (:class:`router.parked.runner.JobRunner`,
   the default window) to the application's queue, between two runs of a bare aio-pika
   publisher with confirms publishing the same bodies with the same window
   (:mod:`bench.replay_jobs`); the ratio is to the mean of the two.
3. **queries**: a store of its own filled directly with ``--parked-entries`` (1,000,000)
   entries over 20 applications, then filtered pages of 50 and facets
   (:mod:`bench.parked_store`).

The issue's targets: a drain and a replay at >= 0.8x their bare client, a filtered page of 50
in p95 <= 50 ms, facets <= 500 ms. Everything made is deleted afterwards: the namespace (even
after a broker restart: deletion is retried), the SQLite files, the PostgreSQL tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika

from bench import clients, parked_store, replay_jobs
from bench.common import AMQP_URL, delete_namespace, listening_pids
from router.amqp import topology
from router.amqp.properties import encode
from router.amqp.publisher import ConfirmPublisher
from router.claims.model import ClaimSpec
from router.claims.sqlite import SqliteClaimStore
from router.contract.names import Names
from router.parked.keeper import Keeper
from router.parked.metrics import KeeperMetrics
from router.parked.model import Place
from router.parked.postgres import PostgresParkedStore
from router.parked.query import Query
from router.parked.replay import DEFAULT_WINDOW
from router.parked.settings import KeeperSettings
from router.parked.sqlite import SqliteParkedStore
from router.parked.store import ParkedStore
from router.settings import Settings

APP = replay_jobs.APP
BACKENDS = ("sqlite", "postgres")
#: Publishes of the DLQ's prefill waiting for their confirm at once.
PREFILL_WINDOW = 512
#: The longest a drain, a prefill or a replay may take (seconds per 1,000 messages, plus 60).
SECONDS_PER_1000 = 2.0


@dataclass(frozen=True, slots=True)
class ParkedConfig:
    """How big phase h is: ``dead_letters`` drained and replayed, ``entries`` queried."""

    dead_letters: int = 100_000
    entries: int = 1_000_000
    apps: int = 20
    runs: int = 100
    window: int = DEFAULT_WINDOW
    #: Seconds between runs for the broker to finish with a purged queue (see bench.replay_jobs).
    pause: float = 5.0
    backends: tuple[str, ...] = BACKENDS
    workdir: Path | None = None

    @classmethod
    def quick(cls, **overrides: Any) -> ParkedConfig:
        """A smoke run of seconds: 2,000 dead letters, 20,000 entries, short pauses."""
        sizes: dict[str, Any] = {"dead_letters": 2_000, "entries": 20_000, "runs": 10}
        return cls(**{**sizes, "pause": 0.5, **overrides})

    def bound(self, count: int) -> float:
        return 60 + SECONDS_PER_1000 * count / 1000


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] h: {message}", file=sys.stderr, flush=True)


# -- the broker ----------------------------------------------------------------------------


async def declare(names: Names) -> None:
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        await topology.declare(channel, names)
        await topology.declare_app_queue(channel, names, APP)


async def prefill_dead_letters(names: Names, count: int) -> None:
    """``count`` dead letters into the application's DLQ, confirmed, as a worker leaves them."""
    publisher = await ConfirmPublisher.open(
        AMQP_URL, name="bench parked prefill", confirm_timeout=60.0, timeout=10.0
    )
    try:
        slots = asyncio.Semaphore(PREFILL_WINDOW)
        waiting: set[asyncio.Future[None]] = set()

        def landed(future: asyncio.Future[None]) -> None:
            slots.release()
            waiting.discard(future)

        queue = names.app_dead_letter_queue(APP)
        for n in range(count):
            await slots.acquire()
            entry = replay_jobs.dead_letter(n)
            properties = encode(entry.properties.as_amqp())
            future = publisher.publish_encoded("", queue, entry.body, properties)
            waiting.add(future)
            future.add_done_callback(landed)
        await asyncio.gather(*waiting)
    finally:
        await publisher.close()


async def settle_broker(names: Names, pause: float) -> None:
    """Empty the application's queue and give the broker ``pause`` seconds."""
    await replay_jobs.queue_purge(names)
    await asyncio.sleep(pause)


async def cleanup(names: Names) -> None:
    """Delete the namespace, trying again for a minute (a shared broker may be restarting)."""
    for attempt in range(30):
        try:
            await delete_namespace(names, [APP], ())
            return
        except (OSError, aio_pika.exceptions.AMQPError) as error:
            if attempt == 29:
                raise RuntimeError(f"namespace {names.prefix} not deleted: {error}") from None
            await asyncio.sleep(2)


# -- the stores ----------------------------------------------------------------------------


def database_pids() -> set[int]:
    """The PostgreSQL server the stores are in, when on this machine: its processes' CPU is
    part of the figures, as the broker's is."""
    return listening_pids(urllib.parse.urlsplit(replay_jobs.POSTGRES_URL).port or 5432)


def make_store(kind: str, workdir: Path, table: str) -> ParkedStore:
    if kind == "sqlite":
        return SqliteParkedStore(workdir / f"{table}.db")
    return PostgresParkedStore(replay_jobs.POSTGRES_URL, table=table, timeout=600.0)


# -- the figures ---------------------------------------------------------------------------


async def keeper_drain(
    names: Names, store: ParkedStore, claims: SqliteClaimStore, count: int, bound: float
) -> dict[str, Any]:
    """The keeper (jobs off) from its start until ``count`` dead letters are stored: watched
    through its own count of entries committed (asking the store would put a count of the
    entries so far, every tenth of a second, beside the keeper's writes: with SQLite, in the
    keeper's own process), then checked in the store."""
    settings = Settings.from_env(
        {
            "ROUTER_AMQP_URL": AMQP_URL,
            "ROUTER_NAMESPACE": names.prefix,
            "ROUTER_DATABASE_URL": "sqlite:///unused.db",
        }
    )
    metrics = KeeperMetrics()
    keeper = Keeper(
        settings, KeeperSettings(jobs=False), store=store, claims=claims, metrics=metrics
    )
    stop = asyncio.Event()
    started = time.perf_counter()
    running = asyncio.create_task(keeper.run(stop))
    try:
        async with asyncio.timeout(bound):
            while _stored(metrics) < count:
                if running.done():
                    running.result()
                    raise RuntimeError("the keeper stopped")
                await asyncio.sleep(0.01)
        took = time.perf_counter() - started
        stored = await store.count(Query.build(place=Place.DLQ, app=APP))
        if stored != count:
            raise RuntimeError(f"the keeper counted {count:,} stored, the store holds {stored:,}")
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
    return {"messages": count, "seconds": round(took, 3), "msgs_per_s": round(count / took)}


def _stored(metrics: KeeperMetrics) -> float:
    """The keeper's count of the entries it committed (its counter's ``_total`` sample)."""
    (family,) = metrics.stored.collect()
    return next(sample.value for sample in family.samples if sample.name.endswith("_total"))


async def bare_drain(names: Names, count: int, prefetch: int, bound: float) -> dict[str, Any]:
    """A bare aio-pika consumer, manual ack, from its connection until the last ack."""
    started = time.perf_counter()
    await clients.consume(names.app_dead_letter_queue(APP), count, prefetch, bound)
    took = time.perf_counter() - started
    return {"messages": count, "seconds": round(took, 3), "msgs_per_s": round(count / took)}


async def replay_against_bare(
    names: Names, store: ParkedStore, config: ParkedConfig
) -> dict[str, Any]:
    """The replay job of the stored dead letters, between two bare publisher runs."""
    count, window = config.dead_letters, config.window
    messages = replay_jobs.bare_messages(count, as_replayed=False)
    bare = [await replay_jobs.bare_publisher(names, messages, window)]
    await settle_broker(names, config.pause)
    say(f"replay of {count:,}")
    replayed = await replay_jobs.replay(store, names, count, window)
    await settle_broker(names, config.pause)
    bare.append(await replay_jobs.bare_publisher(names, messages, window))
    await settle_broker(names, config.pause)
    mean = sum(bare) / len(bare)
    return {
        "messages": count,
        "window": window,
        "msgs_per_s": round(replayed["per_second"]),
        "seconds": round(replayed["seconds"], 3),
        "bare_msgs_per_s": round(mean),
        "bare_runs": [round(rate) for rate in bare],
        "ratio": round(replayed["per_second"] / mean, 3),
    }


async def broker_figures(kind: str, config: ParkedConfig, workdir: Path) -> dict[str, Any]:
    """The drain (keeper and bare) and the replay of one backend, in a namespace of its own."""
    names = Names(f"bench-parked-{uuid.uuid4().hex[:8]}")
    table = f"bench_parked_{uuid.uuid4().hex[:12]}"
    count = config.dead_letters
    keeper_settings = KeeperSettings()
    store = make_store(kind, workdir, table)
    claims = SqliteClaimStore(workdir / f"{table}-claims.db")
    try:
        await declare(names)
        await claims.open()
        await claims.grant([ClaimSpec.parse(APP, "*")])
        await store.open()
        await store.upgrade()
        say(f"{kind}: {count:,} dead letters, bare consumer")
        await prefill_dead_letters(names, count)
        bare = await bare_drain(names, count, keeper_settings.prefetch, config.bound(count))
        await asyncio.sleep(config.pause)
        say(f"{kind}: {count:,} dead letters, keeper")
        await prefill_dead_letters(names, count)
        kept = await keeper_drain(names, store, claims, count, config.bound(count))
        await asyncio.sleep(config.pause)
        drain = {
            "keeper": kept,
            "bare": {**bare, "prefetch": keeper_settings.prefetch},
            "ratio": round(kept["msgs_per_s"] / bare["msgs_per_s"], 3),
        }
        say(f"{kind}: replay against the bare publisher")
        await store.open()  # the keeper closed it when it stopped
        replay = await replay_against_bare(names, store, config)
        return {"drain": drain, "replay": replay, "namespace": names.prefix}
    finally:
        await store.close()
        await claims.close()
        if kind == "postgres":
            await parked_store.drop_tables(replay_jobs.POSTGRES_URL, table)
        await cleanup(names)


async def query_figures(kind: str, config: ParkedConfig, workdir: Path) -> dict[str, Any]:
    say(f"{kind}: queries over {config.entries:,} entries")
    args = argparse.Namespace(
        entries=config.entries, apps=config.apps, runs=config.runs, sqlite_dir=str(workdir)
    )
    return await parked_store.run_backend(kind, args)


async def measure(config: ParkedConfig) -> dict[str, Any]:
    """Every figure of phase h: ``{"sqlite": {...}, "postgres": {...}}`` and the sizes."""
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="bench-parked-", dir=config.workdir))
    results: dict[str, Any] = {
        "dead_letters": config.dead_letters,
        "entries": config.entries,
        "apps": config.apps,
        "window": config.window,
    }
    try:
        for kind in config.backends:
            figures = await broker_figures(kind, config, workdir)
            figures["queries"] = await query_figures(kind, config, workdir)
            results[kind] = figures
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.parked_phase", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dead-letters", type=int)
    parser.add_argument("--parked-entries", type=int)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sizes: dict[str, Any] = {"backends": tuple(args.backends.split(","))}
    if args.dead_letters:
        sizes["dead_letters"] = args.dead_letters
    if args.parked_entries:
        sizes["entries"] = args.parked_entries
    config = ParkedConfig.quick(**sizes) if args.quick else ParkedConfig(**sizes)
    results = asyncio.run(measure(config))
    results["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    text = json.dumps(results, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
