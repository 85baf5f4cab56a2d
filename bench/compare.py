"""Two benchmark runs side by side.

    python -m bench.compare BEFORE.json AFTER.json [--markdown]

Each figure of both runs (the JSON ``make bench`` writes to bench/results/), and how it moved:
after / before. For a before/after table (``--markdown`` prints one for
docs/performance.md), or for a platform team checking a new release, or a setting, on its
own machine. It interprets nothing: a single run moves by ±10-20 % on a shared machine
(docs/performance.md), so read a change of that size as noise unless repeated runs agree.
Figures a run lacks are ``-``; runs from different machines are flagged, since their
figures do not compare.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import figure_at
from router.cli.main import OneLineParser

HIGHER, LOWER = "higher", "lower"


@dataclass(frozen=True, slots=True)
class Figure:
    label: str
    path: tuple[str, ...]
    #: Which way is better: ``HIGHER`` or ``LOWER``.
    better: str
    digits: int = 0


FIGURES = (
    Figure("a bare publisher, msg/s", ("a", "msgs_per_s"), HIGHER),
    Figure("b ingress at saturation, events/s", ("b", "saturation", "ok_per_s"), HIGHER),
    Figure(
        "b ingress, compared process count, events/s",
        ("b", "saturation_compared", "ok_per_s"),
        HIGHER,
    ),
    Figure("b ingress / bare publisher", ("ratios", "ingress_to_bare"), HIGHER, 2),
    Figure("b ingress / Go reference", ("ratios", "ingress_to_go"), HIGHER, 2),
    Figure("b ingress p50 at the fixed rate, ms", ("b", "fixed_rate", "p50_ms"), LOWER, 2),
    Figure("b ingress p99 at the fixed rate, ms", ("b", "fixed_rate", "p99_ms"), LOWER, 2),
    Figure("c end to end p50, ms", ("c", "p50_ms"), LOWER, 2),
    Figure("c end to end p99, ms", ("c", "p99_ms"), LOWER, 2),
    Figure("c events lost", ("c", "lost"), LOWER),
    Figure("d worker drain, msg/s", ("d", "worker", "msgs_per_s"), HIGHER),
    Figure("d bare consumer, msg/s", ("d", "bare", "msgs_per_s"), HIGHER),
    Figure("d worker / bare consumer", ("ratios", "worker_to_bare"), HIGHER, 2),
    Figure("e ingress peak RSS, MB", ("e", "peak_rss_mb"), LOWER, 1),
    Figure("f Go reference at saturation, events/s", ("f", "saturation", "ok_per_s"), HIGHER),
    Figure("f Go p99 at the fixed rate, ms", ("f", "fixed_rate", "p99_ms"), LOWER, 2),
    Figure("g ingress instructions per event", ("g", "ingress_per_event"), LOWER),
    Figure("g bare publisher instructions per message", ("g", "bare_per_message"), LOWER),
)

HEADER = ("figure", "before", "after", "after / before", "better")


def value(results: dict[str, Any], path: Sequence[str]) -> float | None:
    """The figure at ``path``, or None where the run lacks it (not run, failed, skipped)."""
    node = figure_at(results, *path)
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def _text(number: float | None, digits: int) -> str:
    return "-" if number is None else f"{number:,.{digits}f}"


def rows(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """One row per figure either run has: its two values, after / before, which way is better."""
    out = []
    for figure in FIGURES:
        old, new = value(before, figure.path), value(after, figure.path)
        if old is None and new is None:
            continue
        change = f"{new / old:.2f}x" if old and new is not None else "-"
        out.append(
            (
                figure.label,
                _text(old, figure.digits),
                _text(new, figure.digits),
                change,
                figure.better,
            )
        )
    return out


def describe(name: str, results: dict[str, Any]) -> str:
    machine = results.get("machine", {})
    return (
        f"{name}: {results.get('started_at', '?')} ({results.get('mode', '?')} run), "
        f"{machine.get('cores', '?')} cores ({machine.get('cpu', '?')}), RabbitMQ "
        f"{machine.get('rabbitmq', {}).get('version', '?')}, "
        f"{results.get('config', {}).get('workers', '?')} ingress processes"
    )


#: What the bench records of the machine (``machine``): where it differs, so does the machine,
#: and the two runs' figures do not compare.
MACHINE = ("cores", "cpu", "memory", "kernel")
#: How a run measured (``config``): a difference is worth saying, not always a flaw.
SETTINGS = ("workers", "seconds", "repeat", "connections", "rate", "drain_events", "prefetch")


def _changed(old: dict[str, Any], new: dict[str, Any], keys: Iterable[str]) -> list[str]:
    """``"key old -> new"`` for each of ``keys`` whose value differs."""
    return [
        f"{key} {old.get(key)} -> {new.get(key)}" for key in keys if old.get(key) != new.get(key)
    ]


def _broker(machine: dict[str, Any]) -> dict[str, Any]:
    return {"RabbitMQ": machine.get("rabbitmq", {}).get("version")}


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between the runs besides their figures: the machine (then they do not
    compare), how they measured, and the versions of the packages on the hot path (what an
    upgrade check is about)."""
    notes = []
    old_machine, new_machine = before.get("machine", {}), after.get("machine", {})
    moved = _changed(old_machine, new_machine, MACHINE)
    if moved:
        notes.append(f"different machines ({', '.join(moved)}): their figures do not compare")
    notes += _changed(_broker(old_machine), _broker(new_machine), ["RabbitMQ"])
    if before.get("mode") != after.get("mode"):
        notes.append(
            f"a {before.get('mode')} run against a {after.get('mode')} one: a quick run's "
            "figures come from shorter runs"
        )
    options = [
        {f"--{key.replace('_', '-')}": run.get("config", {}).get(key) for key in SETTINGS}
        for run in (before, after)
    ]
    notes += _changed(options[0], options[1], options[0].keys())
    old_packages, new_packages = old_machine.get("packages", {}), new_machine.get("packages", {})
    notes += _changed(old_packages, new_packages, sorted(old_packages.keys() | new_packages.keys()))
    return notes


def render(table: list[tuple[str, str, str, str, str]], markdown: bool) -> list[str]:
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        return lines + ["| " + " | ".join(row) + " |" for row in table]
    widths = [max(len(row[i]) for row in [HEADER, *table]) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(HEADER)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in table:
        cells = [row[0].ljust(widths[0])] + [c.rjust(widths[i + 1]) for i, c in enumerate(row[1:])]
        lines.append("  ".join(cells).rstrip())
    return lines


def _load(path: Path) -> dict[str, Any]:
    try:
        results = json.loads(path.read_text())
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON: {error.msg} (line {error.lineno})") from None
    if not isinstance(results, dict) or "machine" not in results:
        raise ValueError(f"{path} is not a make bench result (no machine recorded)")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m bench.compare",
        description="Two benchmark runs side by side (the JSON make bench writes).",
    )
    parser.add_argument("before", type=Path, help="the earlier run's JSON")
    parser.add_argument("after", type=Path, help="the later run's JSON")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table")
    args = parser.parse_args(argv)
    try:
        before, after = _load(args.before), _load(args.after)
    except ValueError as error:
        parser.error(str(error))
    print(describe("before", before))
    print(describe("after", after))
    print()
    print("\n".join(render(rows(before, after), args.markdown)))
    notes = differences(before, after)
    if notes:
        print("\nnotes:")
        print("\n".join(f"  - {note}" for note in notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
