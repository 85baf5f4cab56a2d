"""The targets, the one table and the JSON of a benchmark run."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import (
    flow_phase,
    history_report,
    newest_phase,
    ordering_phase,
    parked_report,
    tracing_phase,
)


@dataclass(frozen=True, slots=True)
class Target:
    key: str
    label: str
    text: str
    passes: Callable[[float], bool]


TARGETS = (
    Target("ingress_to_bare", "ingress / bare publisher", ">= 1.00x", lambda v: v >= 1.0),
    Target("ingress_to_go", "ingress / Go reference", ">= 0.60x", lambda v: v >= 0.6),
    Target("ingress_p99_fixed_ms", "ingress p99 at 1,000/s", "<= 5 ms", lambda v: v <= 5.0),
    Target("e2e_p99_ms", "end-to-end p99 at 1,000/s", "<= 20 ms", lambda v: v <= 20.0),
    Target("worker_to_bare", "worker / bare consumer", ">= 0.80x", lambda v: v >= 0.8),
    Target("ingress_peak_rss_mb", "ingress peak RSS", "<= 100 MB", lambda v: v <= 100.0),
    *(Target(*target) for target in parked_report.targets()),
    *(Target(*target) for target in flow_phase.targets()),
    *(Target(*target) for target in newest_phase.targets()),
    *(Target(*target) for target in history_report.targets()),
    *(Target(*target) for target in tracing_phase.targets()),
    *(Target(*target) for target in ordering_phase.targets()),
)


def figure_at(results: Any, *path: str) -> Any:
    """What ``results`` holds at ``path``, or None where any step of it is missing."""
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _ratio(numerator: Any, denominator: Any) -> float | None:
    if isinstance(numerator, int | float) and isinstance(denominator, int | float) and denominator:
        return round(numerator / denominator, 3)
    return None


def by_round(node: Any, field: str) -> dict[int, float]:
    """A repeated figure's value in each round that measured it (a failed run has none)."""
    samples = figure_at(node, "samples")
    return {
        s["round"]: s[field]
        for s in samples or []
        if isinstance(s, dict) and isinstance(s.get("round"), int) and field in s
    }


def round_ratios(numerator: dict[int, float], denominator: dict[int, float]) -> list[float]:
    """The ratio within each round both figures ran in, in round order.

    The runs of one round follow each other within a minute, so a machine that speeds up or
    slows down between rounds (by 40 % within minutes on one 2-core VM here) moves both
    alike; the ratio of the medians can pair a fast round's run with a slow one's."""
    return [
        ratio
        for k in sorted(numerator.keys() & denominator.keys())
        if (ratio := _ratio(numerator[k], denominator[k])) is not None
    ]


def evaluate(results: dict[str, Any]) -> None:
    """Add ``ratios`` and ``targets`` (value, target, PASS / FAIL / n/a) to ``results``."""
    ingress = figure_at(results, "b", "saturation", "ok_per_s")
    values: dict[str, float | None] = {
        "ingress_to_bare": _ratio(ingress, figure_at(results, "a", "msgs_per_s")),
        "ingress_to_go": _ratio(ingress, figure_at(results, "f", "saturation", "ok_per_s")),
        "ingress_p99_fixed_ms": figure_at(results, "b", "fixed_rate", "p99_ms"),
        "e2e_p99_ms": figure_at(results, "c", "p99_ms"),
        "worker_to_bare": _ratio(
            figure_at(results, "d", "worker", "msgs_per_s"),
            figure_at(results, "d", "bare", "msgs_per_s"),
        ),
        "ingress_peak_rss_mb": figure_at(results, "e", "peak_rss_mb"),
        **parked_report.values(results),
        **flow_phase.values(results),
        **newest_phase.values(results),
        **history_report.values(results),
        **tracing_phase.values(results),
        **ordering_phase.values(results),
    }
    results["ratios"] = {
        k: v
        for k, v in values.items()
        if k in ("ingress_to_bare", "ingress_to_go", "worker_to_bare")
    }
    ingress_runs = by_round(figure_at(results, "b", "saturation"), "ok_per_s")
    results["ratios"]["ingress_to_bare_by_round"] = round_ratios(
        ingress_runs, by_round(figure_at(results, "a"), "msgs_per_s")
    )
    results["ratios"]["ingress_to_go_by_round"] = round_ratios(
        ingress_runs, by_round(figure_at(results, "f", "saturation"), "ok_per_s")
    )
    results["ratios"]["worker_to_bare_by_round"] = round_ratios(
        by_round(figure_at(results, "d", "worker"), "msgs_per_s"),
        by_round(figure_at(results, "d", "bare"), "msgs_per_s"),
    )
    results["ratios"]["ingress_to_bare_instructions"] = _ratio(
        figure_at(results, "g", "ingress_per_event"), figure_at(results, "g", "bare_per_message")
    )
    results["targets"] = [
        {
            "key": t.key,
            "label": t.label,
            "value": values[t.key],
            "target": t.text,
            "result": _verdict(t, values[t.key]),
        }
        for t in TARGETS
    ]


def _verdict(target: Target, value: float | None) -> str:
    if value is None:
        return "n/a"
    return "PASS" if target.passes(value) else "FAIL"


def _n(value: Any, digits: int = 0) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:,.{digits}f}"


def _lat(node: Any, keys: tuple[str, ...] = ("p50_ms", "p99_ms")) -> str:
    names = {"p50_ms": "p50", "p99_ms": "p99", "max_ms": "max"}
    return " / ".join(f"{names[k]} {_n(figure_at(node, k), 2)}" for k in keys) + " ms"


def _spread(node: Any, field: str, digits: int = 0) -> str:
    samples = figure_at(node, "samples") or []
    values = [s[field] for s in samples if isinstance(s, dict) and field in s]
    if len(values) < 2:
        return ""
    return f" (median of {len(values)}: {_n(min(values), digits)}..{_n(max(values), digits)})"


def _cpu(node: Any, rate_field: str) -> str:
    """Where the CPU went during a saturation run: cores per program and µs per event."""
    samples = figure_at(node, "samples") or [node]
    cpu = samples[0].get("cpu_cores") if isinstance(samples[0], dict) else None
    rate = samples[0].get(rate_field) if isinstance(samples[0], dict) else None
    if not cpu or not isinstance(rate, int | float) or rate <= 0:
        return ""
    parts = (f"{name} {cores:.2f} ({cores * 1e6 / rate:.0f} µs)" for name, cores in cpu.items())
    return ", ".join(parts)


def _end_to_end(node: Any) -> str:
    """Run c's figure: latencies from due to handler, how many were handled, how many lost."""
    latencies = _lat(node, ("p50_ms", "p99_ms", "max_ms"))
    return f"{latencies}, {_n(node.get('count'))} handled, lost {node.get('lost')}"


def _peak_rss(node: Any) -> str:
    """Run e's figure: the ingress's peak RSS after its events, and where it started."""
    return (
        f"{_n(node['peak_rss_mb'], 1)} MB after {_n(node['answered_200'])} answered 200 "
        f"(start {_n(node.get('start_rss_mb'), 1)} MB, {_n(node.get('seconds'))} s, "
        f"non-2xx {_n(node.get('non_2xx'))})"
    )


def _target(results: dict[str, Any], key: str) -> tuple[str, str]:
    for t in results.get("targets", []):
        if t["key"] == key:
            return t["target"], t["result"]
    return "", ""


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(section, figure, value, target, result) for every figure measured or attempted."""
    out: list[tuple[str, str, str, str, str]] = []
    config = results.get("config", {})

    def add(section: str, figure: str, value: str, key: str | None = None) -> None:
        target, result = _target(results, key) if key else ("", "")
        out.append((section, figure, value, target, result))

    def failed(section: str, figure: str, node: Any, key: str | None = None) -> bool:
        if isinstance(node, dict) and "error" in node:
            why = "skipped" if node.get("unavailable") else "not measured"
            add(section, figure, f"{why}: {node['error']}", key)
            return True
        return False

    def saturation(section: str, figure: str, node: Any) -> None:
        """A wrk saturation row (with the spread of repeated runs), then its CPU row."""
        if node is None or failed(section, figure, node):
            return
        errors = f", sock err {node['socket_errors']}" if "socket_errors" in node else ""
        value = (
            f"{_n(node['ok_per_s'])} ev/s 200, {_lat(node)}, non-2xx {node['non_2xx']}"
            f"{errors}{_spread(node, 'ok_per_s')}"
        )
        add(section, figure, value)
        add("", "  CPU, cores (µs per event)", _cpu(node, "ok_per_s"))

    inflight = config.get("connections", 64)
    if "a" in results:
        a = results["a"]
        figure = f"bare aio-pika publisher, confirms, {inflight} in flight"
        if not failed("a", figure, a):
            value = f"{_n(a['msgs_per_s'])} msg/s, {_lat(a)}{_spread(a, 'msgs_per_s')}"
            add("a", figure + f" [{a.get('loop')}]", value)
            add("", "  CPU, cores (µs per message)", _cpu(a, "msgs_per_s"))
    if "b" in results:
        b = results["b"]
        workers = config.get("workers", 1)
        figure = f"ingress saturation, wrk {inflight} conns"
        saturation("b", f"{figure}, {workers} proc", b.get("saturation"))
        compared = b.get("saturation_compared")
        if isinstance(compared, dict):
            processes = compared.get("processes", "other")
            saturation("b", f"{figure}, {processes} proc (compared)", compared)
        add(
            "",
            "  ratio ingress / bare publisher",
            _ratio_text(results, "ingress_to_bare"),
            "ingress_to_bare",
        )
        add(
            "",
            "  ratio ingress / Go reference",
            _ratio_text(results, "ingress_to_go"),
            "ingress_to_go",
        )
        fixed = b.get("fixed_rate")
        figure = f"ingress at open-loop {config.get('rate', 1000):,}/s (loadgen, 1 body)"
        if fixed is None:
            add("b", figure, "-", "ingress_p99_fixed_ms")
        elif not failed("b", figure, fixed, "ingress_p99_fixed_ms"):
            add("b", f"{figure}, {workers} proc", _fixed_rate(fixed), "ingress_p99_fixed_ms")
        compared = b.get("fixed_rate_compared")
        if isinstance(compared, dict):
            figure = f"{figure}, {compared.get('processes', 'other')} proc (compared)"
            if not failed("b", figure, compared):
                add("b", figure, _fixed_rate(compared))
    if "c" in results:
        c = results["c"]
        figure = f"end-to-end due -> handler at {config.get('rate', 1000):,}/s"
        if not failed("c", figure, c, "e2e_p99_ms"):
            add("c", figure, _end_to_end(c), "e2e_p99_ms")
            http = figure_at(c, "sender", "http")
            if isinstance(http, dict):
                add(
                    "c",
                    "  HTTP answer seen by the sender, from when it was due",
                    _lat(http, ("p50_ms", "p99_ms", "max_ms")),
                )
            cpu = _cpu(c, "events_per_s")
            if cpu:
                add("", "  CPU, cores (µs per event)", cpu)
    if "d" in results:
        d = results["d"]
        n = _n(config.get("drain_events"))
        prefetch = config.get("prefetch", 256)
        for key, figure in (
            ("worker", f"no-op worker draining {n} (prefetch {prefetch})"),
            ("bare", f"bare aio-pika consumer draining {n}, manual ack"),
        ):
            node = d.get(key)
            if node is not None and not failed("d", figure, node):
                value = f"{_n(node['msgs_per_s'])} msg/s{_spread(node, 'msgs_per_s')}"
                add("d", figure + f" [{node.get('loop')}]", value)
        add(
            "",
            "  ratio worker / bare consumer",
            _ratio_text(results, "worker_to_bare"),
            "worker_to_bare",
        )
    if "e" in results:
        e = results["e"]
        figure = f"ingress peak RSS (VmHWM), 1 proc, after {_n(config.get('rss_events'))} events"
        if not failed("e", figure, e, "ingress_peak_rss_mb"):
            add("e", figure, _peak_rss(e), "ingress_peak_rss_mb")
    if "f" in results:
        f = results["f"]
        saturation("f", f"Go reference saturation, wrk {inflight} conns", f.get("saturation"))
        fixed = f.get("fixed_rate")
        figure = f"Go reference at open-loop {config.get('rate', 1000):,}/s (loadgen)"
        if fixed is not None and not failed("f", figure, fixed):
            value = (
                f"{_lat(fixed, ('p50_ms', 'p99_ms', 'max_ms'))}, "
                f"non-2xx {fixed.get('non2xx')}, err {fixed.get('errors')}"
                f"{_spread(fixed, 'p99_ms', 2)}"
            )
            add("f", figure, value)
    if "g" in results:
        g = results["g"]
        figure = "instructions per event (callgrind, user space, 1 proc)"
        if not failed("g", figure, g):
            value = (
                f"ingress {_n(g['ingress_per_event'])} per event, bare aio-pika publisher "
                f"{_n(g['bare_per_message'])} per message ({_n(g['events'])} each, "
                f"{g['in_flight']} in flight)"
            )
            add("g", figure + f" [{g.get('loop')}]", value)
            add(
                "",
                "  ratio ingress / bare publisher",
                _ratio_text(results, "ingress_to_bare_instructions"),
            )
    if "h" in results:
        h = results["h"]
        if not failed("h", "parked events", h):
            for index, (label, text, target_key) in enumerate(parked_report.rows(h)):
                add("h" if index == 0 else "", label, text, target_key)
    if "i" in results:
        i = results["i"]
        if not failed("i", "outage machinery's cost", i):
            for index, (label, text, target_key) in enumerate(flow_phase.rows(i)):
                add("i" if index == 0 else "", label, text, target_key)
    if "j" in results:
        j = results["j"]
        if not failed("j", "newest wins' cost", j):
            for index, (label, text, target_key) in enumerate(newest_phase.rows(j)):
                add("j" if index == 0 else "", label, text, target_key)
    if "k" in results:
        k = results["k"]
        if not failed("k", "the archive's cost", k):
            for index, (label, text, target_key) in enumerate(history_report.rows(k)):
                add("k" if index == 0 else "", label, text, target_key)
    if "l" in results:
        phase = results["l"]
        if not failed("l", "tracing's cost", phase):
            for index, (label, text, target_key) in enumerate(tracing_phase.rows(phase)):
                add("l" if index == 0 else "", label, text, target_key)
    if "m" in results:
        phase = results["m"]
        if not failed("m", "the ordering headers' cost", phase):
            for index, (label, text, target_key) in enumerate(ordering_phase.rows(phase)):
                add("m" if index == 0 else "", label, text, target_key)
    return out


def _fixed_rate(node: dict[str, Any]) -> str:
    """An open-loop fixed-rate figure: latency from each request's due moment, and failures."""
    return (
        f"{_lat(node, ('p50_ms', 'p99_ms', 'max_ms'))}, "
        f"{_n(node.get('achieved_rps'))}/s, non-2xx {node.get('non2xx')}, "
        f"err {node.get('errors')}{_spread(node, 'p99_ms', 2)}"
    )


def _ratio_text(results: dict[str, Any], key: str) -> str:
    value = figure_at(results, "ratios", key)
    text = f"{value:.2f}x" if isinstance(value, int | float) else "-"
    rounds = figure_at(results, "ratios", key + "_by_round") or []
    if len(rounds) > 1:
        text += f" of the medians; round by round {', '.join(f'{r:.2f}x' for r in rounds)}"
    return text


def render(results: dict[str, Any]) -> str:
    machine = results.get("machine", {})
    uv = machine.get("uvloop", {})
    lines = [
        f"attentive-router benchmark, {results.get('started_at')} ({results.get('mode')} run)",
        (
            f"machine: {machine.get('cores')} cores ({machine.get('cpu')}), "
            f"RabbitMQ {machine.get('rabbitmq', {}).get('version', '?')}, "
            f"Python {machine.get('python')}, uvloop: ingress {uv.get('ingress', '?')}, "
            f"worker {uv.get('worker', '?')}, bench clients {uv.get('clients', '?')}; "
            f"background CPU {machine.get('background_cpu_percent', '?')}% before, "
            f"load avg {machine.get('loadavg_before', '?')}"
        ),
        f"payloads: {results.get('payload', {}).get('description', '')}",
        "",
    ]
    table = rows(results)
    header = ("", "figure", "value", "target", "result")
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(5)]
    for row in [header, *table]:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if row is header:
            lines.append("  ".join("-" * w for w in widths))
    notes = results.get("notes", [])
    if notes:
        lines += ["", "notes:"] + [f"  - {note}" for note in notes]
    return "\n".join(lines)


def failures(results: dict[str, Any]) -> list[str]:
    """What the run was asked to measure and could not: each figure that failed, or some of
    whose repeated runs failed, as ``"b fixed_rate: why"``. A figure whose tool this machine
    lacks (``unavailable``: the Go anchors, valgrind) is skipped, not failed; a missed target
    is a figure, not a failure."""
    found: list[str] = []

    def visit(path: str, node: Any) -> None:
        if not isinstance(node, dict):
            return
        if "error" in node:
            if not node.get("unavailable"):
                found.append(f"{path}: {node['error']}")
            return
        if node.get("failed_runs"):
            runs = node["failed_runs"]
            found.append(f"{path}: {len(runs)} of its runs failed, first: {runs[0]}")
        for key, child in node.items():
            visit(f"{path} {key}", child)

    for phase in "abcdefghijkl":
        visit(phase, results.get(phase))
    return found


def write(results: dict[str, Any], directory: Path, stamp: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, default=str)
    paths = [directory / f"{stamp}.json", directory / "latest.json"]
    for path in paths:
        path.write_text(text + "\n")
    return paths
