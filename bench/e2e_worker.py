"""The workers the benchmark runs with ``attentive-router worker`` (the consumers runtime).

``bench.e2e_worker:worker`` records, for every event the open-loop sender stamped, the
time from ``bench_sent_at`` (the wall-clock moment the sender's request was due) to the
moment its handler is called, one ``<sent_at> <latency_ms>`` line per event appended to
``$BENCH_E2E_OUT``. Warm-up events (``bench_warmup``) are not recorded.

``bench.e2e_worker:drain_worker`` does nothing per event but count: when the
``$BENCH_DRAIN_EXPECT``-th event reaches its handler it writes ``{"count", "seconds",
"msgs_per_s"}`` (from the first handler call to that one) to ``$BENCH_DRAIN_OUT``.

Both are the application ``bench`` and claim ``*``; the bench gives them a fresh namespace.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TextIO

from bench.common import APP, SENT_AT, WARMUP
from consumers import Event, Worker

worker = Worker(APP, prefetch=256)
_latencies: list[TextIO] = []


def _open(path: Path) -> TextIO:
    return path.open("a", buffering=1)  # kept open while the worker runs


async def _open_latency_file() -> None:
    _latencies.append(_open(Path(os.environ["BENCH_E2E_OUT"])))


async def _close_latency_file() -> None:
    while _latencies:
        _latencies.pop().close()


worker.on_startup.append(_open_latency_file)
worker.on_shutdown.append(_close_latency_file)


@worker.on("*")
async def record_latency(event: Event) -> None:
    now = time.time()
    sent = event.payload.get(SENT_AT)
    if isinstance(sent, int | float) and not event.payload.get(WARMUP) and _latencies:
        _latencies[0].write(f"{sent:.6f} {(now - sent) * 1000:.3f}\n")


drain_worker = Worker(APP, prefetch=256)


class _Drain:
    expect = 0
    seen = 0
    first = 0.0
    out: Path | None = None


async def _read_drain_settings() -> None:
    _Drain.expect = int(os.environ["BENCH_DRAIN_EXPECT"])
    _Drain.out = Path(os.environ["BENCH_DRAIN_OUT"])


drain_worker.on_startup.append(_read_drain_settings)


@drain_worker.on("*")
async def count_event(event: Event) -> None:
    now = time.perf_counter()
    _Drain.seen += 1
    if _Drain.seen == 1:
        _Drain.first = now
    if _Drain.seen == _Drain.expect and _Drain.out is not None:
        seconds = now - _Drain.first
        result = {
            "count": _Drain.seen,
            "seconds": round(seconds, 3),
            "msgs_per_s": round((_Drain.seen - 1) / seconds) if seconds > 0 else None,
        }
        partial = _Drain.out.with_suffix(".part")
        partial.write_text(json.dumps(result))
        partial.rename(_Drain.out)
