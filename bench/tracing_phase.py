"""Phase l of ``make bench``: what tracing costs the ingress (issue 25, item 3).

Four ingresses of the bench's namespace, started as the other ingress phases start theirs
(``serve --workers N``), each idle while another is measured, driven to saturation by wrk in
turn, the order rotating from round to round (``--repeat``):

- **before**: the router as it was before tracing existed (the tree of
  ``BENCH_TRACING_BASELINE``, by default the commit before ``router/tracing`` was added,
  exported with ``git archive`` and imported ahead of this checkout);
- **off**: this checkout, no ``OTEL_*`` variable set (tracing off);
- **on**: ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, ``parentbased_traceidratio`` at 1.0: every
  webhook's four spans made and exported;
- **1%**: the same at 0.01 (``OTEL_TRACES_SAMPLER_ARG``).

The spans go, in batches (the SDK's BatchSpanProcessor, its defaults), over OTLP/HTTP to a
local endpoint of the phase's own (``python -m bench.tracing_phase sink PORT``, another
process), which reads each request and answers as a collector does without decoding it: the
collector's own work is not the ingress's. The targets, each of the medians to before's: off
>= 0.99x, on >= 0.8x, 1% >= 0.95x.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.baseline import (
    baseline_env,
    baseline_tree,
    ratio_text,
    saturation_rounds,
    saturation_text,
)
from bench.common import ROOT, Proc, free_port, http_status, wait_until
from router.contract.names import WEBHOOK_PATH

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.run import Bench

#: The ingresses measured, in the first round's order.
MODES = ("before", "off", "on", "1%")
#: The targets: each mode's saturation to before's.
TARGETS = {"off": 0.99, "on": 0.8, "1%": 0.95}
#: Where the baseline comes from, unless given: the commit before tracing was added.
BASELINE_VARIABLE = "BENCH_TRACING_BASELINE"


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def environments(sink: str, baseline: Path) -> dict[str, dict[str, str]]:
    """Each mode's variables (on top of the bench's own)."""
    traced = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    }
    return {
        "before": baseline_env(baseline),
        "off": {},
        "on": {**traced, "OTEL_TRACES_SAMPLER_ARG": "1.0"},
        "1%": {**traced, "OTEL_TRACES_SAMPLER_ARG": "0.01"},
    }


def measure(bench: Bench) -> dict[str, Any]:
    """Phase l: the four ingresses at saturation, round by round (see the module's text)."""
    bench.set_sink(True)
    bench.purge_sink()
    procs: list[Proc] = []
    urls: dict[str, str] = {}
    try:
        try:
            baseline, commit = baseline_tree(
                bench.tmp / "tracing-baseline", BASELINE_VARIABLE, "router/tracing/__init__.py"
            )
            sink, sink_url = _start_sink(bench)
            procs.append(sink)
            for mode, env in environments(sink_url, baseline).items():
                say(f"starting an ingress: tracing {mode}")
                proc, port, _ = bench.start_ingress(f"ingress-tracing-{_slug(mode)}", env=env)
                procs.append(proc)
                urls[mode] = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
        except Exception as error:
            return {"error": f"set-up failed: {error}"}
        label = "l: ingress saturation, tracing"
        result = saturation_rounds(bench, urls, label, against="before", ratios=list(TARGETS))
        result["baseline"] = commit
        result["sink_log_bytes"] = sink.log.stat().st_size
        return result
    finally:
        for proc in procs:
            proc.stop()


def _slug(mode: str) -> str:
    return mode.replace("%", "pct")


def _start_sink(bench: Bench) -> tuple[Proc, str]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.tracing_phase", "sink", str(port)]
    proc = bench.spawn("otlp-sink", argv, dict(os.environ, PYTHONPATH=str(ROOT)))
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        proc.check_alive()
        return http_status(f"{url}/ready", timeout=1) == 200

    wait_until("the OTLP sink to answer", answers, timeout=30, interval=0.1)
    return proc, url


# -- the report's share ----------------------------------------------------------------------


def targets() -> list[tuple[str, str, str, Callable[[float], bool]]]:
    """(key, label, target text, passes) of phase l's targets."""
    return [
        (
            f"tracing_{_slug(mode)}_to_before",
            f"ingress saturation, tracing {mode} / before tracing",
            f">= {target:.2f}x",
            functools.partial(_at_least, target),
        )
        for mode, target in TARGETS.items()
    ]


def _at_least(target: float, value: float) -> bool:
    return value >= target


def values(results: dict[str, Any]) -> dict[str, float | None]:
    """The value of each of phase l's targets in ``results`` (None: not measured)."""
    phase = results.get("l")
    out: dict[str, float | None] = {}
    for mode in TARGETS:
        ratio = phase.get(f"{mode}_ratio") if isinstance(phase, dict) else None
        out[f"tracing_{_slug(mode)}_to_before"] = ratio if isinstance(ratio, int | float) else None
    return out


def rows(phase: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(figure, value, target key) of phase l's rows."""
    out: list[tuple[str, str, str | None]] = [
        (f"ingress saturation, tracing {mode}", saturation_text(phase, mode), None)
        for mode in MODES
    ]
    for mode in TARGETS:
        key = f"tracing_{_slug(mode)}_to_before"
        out.append((f"  {mode} / before", ratio_text(phase, mode), key))
    return out


# -- the OTLP sink -----------------------------------------------------------------------------


def sink(port: int) -> None:
    """Answer OTLP/HTTP export requests on ``port`` as a collector does, reading each whole
    and decoding none; ``GET /ready`` says it is up."""
    from aiohttp import web

    received = {"requests": 0, "bytes": 0}

    async def export(request: web.Request) -> web.Response:
        received["requests"] += 1
        received["bytes"] += len(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def ready(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def summary(_: web.Application) -> None:
        print(f"otlp sink: {received['requests']} requests, {received['bytes']} bytes", flush=True)

    app = web.Application()
    app.router.add_post("/v1/traces", export)
    app.router.add_get("/ready", ready)
    app.on_shutdown.append(summary)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    if sys.argv[1:2] != ["sink"] or len(sys.argv) != 3:
        sys.exit("usage: python -m bench.tracing_phase sink PORT")
    sink(int(sys.argv[2]))


__all__ = ["MODES", "TARGETS", "measure", "rows", "targets", "values"]
