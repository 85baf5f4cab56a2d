"""The parked-event store at incident scale: filtered pages and facet counts over a million
entries. Not a test, and not part of ``make test``.

    python -m bench.parked_store [--entries 1000000] [--apps 20] [--backends sqlite,postgres]
                                 [--runs 200] [--json PATH] [--sqlite-dir DIR]

Each backend is filled directly, through ``add_many`` in batches (the keeper's own path,
without the broker): entries over ``--apps`` applications' DLQs (with a few unrouted and
invalid), the 11 types, 200 companies, a handful of errors and reasons, parked over 30 days,
each a realistic webhook of about 1 KiB. Then, ``--runs`` times each, on a random
application: the first page of 50 of a filtered listing (a type and a piece of the error, as
``dlq list --type sms.subscribed --error ValueError``), the same page 20 pages deep, and the
facets of that application's parked entries. The table gives p50 and p95 per figure and the
issue's targets (a page of 50 in p95 <= 50 ms, facets <= 500 ms); nothing is asserted.

The SQLite file goes to a new directory under ``--sqlite-dir`` (the system's temporary
directory) and the PostgreSQL table (``bench_parked_<uuid>``, in ``ROUTER_BENCH_POSTGRES_URL``
or the local ``test`` database) is dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from pamqp.commands import Basic

from bench.common import percentile
from router.contract import envelope
from router.contract.events import EVENT_TYPES
from router.contract.examples import example_payload
from router.parked.model import ParkedEvent, parked_event
from router.parked.postgres import PostgresParkedStore
from router.parked.query import Query
from router.parked.schema import audit_table, jobs_table, version_table
from router.parked.sqlite import SqliteParkedStore
from router.parked.store import ParkedStore

POSTGRES_URL = os.environ.get(
    "ROUTER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
BATCH = 5000
PAGE = 50
DEEP_PAGES = 20
#: The issue's targets (milliseconds, p95).
PAGE_TARGET_MS = 50.0
FACETS_TARGET_MS = 500.0
NOW = datetime.now(UTC).replace(microsecond=0)
ERRORS = (
    "ValueError: invalid phone number for subscriber {n}",
    "KeyError: 'email'",
    "TimeoutError: CRM did not answer within 10 s",
    "ConnectionError: CRM refused the connection",
    "HTTPError: 429 Too Many Requests (retry after {n} s)",
    "RuntimeError: duplicate subscriber {n}",
)
REASONS = ("exhausted", "exhausted", "exhausted", "rejected", "no-handler")


def apps(count: int) -> list[str]:
    return [f"app-{n:02d}" for n in range(count)]


def entry(n: int, rng: random.Random, names: Sequence[str]) -> ParkedEvent:
    """The ``n``th entry: mostly DLQ dead letters, one in twenty unrouted or invalid."""
    at = NOW - timedelta(seconds=rng.randrange(30 * 86_400), microseconds=rng.randrange(10**6))
    event_type = rng.choice(EVENT_TYPES)
    company = f"company-{int(rng.paretovariate(1.2)) % 200:03d}"
    payload = example_payload(event_type, company, timestamp_ms=n, external_id=n)
    body = orjson.dumps(payload)
    place = "dlq" if n % 20 else rng.choice(("unrouted", "invalid"))
    app = rng.choice(names)
    stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    headers: dict[str, Any] = {"x-attentive-company-id": company}
    if place == "dlq":
        error = rng.choice(ERRORS).format(n=n % 997)
        headers = envelope.dead_lettered(
            headers,
            f"{event_type}.{company}",
            attempt=5,
            error=error,
            traceback=f'Traceback (most recent call last):\n  File "h.py", line 1\n{error}\n',
            reason=rng.choice(REASONS),
            app=app,
            now=stamp,
        )
    elif place == "invalid":
        headers["x-attentive-invalid-reason"] = "no 'company.company_id'"
        headers["x-attentive-received-at"] = int(at.timestamp() * 1000)
    properties = Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id=f"{n:012d}",
        timestamp=at.replace(microsecond=0),
        headers=headers,
    )
    return parked_event(
        body,
        properties,
        place=place,
        app=app if place == "dlq" else None,
        routing_key=f"{event_type}.{company}",
        seen_at=at,
    )


async def fill(store: ParkedStore, count: int, names: Sequence[str]) -> float:
    """Add ``count`` entries in batches; entries per second."""
    rng = random.Random(1)
    started = time.perf_counter()
    for start in range(0, count, BATCH):
        batch = [entry(n, rng, names) for n in range(start, min(count, start + BATCH))]
        await store.add_many(batch)
        done = start + len(batch)
        if done % 100_000 == 0 or done == count:
            rate = done / (time.perf_counter() - started)
            print(f"  {done:>9,} entries, {rate:,.0f}/s", file=sys.stderr, flush=True)
    return count / (time.perf_counter() - started)


async def timed(runs: int, call: Callable[[int], Awaitable[Any]]) -> dict[str, float | None]:
    """p50 and p95 (ms) of ``call(run)`` over ``runs`` runs."""
    took: list[float] = []
    for run in range(runs):
        started = time.perf_counter()
        await call(run)
        took.append((time.perf_counter() - started) * 1000)
    took.sort()
    return {"p50_ms": percentile(took, 50), "p95_ms": percentile(took, 95)}


async def measure(store: ParkedStore, names: Sequence[str], runs: int) -> dict[str, Any]:
    rng = random.Random(2)

    def filtered(run: int) -> Query:
        return Query.build(
            place="dlq", app=rng.choice(names), event=EVENT_TYPES[run % 11], error="valueerror"
        )

    async def deep(run: int) -> None:
        query = Query.build(place="dlq", app=rng.choice(names))
        cursor: str | None = None
        for _ in range(DEEP_PAGES):
            cursor = (await store.page(query, PAGE, cursor)).next_cursor
        # the figure is the last page alone: a cursor deep in the listing
        started = time.perf_counter()
        await store.page(query, PAGE, cursor)
        deep_ms.append((time.perf_counter() - started) * 1000)

    deep_ms: list[float] = []
    figures: dict[str, Any] = {
        "page_filtered": await timed(runs, lambda run: store.page(filtered(run), PAGE)),
        "page_unfiltered": await timed(
            runs, lambda run: store.page(Query.build(place="dlq", app=rng.choice(names)), PAGE)
        ),
        "page_company": await timed(
            runs,
            lambda run: store.page(
                Query.build(place="dlq", app=rng.choice(names), company="company-007"), PAGE
            ),
        ),
        "page_unrouted": await timed(runs, lambda run: store.page(Query.build(place="unrouted"))),
        "facets_app": await timed(
            max(10, runs // 4),
            lambda run: store.facets(Query.build(place="dlq", app=rng.choice(names))),
        ),
        "facets_filtered": await timed(max(10, runs // 4), lambda run: store.facets(filtered(run))),
        "facets_everything": await timed(3, lambda run: store.facets(Query())),
        "count_app": await timed(
            max(10, runs // 4),
            lambda run: store.count(Query.build(place="dlq", app=rng.choice(names))),
        ),
    }
    await timed(max(5, runs // 10), deep)
    deep_ms.sort()
    figures["page_deep_20"] = {"p50_ms": percentile(deep_ms, 50), "p95_ms": percentile(deep_ms, 95)}
    return figures


async def drop_tables(url: str, table: str) -> None:
    """Drop a PostgreSQL store's tables (entries, schema version, jobs, audit log)."""
    conn = await asyncpg.connect(url)
    try:
        drops = (table, version_table(table), jobs_table(table), audit_table(table))
        await conn.execute(f"DROP TABLE IF EXISTS {', '.join(drops)}")
    finally:
        await conn.close()


async def run_backend(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    names = apps(args.apps)
    workdir = Path(tempfile.mkdtemp(prefix="parked-bench-", dir=args.sqlite_dir))
    table = f"bench_parked_{uuid.uuid4().hex[:12]}"
    store: ParkedStore = (
        SqliteParkedStore(workdir / "router.db")
        if kind == "sqlite"
        else PostgresParkedStore(POSTGRES_URL, table=table, timeout=600.0)
    )
    try:
        await store.open()
        await store.upgrade()
        print(f"{kind}: filling {args.entries:,} entries", file=sys.stderr, flush=True)
        rate = await fill(store, args.entries, names)
        if kind == "postgres":  # what autovacuum does after 2% more entries (see the schema)
            conn = await asyncpg.connect(POSTGRES_URL)
            await conn.execute(f"VACUUM ANALYZE {table}")
            await conn.close()
        print(f"{kind}: measuring", file=sys.stderr, flush=True)
        figures = await measure(store, names, args.runs)
        figures["fill_per_s"] = round(rate)
        if kind == "sqlite":
            figures["file_mb"] = round((workdir / "router.db").stat().st_size / 2**20)
        return figures
    finally:
        await store.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if kind == "postgres":
            await drop_tables(POSTGRES_URL, table)


def report(results: dict[str, dict[str, Any]], entries: int) -> None:
    targets = {"page_filtered": PAGE_TARGET_MS, "facets_app": FACETS_TARGET_MS}
    targets["facets_filtered"] = FACETS_TARGET_MS
    print(f"\nparked-event store, {entries:,} entries")
    print(f"{'figure':<20} {'backend':<9} {'p50 ms':>9} {'p95 ms':>9}  target")
    for kind, figures in results.items():
        for name, value in figures.items():
            if not isinstance(value, dict):
                print(f"{name:<20} {kind:<9} {value:>9,}")
                continue
            target = targets.get(name)
            verdict = ""
            if target is not None and value["p95_ms"] is not None:
                verdict = f"p95 <= {target:.0f}: {'PASS' if value['p95_ms'] <= target else 'FAIL'}"
            print(
                f"{name:<20} {kind:<9} {value['p50_ms']:>9.1f} {value['p95_ms']:>9.1f}  {verdict}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.parked_store", description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--apps", type=int, default=20)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--sqlite-dir", default=None)
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    for kind in args.backends.split(","):
        results[kind] = asyncio.run(run_backend(kind, args))
    report(results, args.entries)
    if args.json is not None:
        args.json.write_text(json.dumps({"entries": args.entries, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
