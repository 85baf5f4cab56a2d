"""Phase h's targets and rows in the bench's report (the figures: :mod:`bench.parked_phase`).

Per backend: the keeper's drain and the replay as ratios to their bare aio-pika client, the
filtered page of 50 (p95) and the facets of one application (p95) over the store's entries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BACKENDS = ("sqlite", "postgres")
LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
#: (key suffix, label, target text, passes, where the value is in a backend's figures).
_TARGETS: tuple[tuple[str, str, str, Callable[[float], bool], tuple[str, ...]], ...] = (
    ("keeper_to_bare", "keeper drain / bare consumer", ">= 0.80x", lambda v: v >= 0.8,
     ("drain", "ratio")),
    ("replay_to_bare", "replay / bare publisher", ">= 0.80x", lambda v: v >= 0.8,
     ("replay", "ratio")),
    ("parked_page_p95_ms", "parked filtered page of 50, p95", "<= 50 ms", lambda v: v <= 50.0,
     ("queries", "page_filtered", "p95_ms")),
    ("parked_facets_p95_ms", "parked facets of an app, p95", "<= 500 ms", lambda v: v <= 500.0,
     ("queries", "facets_app", "p95_ms")),
)  # fmt: skip


def _at(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def targets() -> list[tuple[str, str, str, Callable[[float], bool]]]:
    """(key, label, target text, passes) of every phase h target, per backend."""
    return [
        (f"{key}_{kind}", f"{label} ({LABELS[kind]})", text, passes)
        for kind in BACKENDS
        for key, label, text, passes, _ in _TARGETS
    ]


def values(results: dict[str, Any]) -> dict[str, float | None]:
    """The value of each target of :func:`targets` in ``results`` (None: not measured)."""
    h = results.get("h")
    found: dict[str, float | None] = {}
    for kind in BACKENDS:
        for key, _, _, _, path in _TARGETS:
            value = _at(h, (kind, *path))
            found[f"{key}_{kind}"] = value if isinstance(value, int | float) else None
    return found


def rows(h: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(figure, value, target key) of phase h's rows."""
    out: list[tuple[str, str, str | None]] = []
    n, entries = h.get("dead_letters", 0), h.get("entries", 0)
    for kind in BACKENDS:
        node = h.get(kind)
        if not isinstance(node, dict):
            continue
        label = LABELS[kind]
        drain, replay = node.get("drain") or {}, node.get("replay") or {}
        keeper, bare = drain.get("keeper") or {}, drain.get("bare") or {}
        bare_runs = ", ".join(_n(r) for r in replay.get("bare_runs", []))
        for figure, value, ratio, compared, key in (
            (
                f"keeper draining {n:,} dead letters into {label}",
                f"{_n(keeper.get('msgs_per_s'))} msg/s; bare consumer (prefetch "
                f"{bare.get('prefetch')}, ack each) {_n(bare.get('msgs_per_s'))} msg/s",
                drain.get("ratio"),
                "keeper / bare consumer",
                "keeper_to_bare",
            ),
            (
                f"replay job of {n:,} from {label}, window {replay.get('window')}",
                f"{_n(replay.get('msgs_per_s'))} msg/s; bare publisher "
                f"{_n(replay.get('bare_msgs_per_s'))} msg/s (runs before and after: {bare_runs})",
                replay.get("ratio"),
                "replay / bare publisher",
                "replay_to_bare",
            ),
        ):
            out.append((figure, value, None))
            out.append((f"  ratio {compared} ({label})", _x(ratio), f"{key}_{kind}"))
        queries = node.get("queries") or {}
        for figure, name, judged in (
            ("filtered page of 50", "page_filtered", "parked_page_p95_ms"),
            ("page of 50, 20 pages deep", "page_deep_20", None),
            ("facets of an application", "facets_app", "parked_facets_p95_ms"),
            ("facets of a filtered listing", "facets_filtered", None),
            ("facets of everything", "facets_everything", None),
        ):
            timing = queries.get(name) or {}
            out.append(
                (
                    f"{label}, {entries:,} entries: {figure}",
                    f"p50 {_n(timing.get('p50_ms'), 1)} / p95 {_n(timing.get('p95_ms'), 1)} ms",
                    None if judged is None else f"{judged}_{kind}",
                )
            )
    if "seconds" in h:
        out.append(("phase h wall time", f"{_n(h['seconds'])} s", None))
    return out


def _n(value: Any, digits: int = 0) -> str:
    return f"{value:,.{digits}f}" if isinstance(value, int | float) else "-"


def _x(value: Any) -> str:
    return f"{value:.2f}x" if isinstance(value, int | float) else "-"


__all__ = ["BACKENDS", "rows", "targets", "values"]
