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
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from bench import baseline
from router.contract.names import WEBHOOK_PATH

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.run import Bench

#: The ingresses measured, in the first round's order.
MODES = ("before", "now")
#: The target: now's saturation to before's.
TARGET = 0.98
#: Where the baseline comes from, unless given: the commit before the ordering headers.
BASELINE_VARIABLE = "BENCH_ORDERING_BASELINE"
#: The target's key in the report.
KEY = "ordering_to_before"


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
                    f"ingress-ordering-{mode}", env={**env, "ROUTER_ARCHIVE": "off"}
                )
                procs.append(proc)
                urls[mode] = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
        except Exception as error:
            return {"error": f"set-up failed: {error}"}
        label = "m: ingress saturation, ordering headers"
        result = baseline.saturation_rounds(bench, urls, label, against="before", ratios=["now"])
        result["baseline"] = commit
        return result
    finally:
        for proc in procs:
            proc.stop()


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
    ]


__all__ = ["MODES", "TARGET", "measure", "rows", "targets", "values"]
