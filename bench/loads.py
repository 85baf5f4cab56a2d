"""The load generators, each a separate process: wrk, the Go open-loop loadgen, bench.clients."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    ANCHORS_BUILD,
    GO_INGRESS,
    KEY,
    LOADGEN,
    BenchError,
    Unavailable,
    bench_env,
    python_argv,
)
from router.contract.names import SIGNATURE_HEADER
from router.contract.signing import sign

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    socket_error_detail: str
    ok_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wrk_script(bodies: list[bytes], directory: Path) -> Path:
    """A wrk script posting every body in turn with its signature."""
    entries = ",\n".join(f'{{[==[{b.decode()}]==], "{sign(b, KEY)}"}}' for b in bodies)
    script = directory / "post.lua"
    script.write_text(
        f"local events = {{\n{entries}\n}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #events + 1\n"
        '  return wrk.format("POST", nil, {["Content-Type"] = "application/json",\n'
        f'    ["{SIGNATURE_HEADER}"] = events[i][2]}}, events[i][1])\n'
        "end\n"
    )
    return script


def _duration_ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def run_wrk(url: str, script: Path, seconds: float, connections: int) -> WrkResult:
    """wrk -t1 -cN for ``seconds``: requests answered 2xx per second and latency."""
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    try:
        done = subprocess.run(
            [*argv, "-s", str(script), url],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {seconds + 60:.0f} s") from None
    out = done.stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
        if not m:
            raise BenchError(f"cannot read {label} from wrk:\n{out}{done.stderr}")
        return round(_duration_ms(m.group(1), m.group(2)), 3)

    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", out)
    max_latency = re.search(r"^\s*Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m|h)", out, re.M)
    if not total or not max_latency:
        raise BenchError(f"cannot read wrk's output:\n{out}{done.stderr}")
    requests = int(total.group(1))
    elapsed = _duration_ms(total.group(2), total.group(3)) / 1000
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    error_count = sum(int(n) for n in re.findall(r"\d+", errors.group(1))) if errors else 0
    bad = int(non2xx.group(1)) if non2xx else 0
    return WrkResult(
        requests=requests,
        seconds=round(elapsed, 3),
        non_2xx=bad,
        socket_errors=error_count,
        socket_error_detail=errors.group(1).strip() if errors else "",
        ok_per_s=round((requests - bad) / elapsed, 1),
        p50_ms=ms("50%"),
        p99_ms=ms("99%"),
        max_ms=round(_duration_ms(max_latency.group(1), max_latency.group(2)), 3),
    )


def run_hey(url: str, body: bytes, count: int, concurrency: int, directory: Path) -> int:
    """``count`` signed POSTs of ``body`` from ``concurrency`` connections (hey, closed loop):
    how many were answered 200."""
    if shutil.which("hey") is None:
        raise BenchError("hey is not installed (Debian: apt-get install hey)")
    body_file = directory / "hey-body.json"
    body_file.write_bytes(body)
    argv = [
        *("hey", "-n", str(count), "-c", str(concurrency), "-m", "POST"),
        *("-T", "application/json", "-H", f"{SIGNATURE_HEADER}: {sign(body, KEY)}"),
        *("-D", str(body_file), url),
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError("hey did not finish within 900 s") from None
    finally:
        body_file.unlink(missing_ok=True)
    answered = re.search(r"\[200\]\s+(\d+) responses", done.stdout)
    if done.returncode != 0 or answered is None:
        raise BenchError(f"hey failed ({done.returncode}): {(done.stdout + done.stderr)[-300:]}")
    return int(answered.group(1))


def anchors_built() -> bool:
    return LOADGEN.exists() and GO_INGRESS.exists()


def build_anchors(log: Path) -> str | None:
    """Run the anchors' build.sh when a binary is missing; None when built, else why not."""
    if anchors_built():
        return None
    if not ANCHORS_BUILD.exists():
        return f"{ANCHORS_BUILD} not found"
    try:
        with log.open("wb") as out:
            done = subprocess.run(
                ["bash", str(ANCHORS_BUILD)], stdout=out, stderr=subprocess.STDOUT, timeout=900
            )
    except subprocess.TimeoutExpired:
        return "build.sh did not finish within 900 s"
    if done.returncode != 0 or not anchors_built():
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        return f"build.sh failed ({done.returncode}): {tail[0][:120]}"
    return None


def run_loadgen(
    url: str, body: bytes, rate: int, seconds: float, warmup: float, directory: Path
) -> dict[str, Any]:
    """The Go open-loop generator at ``rate``: latency from each request's scheduled moment."""
    if not LOADGEN.exists():
        raise Unavailable(f"{LOADGEN} is not built")
    body_file = directory / "loadgen-body.json"
    body_file.write_bytes(body)
    argv = [
        str(LOADGEN),
        *("-url", url, "-body", str(body_file), "-sig", sign(body, KEY)),
        *("-rate", str(rate), "-d", f"{seconds}s", "-warmup", f"{warmup}s"),
    ]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + warmup + 60, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError("loadgen did not finish in time") from None
    finally:
        body_file.unlink(missing_ok=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise BenchError(f"loadgen failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


def run_client(
    args: list[str], *, loop: str, timeout: float, prefix: Sequence[str] = ()
) -> dict[str, Any]:
    """Run ``python -m bench.clients ARGS`` (after ``prefix``, e.g. valgrind) and return its
    JSON line."""
    argv = [*prefix, *python_argv("-m", "bench.clients", "--loop", loop, *args)]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=bench_env(), check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"bench.clients {args[0]} did not finish within {timeout:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise BenchError(
            f"bench.clients {args[0]} failed ({done.returncode}): {done.stderr.strip()[-500:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result
