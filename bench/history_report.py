"""Phase k's share of the report (:mod:`bench.history_phase`): its targets, their values in a
run's results, and its rows of the table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.common import ratio_text

#: Targets: saturation on / off; p99 at 1,000/s on / off (the same 0.9x, as latency); the
#: large archive's search (seconds); its growth from the small archive's; a backfill / the
#: bare publisher.
TARGET_SATURATION = 0.9
TARGET_P99 = round(1 / TARGET_SATURATION, 2)
TARGET_SEARCH_SECONDS = 1.0
TARGET_SEARCH_GROWTH = 1.5
TARGET_BACKFILL = 0.8


def targets() -> list[tuple[str, str, str, Callable[[float], bool]]]:
    """(key, label, target text, passes) of phase k's targets."""
    return [
        (
            "archive_saturation",
            "ingress saturation, archive on / off",
            f">= {TARGET_SATURATION:.2f}x",
            lambda v: v >= TARGET_SATURATION,
        ),
        (
            "archive_p99",
            "ingress p99 at 1,000/s, archive on / off",
            f"<= {TARGET_P99:.2f}x",
            lambda v: v <= TARGET_P99,
        ),
        (
            "archive_search_s",
            "archive search, the last window of the large archive",
            f"<= {TARGET_SEARCH_SECONDS:.0f} s",
            lambda v: v <= TARGET_SEARCH_SECONDS,
        ),
        (
            "archive_search_growth",
            "archive search, large / small archive",
            f"<= {TARGET_SEARCH_GROWTH:.2f}x",
            lambda v: v <= TARGET_SEARCH_GROWTH,
        ),
        (
            "archive_backfill",
            "backfill / bare publisher",
            f">= {TARGET_BACKFILL:.2f}x",
            lambda v: v >= TARGET_BACKFILL,
        ),
    ]


def values(results: dict[str, Any]) -> dict[str, float | None]:
    """The values of phase k's targets in ``results`` (None: not measured)."""
    k = results.get("k")
    k = k if isinstance(k, dict) else {}
    ingress, archive = k.get("ingress") or {}, k.get("archive") or {}
    found = {
        "archive_saturation": ingress.get("saturation_ratio"),
        "archive_p99": ingress.get("fixed_rate_ratio"),
        "archive_search_s": ((archive.get("large") or {}).get("search") or {})
        .get("all", {})
        .get("seconds"),
        "archive_search_growth": archive.get("search_growth"),
        "archive_backfill": (archive.get("backfill") or {}).get("ratio"),
    }
    return {key: v if isinstance(v, int | float) else None for key, v in found.items()}


def rows(k: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(figure, value, target key) of phase k's rows."""
    archive = k.get("archive") or {}
    backfilled = [] if "error" in archive else _backfill_rows(archive.get("backfill") or {})
    return [*_ingress_rows(k.get("ingress") or {}), *_archive_rows(archive), *backfilled]


def _ingress_rows(ingress: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    if "error" in ingress:
        return [("ingress, archive on / off", f"not measured: {ingress['error']}", None)]
    on, off = (ingress.get(mode) or {} for mode in ("on", "off"))
    out: list[tuple[str, str, str | None]] = []
    for kind, figure, field, unit in (
        ("saturation", "ingress saturation (wrk), archive on / off", "ok_per_s", "ev/s 200"),
        (
            "fixed_rate",
            "ingress p99 at open-loop 1,000/s (loadgen), archive on / off",
            "p99_ms",
            "ms",
        ),
    ):
        a, b = on.get(kind) or {}, off.get(kind) or {}
        problem = a.get("error") or b.get("error")
        if problem:
            why = "skipped" if a.get("unavailable") or b.get("unavailable") else "not measured"
            out.append((figure, f"{why}: {problem}", None))
            continue
        digits = 2 if unit == "ms" else 0
        out.append(
            (figure, f"{_n(a.get(field), digits)} / {_n(b.get(field), digits)} {unit}", None)
        )
        key = "archive_saturation" if kind == "saturation" else "archive_p99"
        text = ratio_text(ingress.get(f"{kind}_ratio"), ingress.get(f"{kind}_ratio_by_round") or [])
        out.append(("  ratio on / off", text, key))
    return out


def _archive_rows(archive: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    if "error" in archive:
        return [("archive: disk and search", f"not measured: {archive['error']}", None)]
    small, large = archive.get("small") or {}, archive.get("large") or {}
    fills = ", ".join(
        f"{_n(size['fill'].get('msgs_per_s'))} msg/s to {_n(size['events'])}"
        for size in (small, large)
        if size
    )
    out: list[tuple[str, str, str | None]] = [
        (
            f"archive filled, bare confirmed publisher, {archive.get('window')} in flight",
            fills,
            None,
        )
    ]
    disk = archive.get("disk") or {}
    if "error" in disk:
        out.append(("archive on disk, per million events", f"skipped: {disk['error']}", None))
    else:
        held = (large.get("disk") or {}).get("total_bytes")
        out.append(
            (
                "archive on disk, per million events",
                f"{_n(disk.get('mb_per_million'))} MB ({_n(held / 1e6 if held else None)} MB for "
                f"{_n(large.get('events'))}; {_n(disk.get('added_mb_per_million'))} MB per million "
                f"added from {_n(small.get('events'))}; bodies {_n(archive.get('body_bytes'))} B)",
                None,
            )
        )
    window = _n((archive.get("sizes") or {}).get("window"))
    for size, key in ((small, None), (large, "archive_search_s")):
        search = size.get("search") or {}
        every, filtered = search.get("all") or {}, search.get("filtered") or {}
        out.append(
            (
                f"search, the last {window} of {_n(size.get('events'))}",
                f"{_n(every.get('seconds'), 3)} s (max {_n(every.get('max_seconds'), 3)}, read "
                f"{_n(every.get('scanned'))}); filtered {_n(filtered.get('seconds'), 3)} s "
                f"({_n(filtered.get('found'))} found)",
                key,
            )
        )
        for kind, what in (("bare", "bare aio-pika stream consumer"), ("reader", "stream reader")):
            bare = search.get(kind) or {}
            out.append(
                (
                    f"  the same offsets, {what}",
                    f"{_n(bare.get('seconds'), 3)} s (max {_n(bare.get('max_seconds'), 3)})",
                    None,
                )
            )
    out.append(
        (
            "  ratio large / small",
            ratio_text(archive.get("search_growth"), []),
            "archive_search_growth",
        )
    )
    return out


def _backfill_rows(backfilled: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    figure = "backfill / bare publisher, confirmed"
    if "error" in backfilled:
        why = "skipped" if backfilled.get("unavailable") else "not measured"
        return [(figure, f"{why}: {backfilled['error']}", "archive_backfill")]
    rates = (
        f"{_n(backfilled.get('msgs_per_s'))} / {_n(backfilled.get('bare_msgs_per_s'))} msg/s "
        f"({_n(backfilled.get('messages'))} events, window {backfilled.get('window')}; "
        f"planned in {_n(backfilled.get('planned_seconds'), 1)} s)"
    )
    return [
        (figure, rates, None),
        ("  ratio backfill / bare", ratio_text(backfilled.get("ratio"), []), "archive_backfill"),
    ]


def _n(value: Any, digits: int = 0) -> str:
    return f"{value:,.{digits}f}" if isinstance(value, int | float) else "-"


__all__ = ["TARGET_SATURATION", "rows", "targets", "values"]
