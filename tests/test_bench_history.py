"""Phase k of ``make bench`` (the archive's cost), briefly (``--quick``, on the real broker):
each of its figures is measured, the search reads exactly the window it was asked for, the
backfill publishes every event of the archive, and nothing the phase made is left at the
broker. No figure is judged here: how fast is the benchmark's business, not the tests'."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench.history_archive import MNESIA_BASE
from bench.history_phase import ArchiveSizes
from tests.conftest import sweep
from tests.test_bench_run import names_at_the_broker, run_bench

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(not shutil.which("wrk"), reason="needs wrk (scripts/ensure-load-tools.sh)"),
]


def test_a_quick_archive_phase_measures_each_figure_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    # When a quick run measures phase k on a machine without the Go anchors (no binaries, no
    # script to build them: the fixed rate is then skipped, saying why)
    nowhere = tmp_path / "no-anchors"
    done = run_bench(
        *(tmp_path, "--only", "k", "--seconds", "1", "--warmup", "0.5"),
        ANCHORS_OUT=str(nowhere),
        ANCHORS_BUILD=str(nowhere / "build.sh"),
    )
    results: dict[str, Any] = json.loads((tmp_path / "latest.json").read_text())
    k = results["k"]
    archive = k["archive"]
    namespaces = [results["namespace"], archive.get("namespace", results["namespace"])]
    try:
        # Then it exits 0: every figure it could take, it took
        assert done.returncode == 0, done.stderr[-3000:]
        assert "bench: not measured" not in done.stderr

        # And both ingresses answered webhooks at saturation, the archive on and off
        for mode in ("on", "off"):
            saturation = k["ingress"][mode]["saturation"]
            assert saturation["ok_per_s"] > 0
            assert (saturation["non_2xx"], saturation["socket_errors"]) == (0, 0)
            assert k["ingress"][mode]["fixed_rate"]["unavailable"] is True
        assert k["ingress"]["saturation_ratio"] > 0

        # And the archive was filled to both sizes and its search read exactly the last window
        sizes = ArchiveSizes.quick()
        for size, events in (("small", sizes.small), ("large", sizes.large)):
            measured = archive[size]
            assert measured["events"] == events
            assert measured["fill"]["msgs_per_s"] > 0
            every, filtered = measured["search"]["all"], measured["search"]["filtered"]
            assert (every["scanned"], every["found"], every["more"]) == (
                sizes.window,
                sizes.window,
                False,
            )
            assert filtered["scanned"] == sizes.window
            assert measured["search"]["bare"]["scanned"] == sizes.window
            assert 0 < filtered["found"] < sizes.window

        # And where the broker's files can be read, its bytes on disk grew with the events
        if any(MNESIA_BASE.glob("*/stream")):
            assert (
                archive["large"]["disk"]["total_bytes"]
                > archive["small"]["disk"]["total_bytes"]
                > sizes.small * archive["body_bytes"]
            )
            assert archive["disk"]["mb_per_million"] > 0

        # And the backfill published every event of the small archive, as the bare publisher
        backfill = archive["backfill"]
        assert backfill["messages"] == sizes.small
        assert backfill["msgs_per_s"] > 0 and backfill["bare_msgs_per_s"] > 0

        # And the table judges the phase's targets
        judged = {t["key"]: t["result"] for t in results["targets"]}
        for key in ("archive_saturation", "archive_search_s", "archive_backfill"):
            assert judged[key] in ("PASS", "FAIL")
        assert "search, the last 500 of 20,000" in done.stdout

        # And nothing of either namespace is left at the broker
        for namespace in namespaces:
            assert names_at_the_broker(f"{namespace}.") == []
    finally:
        sweep(tuple(f"{namespace}." for namespace in namespaces))
