"""Phase m of ``make bench``: what the ordering headers cost the ingress (issue 29, item 1:
the subject key and the event time on every event, the ingress's saturation within 2 % of
before).

Two ingresses of the bench's namespace (``serve --workers N``), each idle while the other is
measured, driven to saturation by wrk in turn, the order alternating from round to round
(``--repeat``):

- **before**: the router as it was before the ordering headers (the tree of
  ``BENCH_ORDERING_BASELINE``, by default the commit before ``router/contract/ordering.py``
  was added, exported with ``git archive`` and imported ahead of this checkout);
- **now**: this checkout, every event with its subject key (the bench's payloads have a phone
  number or an email each) and its event time.

The baseline predates the archive stream (issue 24), whose second write per event is
measured by phase k: both run with ``ROUTER_ARCHIVE=off`` (which the baseline ignores), so the
two differ by the ordering headers and what else changed on the webhook's path since. The
target: now >= 0.98x before.

One round's ratio moves by more than the 2 % asked, so the phase also counts, with callgrind
(when valgrind is installed, and not in a quick run), the instructions one ingress process of
each tree spends per webhook: repeatable to a fraction of a per cent, though without the
broker's share (the two headers add about 90 bytes to each message it stores).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from bench import baseline, callgrind
from router.contract.names import WEBHOOK_PATH

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from bench.run import Bench

#: The ingresses measured, in the first round's order.
MODES = ("before", "now")
#: The target: now's saturation to before's.
TARGET = 0.98
#: Where the baseline comes from, unless given: the commit before the ordering headers.
BASELINE_VARIABLE = "BENCH_ORDERING_BASELINE"
#: The target's key in the report.
KEY = "ordering_to_before"
#: Both trees without the archive stream (the baseline predates it and ignores the variable).
_ARCHIVE_OFF = {"ROUTER_ARCHIVE": "off"}


def measure(bench: Bench) -> dict[str, Any]:
    """Phase m: the two ingresses at saturation, round by round (see the module's text)."""
    bench.set_sink(True)
    bench.purge_sink()
    procs = []
    urls: dict[str, str] = {}
    try:
        try:
            tree, commit = baseline.baseline_tree(
                bench.tmp / "ordering-baseline", BASELINE_VARIABLE, "router/contract/ordering.py"
            )
            for mode, env in (("before", baseline.baseline_env(tree)), ("now", {})):
                print(f"[bench] starting an ingress: {mode}", file=sys.stderr, flush=True)
                proc, port, _ = bench.start_ingress(
                    f"ingress-ordering-{mode}", env={**env, **_ARCHIVE_OFF}
                )
                procs.append(proc)
                urls[mode] = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
        except Exception as error:
            return {"error": f"set-up failed: {error}"}
        label = "m: ingress saturation, ordering headers"
        result = baseline.saturation_rounds(bench, urls, label, against="before", ratios=["now"])
        result["baseline"] = commit
    finally:
        for proc in procs:
            proc.stop()
    result["instructions"] = _instructions(bench, tree)
    return result


def _instructions(bench: Bench, tree: Path) -> dict[str, Any]:
    """Each tree's instructions per webhook in one ingress process (callgrind): the figure
    wall-clock rounds are too noisy to give, without the broker's share."""
    problem = "not counted in a quick run" if bench.config.quick else callgrind.available()
    if problem:
        return {"unavailable": True, "error": problem}
    try:
        before = bench.ingress_instructions(
            "ingress-ordering-before-callgrind", {**baseline.baseline_env(tree), **_ARCHIVE_OFF}
        )
        now = bench.ingress_instructions("ingress-ordering-now-callgrind", dict(_ARCHIVE_OFF))
    except Exception as error:
        return {"error": f"callgrind: {error}"}
    return {"before": before, "now": now, "ratio": baseline.ratio(now, before)}


# -- the report's share ----------------------------------------------------------------------


def targets() -> list[tuple[str, str, str, Callable[[float], bool]]]:
    """(key, label, target text, passes) of phase m's target."""
    label = "ingress saturation, ordering headers / before them"
    return [(KEY, label, f">= {TARGET:.2f}x", lambda value: value >= TARGET)]


def values(results: dict[str, Any]) -> dict[str, float | None]:
    """The value of phase m's target in ``results`` (None: not measured)."""
    phase = results.get("m")
    ratio = phase.get("now_ratio") if isinstance(phase, dict) else None
    return {KEY: ratio if isinstance(ratio, int | float) else None}


def rows(phase: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(figure, value, target key) of phase m's rows."""
    commit = phase.get("baseline", "?")
    return [
        (
            f"ingress saturation, before the ordering headers ({commit})",
            baseline.saturation_text(phase, "before"),
            None,
        ),
        ("ingress saturation, now", baseline.saturation_text(phase, "now"), None),
        ("  now / before", baseline.ratio_text(phase, "now"), KEY),
        ("instructions per webhook, one ingress process, before / now", _counted(phase), None),
    ]


def _counted(phase: dict[str, Any]) -> str:
    counted = phase.get("instructions") or {}
    if "error" in counted:
        return f"not counted: {counted['error']}"
    before, now, ratio = counted.get("before"), counted.get("now"), counted.get("ratio")
    if not isinstance(before, int) or not isinstance(now, int):
        return "-"
    return f"{before:,} / {now:,} ({ratio:.3f}x)"


__all__ = ["MODES", "TARGET", "measure", "rows", "targets", "values"]
