"""Phase i of ``make bench``: what the outage machinery costs a worker's drain when nothing
triggers it (the issue's target: >= 0.95x the plain worker).

In each round (``--repeat``), the no-op drain worker of phase d drains ``--drain-events`` from
a pre-filled application queue twice, as :meth:`bench.run.Bench.drain_worker` does:

- **plain**: the circuit breaker off (``WORKER_BREAKER=off``) and no rate limit, the worker
  as it was before either existed;
- **flow**: the breaker on (its default) and a rate limit of :data:`NEVER_WAITS` handler
  starts a second, far above any drain, so every handler start goes through the limiter
  without ever waiting for it.

The two alternate which goes first from round to round, so a broker getting slower or
faster over the phase weighs on both alike. The figure is the ratio of their medians, with
the ratio of each round beside it; beside it too, the worker process's CPU per event (from
its "worker_consuming" log line to its last handler), which other load on the machine
disturbs far less than the wall-clock rate.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import TYPE_CHECKING, Any

from bench.common import Proc, proc_stats, wait_until

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.run import Bench

#: Handler starts a second of the flow run's rate limit: far above any drain.
NEVER_WAITS = 1_000_000
#: The figures of one drain that are reported as medians.
FIELDS = ("msgs_per_s", "seconds", "cpu_us_per_event")
#: The target: the flow run's drain to the plain run's.
TARGET = 0.95
#: The worker both runs use: phase d's no-op drain worker.
TARGET_WORKER = "bench.e2e_worker:drain_worker"
#: The environment of each run.
ENVIRONMENTS: dict[str, dict[str, str]] = {
    "plain": {"WORKER_BREAKER": "off"},
    "flow": {"WORKER_BREAKER": "on", "WORKER_RATE_LIMIT": str(NEVER_WAITS)},
}


def measure(bench: Bench) -> dict[str, Any]:
    """Phase i: the plain and the flow drain, round by round (see the module's text)."""
    try:
        bench.ensure_ingress()
        bench.set_sink(False)
        claimed_here = not bench.claimed
        if claimed_here:
            bench.claim()
    except Exception as error:
        return {"error": f"set-up failed: {error}"}
    n = bench.config.drain_events
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "flow": []}
    try:
        for k in range(bench.config.repeat):
            tag = f" (run {k + 1}/{bench.config.repeat})" if bench.config.repeat > 1 else ""
            order = ["plain", "flow"] if k % 2 == 0 else ["flow", "plain"]
            for name in order:
                label = f"i: {name} worker draining {n:,}{tag}"
                drain = _drainer(bench, ENVIRONMENTS[name])
                runs[name].append(bench.in_round(k, label, drain))
    finally:
        if claimed_here:
            bench.release()
    plain, flow = (bench.merge(runs[name], FIELDS) for name in ("plain", "flow"))
    return {
        "plain": plain,
        "flow": flow,
        "ratio": _ratio(flow.get("msgs_per_s"), plain.get("msgs_per_s")),
        "ratio_by_round": _by_round(runs, "msgs_per_s"),
        # CPU per event, plain over flow: as the rate, the higher the better
        "cpu_ratio": _ratio(plain.get("cpu_us_per_event"), flow.get("cpu_us_per_event")),
        "cpu_ratio_by_round": _by_round(runs, "cpu_us_per_event", inverse=True),
        "environments": ENVIRONMENTS,
    }


def _drainer(bench: Bench, env: dict[str, str]) -> Callable[[], dict[str, Any]]:
    def drain() -> dict[str, Any]:
        n = bench.config.drain_events
        bench.prefill()
        out = bench.tmp / f"drain-{uuid.uuid4().hex[:6]}.json"
        worker = bench.start_worker(
            TARGET_WORKER, "flow-worker", BENCH_DRAIN_EXPECT=str(n), BENCH_DRAIN_OUT=str(out), **env
        )
        try:

            def consuming() -> bool:
                worker.check_alive()
                return b'"worker_consuming"' in worker.log.read_bytes() or out.exists()

            def done() -> bool:
                worker.check_alive()
                return out.exists()

            wait_until("the worker to consume", consuming, timeout=60, interval=0.01)
            started = _ticks(worker)
            wait_until(f"the worker to drain {n:,} events", done, timeout=n / 200 + 60)
            ticks = _ticks(worker) - started
        finally:
            worker.stop()
        result: dict[str, Any] = json.loads(out.read_text())
        result["cpu_us_per_event"] = round(ticks / os.sysconf("SC_CLK_TCK") * 1e6 / n, 1)
        return result

    return drain


def _ticks(worker: Proc) -> int:
    """The CPU (user and system, clock ticks) the worker's process has used so far."""
    stats = proc_stats()
    return sum(stats[pid].ticks for pid in worker.pids() if pid in stats)


def _by_round(
    runs: dict[str, list[dict[str, Any]]], field: str, *, inverse: bool = False
) -> list[float]:
    """flow / plain of ``field`` in each round both measured (plain / flow if ``inverse``)."""
    ratios: list[float] = []
    for plain, flow in zip(runs["plain"], runs["flow"], strict=True):
        top, bottom = (plain, flow) if inverse else (flow, plain)
        ratio = _ratio(top.get(field), bottom.get(field))
        if ratio is not None:
            ratios.append(ratio)
    return ratios


def _ratio(numerator: Any, denominator: Any) -> float | None:
    if isinstance(numerator, int | float) and isinstance(denominator, int | float) and denominator:
        return round(numerator / denominator, 3)
    return None


# -- the report's share ----------------------------------------------------------------------


def targets() -> list[tuple[str, str, str, Callable[[float], bool]]]:
    """(key, label, target text, passes) of phase i's target."""
    return [
        (
            "flow_to_plain",
            "worker drain, breaker and rate limit on / off",
            f">= {TARGET:.2f}x",
            lambda v: v >= TARGET,
        )
    ]


def values(results: dict[str, Any]) -> dict[str, float | None]:
    """The value of phase i's target in ``results`` (None: not measured)."""
    i = results.get("i")
    ratio = i.get("ratio") if isinstance(i, dict) else None
    return {"flow_to_plain": ratio if isinstance(ratio, int | float) else None}


def rows(i: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(figure, value, target key) of phase i's rows."""
    out: list[tuple[str, str, str | None]] = []
    for name, figure in (
        ("plain", "no-op worker drain, breaker off, no rate limit"),
        ("flow", f"no-op worker drain, breaker on, rate limit {NEVER_WAITS:,}/s"),
    ):
        node = i.get(name) or {}
        value = node.get("msgs_per_s")
        out.append((figure, f"{value:,.0f} msg/s" if isinstance(value, int | float) else "-", None))
    text = _x(i.get("ratio"), i.get("ratio_by_round") or [])
    out.append(("  ratio on / off", text, "flow_to_plain"))
    plain, flow = (i.get(name) or {} for name in ("plain", "flow"))
    out.append(
        (
            "  worker CPU per event, off / on",
            f"{_us(plain.get('cpu_us_per_event'))} / {_us(flow.get('cpu_us_per_event'))} µs: "
            + _x(i.get("cpu_ratio"), i.get("cpu_ratio_by_round") or []),
            None,
        )
    )
    return out


def _us(value: Any) -> str:
    return f"{value:,.1f}" if isinstance(value, int | float) else "-"


def _x(ratio: Any, rounds: list[float]) -> str:
    text = f"{ratio:.2f}x" if isinstance(ratio, int | float) else "-"
    if len(rounds) > 1:
        text += f" of the medians; round by round {', '.join(f'{r:.2f}x' for r in rounds)}"
    return text


__all__ = ["NEVER_WAITS", "measure", "rows", "targets", "values"]
