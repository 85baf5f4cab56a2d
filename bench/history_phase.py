"""Phase k of ``make bench``: what the archive costs (issue 24, item 4), in one run.

1. **The ingress, archive on against off**: two ingresses of the bench's namespace, started
   as the other ingress phases start theirs (``serve --workers N``), one with
   ``ROUTER_ARCHIVE=on`` (each event published to the front exchange, confirmed by the stream
   and by the sink queue behind the events exchange), one with ``ROUTER_ARCHIVE=off`` (to the
   events exchange alone). In each round (``--repeat``) both are driven to saturation by wrk,
   then at an open-loop 1,000 events/s by the anchors' load generator, alternating which goes
   first from round to round. The targets: saturation on >= 0.9x off, and p99 at 1,000/s on
   no more than off / 0.9.
2. **Disk**: the stream's segment and index files on the broker's disk
   (:func:`bench.history_archive.stream_disk`) once it holds the small and the large archive,
   per million events (the bytes divided by the events held, times a million: a stream's
   bytes grow by the same amount per event, whatever it holds already, as the two sizes show).
3. **Search**: a stream of its own filled by a bare confirmed publisher to
   :attr:`ArchiveSizes.small` (200,000) events, then grown to :attr:`ArchiveSizes.large`
   (2,000,000); at each size,
   the last :attr:`ArchiveSizes.window` (10,000) events searched (:func:`search_archive`,
   from a timestamp taken just before they were written), every event of the window and a
   filtered search, each a few times. The targets: the large archive's in <= 1 s, and <= 1.5x
   the small one's.
4. **Backfill**: the small archive (200,000 events) backfilled to one application as a job,
   against a bare publisher publishing the same messages to the same queue, before and after
   it (:mod:`bench.history_backfill`; target >= 0.8x).

``--quick`` shrinks the archive to 2,000 and 20,000 events, a window of 500, shorter pauses.
Everything the phase makes is deleted: its two ingresses stop, the bench's namespace goes with
the rest of the run, the archive's namespace (``bench-history-<uuid>``: its stream, the
application's queue, their exchanges) at the end of the phase.
"""

from __future__ import annotations

import asyncio
import functools
import math
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika

from bench import history_archive, history_backfill
from bench.common import AMQP_URL, Proc, delete_namespace, ratio, run_async
from bench.loads import anchors_built, build_anchors
from router.amqp.publisher import ConfirmPublisher
from router.contract.names import WEBHOOK_PATH, Names

if TYPE_CHECKING:
    from bench.run import Bench

#: The ingress's environment in each mode.
MODES: dict[str, dict[str, str]] = {
    "on": {"ROUTER_ARCHIVE": "on"},
    "off": {"ROUTER_ARCHIVE": "off"},
}
#: The figures of a saturation run and of a fixed-rate run reported as medians.
SATURATION_FIELDS = ("ok_per_s", "p50_ms", "p99_ms", "max_ms")
FIXED_FIELDS = ("p50_ms", "p99_ms", "max_ms", "achieved_rps")


@dataclass(frozen=True, slots=True)
class ArchiveSizes:
    """How big the archive is (the small one is also what is backfilled), the window
    searched, how many times, and the pause after each backfill run."""

    small: int = 200_000
    large: int = 2_000_000
    window: int = 10_000
    searches: int = 5
    pause: float = 5.0

    @classmethod
    def quick(cls) -> ArchiveSizes:
        """A smoke run of seconds."""
        return cls(small=2_000, large=20_000, window=500, searches=2, pause=0.5)

    def bound(self) -> float:
        """The longest the archive's figures may take (seconds): 1 ms an event, plus 5 min."""
        return 300 + self.large / 1000


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] k: {message}", file=sys.stderr, flush=True)


def measure(bench: Bench) -> dict[str, Any]:
    """Phase k: the ingress on against off, then the archive's disk, search and backfill (see
    the module's text)."""
    sizes = ArchiveSizes.quick() if bench.config.quick else ArchiveSizes()
    results: dict[str, Any] = {"ingress": ingress_on_off(bench)}
    results["archive"] = bench.attempt(
        f"k: the archive at {sizes.small:,} and {sizes.large:,} events",
        lambda: run_async(archive_figures(sizes, bench.tmp), timeout=sizes.bound()),
    )
    return results


# -- the ingress, archive on and off ---------------------------------------------------------


def ingress_on_off(bench: Bench) -> dict[str, Any]:
    """Saturation and the fixed rate of an ingress with the archive on and one with it off,
    round by round, each idle while the other is measured."""
    if bench.anchors_problem is None and not anchors_built():
        bench.anchors_problem = build_anchors(bench.tmp / "anchors-build.log")
    bench.set_sink(True)
    bench.purge_sink()
    ingresses: dict[str, Proc] = {}
    urls: dict[str, str] = {}
    try:
        try:
            for mode, env in MODES.items():
                say(f"starting an ingress with the archive {mode}")
                proc, port, _ = bench.start_ingress(f"ingress-archive-{mode}", env=env)
                ingresses[mode], urls[mode] = proc, f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
        except Exception as error:
            return {"error": f"set-up failed: {error}"}
        return _rounds(bench, urls)
    finally:
        for proc in ingresses.values():
            proc.stop()


def _rounds(bench: Bench, urls: dict[str, str]) -> dict[str, Any]:
    repeat = bench.config.repeat
    runs: dict[str, list[dict[str, Any]]] = {
        f"{mode}.{kind}": [] for mode in MODES for kind in ("saturation", "fixed_rate")
    }
    for k in range(repeat):
        tag = f" (run {k + 1}/{repeat})" if repeat > 1 else ""
        order = ["on", "off"] if k % 2 == 0 else ["off", "on"]
        for mode in order:
            saturate = functools.partial(
                bench.wrk_saturation, urls[mode], warm_up=k == 0, empty=bench.purge_sink
            )
            label = f"k: ingress saturation, archive {mode}{tag}"
            runs[f"{mode}.saturation"].append(bench.in_round(k, label, saturate))
        for mode in order:
            label = f"k: ingress at {bench.config.rate:,}/s, archive {mode}{tag}"
            fixed = functools.partial(bench.fixed_rate, urls[mode])
            runs[f"{mode}.fixed_rate"].append(bench.in_round(k, label, fixed))
    out: dict[str, Any] = {}
    for mode in MODES:
        out[mode] = {
            "saturation": bench.merge(runs[f"{mode}.saturation"], SATURATION_FIELDS),
            "fixed_rate": bench.merge(runs[f"{mode}.fixed_rate"], FIXED_FIELDS),
        }
    for kind, field in (("saturation", "ok_per_s"), ("fixed_rate", "p99_ms")):
        on, off = (out[mode][kind] for mode in ("on", "off"))
        out[f"{kind}_ratio"] = ratio(on.get(field), off.get(field))
        out[f"{kind}_ratio_by_round"] = [
            value
            for a, b in zip(runs[f"on.{kind}"], runs[f"off.{kind}"], strict=True)
            if (value := ratio(a.get(field), b.get(field))) is not None
        ]
    return out


# -- the archive's disk and search -----------------------------------------------------------


async def archive_figures(sizes: ArchiveSizes, workdir: Path) -> dict[str, Any]:
    """Fill a stream of its own to the small archive, then the large one; at each, its bytes on
    disk and the search of its last window; the small one backfilled. The namespace is deleted
    afterwards."""
    names = Names(f"bench-history-{uuid.uuid4().hex[:8]}")
    messages = history_archive.ArchivedMessages()
    out: dict[str, Any] = {
        "namespace": names.prefix,
        "sizes": asdict(sizes),
        "body_bytes": round(messages.body_bytes),
        "window": history_archive.WINDOW,
    }
    try:
        await history_archive.declare(names)
        first = datetime.fromtimestamp(math.floor(time.time()), UTC)  # (before the first chunk)
        held = 0
        for label, total in (("small", sizes.small), ("large", sizes.large)):
            say(f"filling the archive from {held:,} to {total:,} events")
            publisher = await ConfirmPublisher.open(
                AMQP_URL, name="bench history fill", confirm_timeout=120.0, timeout=10.0
            )
            try:
                since, filled = await history_archive.fill_to(
                    publisher, names, messages, held, total, sizes.window
                )
            finally:
                await publisher.close()
            held = total
            disk = history_archive.stream_disk(names.archive_stream)
            say(f"searching the last {sizes.window:,} of {total:,} events")
            searched = await history_archive.time_searches(
                names, since, total, sizes.window, sizes.searches
            )
            out[label] = {
                "events": total,
                "fill": filled,
                "disk": disk.as_dict() if disk is not None else None,
                "search": searched,
            }
            if label == "small":
                out["backfill"] = await _backfill(names, messages, first, sizes, workdir)
    finally:
        await _delete(names)
    out["disk"] = _per_million(out["small"], out["large"])
    out["search_growth"] = ratio(
        out["large"]["search"]["all"]["seconds"], out["small"]["search"]["all"]["seconds"]
    )
    return out


def _per_million(small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """Bytes on disk per million events: the large archive's bytes over its events, and
    what the events between the two sizes added (the same when a stream grows linearly)."""
    if small["disk"] is None or large["disk"] is None:
        return {
            "error": f"the stream's files are not readable under {history_archive.MNESIA_BASE} "
            "(a broker elsewhere, or another user's files): set RABBITMQ_MNESIA_BASE",
            "unavailable": True,
        }
    total = large["disk"]["total_bytes"]
    added = total - small["disk"]["total_bytes"]
    return {
        "bytes_per_event": round(total / large["events"], 1),
        "mb_per_million": round(total / large["events"], 1),  # (bytes per event = MB per 10^6)
        "added_mb_per_million": round(added / (large["events"] - small["events"]), 1),
        "allocated_mb_per_million": round(large["disk"]["allocated_bytes"] / large["events"], 1),
    }


async def _backfill(
    names: Names,
    messages: history_archive.ArchivedMessages,
    since: datetime,
    sizes: ArchiveSizes,
    workdir: Path,
) -> dict[str, Any]:
    """The small archive backfilled (:mod:`bench.history_backfill`); a failure is reported as
    the figure, and the large archive is measured all the same."""
    say(f"backfilling {sizes.small:,} events, against the bare publisher")
    try:
        return await history_backfill.measure(
            names, messages, since, sizes.small, workdir=workdir, pause=sizes.pause
        )
    except Exception as error:
        return {"error": str(error).strip().splitlines()[0][:300] or repr(error)}


async def _delete(names: Names) -> None:
    """Delete the namespace, trying again for a minute (a busy broker)."""
    for attempt in range(30):
        try:
            await delete_namespace(names, [history_backfill.APP], ())
            return
        except (OSError, aio_pika.exceptions.AMQPError) as error:
            if attempt == 29:
                raise RuntimeError(f"namespace {names.prefix} not deleted: {error}") from None
            await asyncio.sleep(2)


__all__ = ["ArchiveSizes", "archive_figures", "ingress_on_off", "measure"]
