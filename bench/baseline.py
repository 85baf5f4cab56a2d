"""What the phases that measure this checkout's ingress against an earlier tree of the router
share: that tree, exported with ``git archive`` and imported ahead of this checkout, and the
ingresses driven to saturation in turn, round by round, as medians and ratios to the earlier
tree's."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import ROOT

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bench.run import Bench

#: The figures of one saturation run that are reported as medians.
FIELDS = ("ok_per_s", "p50_ms", "p99_ms", "max_ms")


def baseline_tree(directory: Path, variable: str, added: str) -> tuple[Path, str]:
    """The router of the commit ``variable`` names (by default the commit before the one that
    added the file ``added``), exported into ``directory``; and that commit."""
    ref = os.environ.get(variable, "").strip()
    if not ref:
        adding = _git("log", "--diff-filter=A", "--format=%H", "--", added)
        if not adding:
            raise RuntimeError(f"no commit adds {added}: set {variable}")
        ref = adding.split()[-1] + "^"
    commit = _git("rev-parse", "--short", ref)
    directory.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", commit, "router"], cwd=ROOT, capture_output=True, check=True, timeout=60
    )
    subprocess.run(
        ["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True, timeout=60
    )
    return directory, commit


def baseline_env(tree: Path) -> dict[str, str]:
    """The variables that make an ingress run ``tree``'s router instead of this checkout's."""
    # -P: this checkout's directory is not put first on sys.path; the baseline's tree is
    return {"PYTHONSAFEPATH": "1", "PYTHONPATH": f"{tree}{os.pathsep}{ROOT}"}


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def saturation_rounds(
    bench: Bench, urls: dict[str, str], label: str, *, against: str, ratios: Sequence[str]
) -> dict[str, Any]:
    """Each ingress of ``urls`` (mode: webhook URL) driven to saturation by wrk in turn, the
    order rotating from round to round (``--repeat``); each mode's medians, and the ratio of
    each of ``ratios`` to ``against`` (of the medians, and round by round). ``label``: what
    the progress lines call a run (the mode follows)."""
    modes = list(urls)
    repeat = bench.config.repeat
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for k in range(repeat):
        tag = f" (run {k + 1}/{repeat})" if repeat > 1 else ""
        for mode in modes[k % len(modes) :] + modes[: k % len(modes)]:
            saturate = functools.partial(
                bench.wrk_saturation, urls[mode], warm_up=k == 0, empty=bench.purge_sink
            )
            runs[mode].append(bench.in_round(k, f"{label} {mode}{tag}", saturate))
    out: dict[str, Any] = {mode: bench.merge(runs[mode], FIELDS) for mode in modes}
    reference = out[against].get("ok_per_s")
    for mode in ratios:
        out[f"{mode}_ratio"] = ratio(out[mode].get("ok_per_s"), reference)
        out[f"{mode}_ratio_by_round"] = [
            each
            for a, b in zip(runs[mode], runs[against], strict=True)
            if (each := ratio(a.get("ok_per_s"), b.get("ok_per_s"))) is not None
        ]
    return out


def ratio(numerator: Any, denominator: Any) -> float | None:
    """``numerator / denominator`` to three places, if both are numbers (and one not 0)."""
    if isinstance(numerator, int | float) and isinstance(denominator, int | float) and denominator:
        return round(numerator / denominator, 3)
    return None


def ratio_text(phase: dict[str, Any], mode: str) -> str:
    """``mode``'s ratio of the medians, and round by round when there were several."""
    value, rounds = phase.get(f"{mode}_ratio"), phase.get(f"{mode}_ratio_by_round") or []
    text = f"{value:.2f}x" if isinstance(value, int | float) else "-"
    if len(rounds) > 1:
        text += f" of the medians; round by round {', '.join(f'{r:.2f}x' for r in rounds)}"
    return text


def saturation_text(phase: dict[str, Any], mode: str) -> str:
    """``mode``'s median saturation, as a report's cell."""
    value = (phase.get(mode) or {}).get("ok_per_s")
    return f"{value:,.0f} events/s" if isinstance(value, int | float) else "-"


__all__ = [
    "FIELDS",
    "baseline_env",
    "baseline_tree",
    "ratio",
    "ratio_text",
    "saturation_rounds",
    "saturation_text",
]
