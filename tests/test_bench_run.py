"""``make bench`` end to end, briefly (``--quick``, a few phases, on the real broker): every
figure asked for is measured, or skipped where its tool is missing; the exit status says
whether any could not be; the broker is left as the run found it; and wrong usage is one
line before anything runs. No figure is judged
here: how fast is the benchmark's business, not the tests'."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import rabbitmqctl, sweep
from tests.databases import POSTGRES_URL

ROOT = Path(__file__).resolve().parent.parent


def run_bench(results: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m bench.run --quick ARGS`` writing its JSON to ``results``."""
    return subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", *args, "--results-dir", str(results)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def names_at_the_broker(prefix: str) -> list[str]:
    listed = [
        rabbitmqctl("-q", f"list_{kind}", "name", "--no-table-headers").split()
        for kind in ("queues", "exchanges")
    ]
    return [name for names in listed for name in names if name.startswith(prefix)]


@pytest.mark.broker
@pytest.mark.skipif(not shutil.which("wrk"), reason="needs wrk (scripts/ensure-load-tools.sh)")
def test_a_quick_run_measures_what_it_was_asked_and_leaves_the_broker_as_it_found_it(
    tmp_path: Path,
) -> None:
    # Given a machine without the Go anchors: nothing built, no build script to build them
    without_anchors = {
        "ANCHORS_OUT": str(tmp_path / "anchors"),
        "ANCHORS_BUILD": str(tmp_path / "no-such-build.sh"),
    }

    # And this checkout's own commit as the baseline the ingress is compared with (a clone
    # of any depth has it)
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    if head.returncode != 0:
        pytest.skip("phase m exports a commit of this checkout's history: not a git checkout")
    baseline = {"BENCH_ORDERING_BASELINE": head.stdout.strip()}

    # When a quick run measures the bare publisher, the ingress, the worker's drain, RSS, and
    # the ingress against that baseline
    done = run_bench(
        tmp_path,
        *("--only", "a,b,d,e,m", "--seconds", "1", "--warmup", "0.5"),
        *("--drain-events", "2000", "--rss-events", "5000"),
        **without_anchors,
        **baseline,
    )
    results: dict[str, Any] = json.loads((tmp_path / "latest.json").read_text())
    namespace = results["namespace"]
    try:
        # Then it exits 0: every figure it could take, it took
        assert done.returncode == 0, done.stderr[-3000:]
        assert "bench: not measured" not in done.stderr

        # And each is a real measurement: messages confirmed, webhooks answered 200, deliveries
        # drained, the ingress's memory read after the events it was asked for
        assert results["a"]["msgs_per_s"] > 0
        saturation = results["b"]["saturation"]
        assert saturation["ok_per_s"] > 0
        assert (saturation["non_2xx"], saturation["socket_errors"]) == (0, 0)
        assert results["b"]["saturation_compared"]["ok_per_s"] > 0
        assert results["d"]["worker"]["msgs_per_s"] > 0
        assert results["d"]["bare"]["msgs_per_s"] > 0
        assert results["e"]["answered_200"] >= 5000
        assert results["e"]["peak_rss_mb"] >= results["e"]["start_rss_mb"] > 0
        assert results["m"]["baseline"] == head.stdout.strip()
        assert results["m"]["before"]["ok_per_s"] > 0
        assert results["m"]["now"]["ok_per_s"] > 0
        assert results["m"]["now_ratio"] > 0

        # And the fixed rate, which needs the anchors' load generator, is skipped with the reason
        fixed = results["b"]["fixed_rate"]
        assert fixed["unavailable"] is True
        assert "not built" in fixed["error"]
        assert "skipped: loadgen is not built" in done.stdout

        # And the table judges the ratios it could compute, against their targets
        judged = {t["key"]: t["result"] for t in results["targets"]}
        assert judged["ingress_to_bare"] in ("PASS", "FAIL")
        assert judged["worker_to_bare"] in ("PASS", "FAIL")
        assert judged["ordering_to_before"] in ("PASS", "FAIL")
        assert "ratio ingress / bare publisher" in done.stdout

        # And nothing of its namespace is left at the broker
        assert names_at_the_broker(f"{namespace}.") == []
    finally:
        sweep((f"{namespace}.",))


async def bench_tables() -> set[str]:
    """The PostgreSQL tables a parked-events phase makes (``bench_parked_<uuid>...``)."""
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'bench\\_parked\\_%'"
        )
    finally:
        await conn.close()
    return {row["tablename"] for row in rows}


@pytest.mark.broker
@pytest.mark.database
async def test_a_quick_parked_events_phase_measures_both_stores_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    # Given the PostgreSQL tables of benchmarks before the run
    before = await bench_tables()

    # When a quick run measures phase h (parked events) with a few hundred dead letters
    done = await asyncio.to_thread(
        run_bench, tmp_path, "--only", "h", "--dead-letters", "300", "--parked-entries", "2000"
    )

    # Then it exits 0, with a drain, a replay and query figures for each store
    assert done.returncode == 0, done.stderr[-3000:]
    h: dict[str, Any] = json.loads((tmp_path / "latest.json").read_text())["h"]
    assert (h["dead_letters"], h["entries"]) == (300, 2000)
    for kind in ("sqlite", "postgres"):
        figures = h[kind]
        assert figures["drain"]["keeper"]["msgs_per_s"] > 0
        assert figures["drain"]["bare"]["msgs_per_s"] > 0
        assert figures["replay"]["msgs_per_s"] > 0 and figures["replay"]["bare_msgs_per_s"] > 0
        assert figures["queries"]["page_filtered"]["p95_ms"] > 0
        assert figures["queries"]["facets_app"]["p95_ms"] > 0

        # And nothing of its namespace is left at the broker
        assert names_at_the_broker(f"{figures['namespace']}.") == []

    # And the table judges each store's targets
    assert "ratio replay / bare publisher (PostgreSQL)" in done.stdout
    assert "ratio keeper / bare consumer (SQLite)" in done.stdout

    # And no PostgreSQL table of it is left
    assert await bench_tables() == before


@pytest.mark.broker
def test_a_run_that_cannot_reach_the_broker_exits_1_and_says_why(tmp_path: Path) -> None:
    # Given a broker address nothing listens on
    nowhere = "amqp://guest:guest@127.0.0.1:1/"

    # When the bare publisher is to be measured there
    done = run_bench(tmp_path, "--only", "a", ROUTER_AMQP_URL=nowhere)

    # Then the run fails, saying why in one line, with no traceback to read through
    assert done.returncode == 1
    said = [line for line in done.stderr.splitlines() if line.startswith("bench: not measured")]
    assert said == [
        "bench: not measured: the run stopped early: RabbitMQ at 127.0.0.1:1 did not answer: "
        "[Errno 111] Connect call failed ('127.0.0.1', 1)"
    ]
    assert "Traceback" not in done.stderr

    # And the report it still wrote says the same
    results = json.loads((tmp_path / "latest.json").read_text())
    assert "a" not in results
    assert any("RabbitMQ at 127.0.0.1:1 did not answer" in note for note in results["notes"])


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--seconds", "-1"], "argument --seconds: must be > 0, not -1"),
        (["--repeat", "0"], "argument --repeat: must be >= 1, not 0"),
        (["--drain-events", "many"], "argument --drain-events: not a number: 'many'"),
        (["--only", "a,x"], "--only takes letters of a,b,c,d,e,f,g,h,i,j,k,l,m"),
    ],
)
def test_wrong_usage_is_one_line_and_runs_nothing(
    tmp_path: Path, args: list[str], said: str
) -> None:
    # When the bench is asked for something it cannot mean
    done = run_bench(tmp_path / "results", *args)

    # Then it says so in one line, exits 2, and measured nothing (no report written)
    assert done.returncode == 2
    assert done.stderr == f"python -m bench.run: {said} (see --help)\n"
    assert not (tmp_path / "results").exists()
