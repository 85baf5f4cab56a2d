"""The benchmark's report (``make bench``): the ingress's ratios to the bare publisher and to
the Go reference are shown as the ratio of the medians and, with ``--repeat``, round by round,
each round's runs set side by side; and what could not be measured is told apart from what was
skipped for want of a tool."""

from __future__ import annotations

from typing import Any

from bench.report import evaluate, failures, render


def _rounds(field: str, *values: float | None) -> dict[str, Any]:
    """A repeated figure as the bench merges it: the median and every round's sample; None is
    a run that failed."""
    samples = [
        {"round": k, field: v} if v is not None else {"round": k, "error": "wrk failed"}
        for k, v in enumerate(values)
    ]
    good = sorted(v for v in values if v is not None)
    return {field: good[len(good) // 2], "samples": samples}


def _saturation(*values: float | None) -> dict[str, Any]:
    """A saturation figure under wrk: events/s answered 200, none answered otherwise."""
    return {**_rounds("ok_per_s", *values), "non_2xx": 0}


def test_the_ratio_is_shown_round_by_round_beside_the_ratio_of_the_medians() -> None:
    # Given three rounds on a machine that got faster, then slower again: the bare publisher
    # and the ingress rose and fell together
    results: dict[str, Any] = {
        "config": {"workers": 2},
        "a": _rounds("msgs_per_s", 4_000, 6_000, 5_000),
        "b": {"saturation": _saturation(4_400, 6_600, 4_500)},
        "f": {"saturation": _saturation(5_000, None, 5_000)},
    }

    # When the report evaluates them
    evaluate(results)

    # Then each round's ingress run is set against the bare run of the same round
    ratios = results["ratios"]
    assert ratios["ingress_to_bare"] == 0.9  # 4,500 / 5,000: medians from different rounds
    assert ratios["ingress_to_bare_by_round"] == [1.1, 1.1, 0.9]
    # and a round whose Go run failed is left out rather than paired with another round's
    assert ratios["ingress_to_go_by_round"] == [0.88, 0.9]

    # And the table shows both, the verdict still on the ratio of the medians
    table = render(results)
    line = next(row for row in table.splitlines() if "ratio ingress / bare publisher" in row)
    assert "0.90x of the medians; round by round 1.10x, 1.10x, 0.90x" in line
    assert line.rstrip().endswith("FAIL")


def test_a_single_run_shows_one_ratio() -> None:
    # Given one round of each
    results: dict[str, Any] = {
        "config": {"workers": 1},
        "a": _rounds("msgs_per_s", 5_000),
        "b": {"saturation": _saturation(5_500)},
    }

    # When the report evaluates and renders it
    evaluate(results)
    table = render(results)

    # Then the ratio stands alone: there is nothing to set side by side
    line = next(row for row in table.splitlines() if "ratio ingress / bare publisher" in row)
    assert "1.10x" in line and "round by round" not in line
    assert line.rstrip().endswith("PASS")


def test_the_workers_drain_is_also_shown_round_by_round() -> None:
    # Given three rounds of the worker's drain, each followed by the bare consumer's
    results: dict[str, Any] = {
        "config": {"drain_events": 50_000},
        "d": {
            "worker": _rounds("msgs_per_s", 5_600, 7_300, 5_900),
            "bare": _rounds("msgs_per_s", 6_300, 7_300, 6_400),
        },
    }

    # When the report evaluates and renders them
    evaluate(results)
    table = render(results)

    # Then the worker is set against the bare consumer of its own round too
    assert results["ratios"]["worker_to_bare_by_round"] == [0.889, 1.0, 0.922]
    line = next(row for row in table.splitlines() if "ratio worker / bare consumer" in row)
    assert "0.92x of the medians; round by round 0.89x, 1.00x, 0.92x" in line


def test_the_compared_process_count_is_shown_at_the_fixed_rate_too_but_not_judged() -> None:
    # Given the fixed-rate figures of the measured ingress (two processes) and of one process
    fixed = {"p50_ms": 2.0, "p99_ms": 5.6, "max_ms": 10.0, "achieved_rps": 1000, "non2xx": 0}
    results: dict[str, Any] = {
        "config": {"workers": 2, "rate": 1000},
        "b": {
            "fixed_rate": {**fixed, "errors": 0},
            "fixed_rate_compared": {**fixed, "p99_ms": 4.3, "errors": 0, "processes": 1},
        },
    }

    # When the report evaluates and renders them
    evaluate(results)
    rows = render(results).splitlines()

    # Then both are shown, and the verdict is on the measured ingress's alone
    measured = next(row for row in rows if "1,000/s (loadgen, 1 body), 2 proc" in row)
    compared = next(row for row in rows if "1,000/s (loadgen, 1 body), 1 proc (compared)" in row)
    assert "p99 5.60" in measured and measured.rstrip().endswith("FAIL")
    assert "p99 4.30" in compared and not compared.rstrip().endswith(("PASS", "FAIL"))


def test_a_figure_that_failed_is_a_failure_and_one_whose_tool_is_missing_is_not() -> None:
    # Given a run where one of the ingress's rounds failed, the worker could not be measured,
    # the Go reference was not built and its target was missed
    results: dict[str, Any] = {
        "config": {"workers": 2},
        "a": {"msgs_per_s": 5_000},
        "b": {
            "saturation": {"ok_per_s": 4_000, "non_2xx": 0, "failed_runs": ["wrk failed (1)"]},
            "fixed_rate": {"error": "loadgen is not built: no build.sh", "unavailable": True},
        },
        "d": {"worker": {"error": "the worker did not start"}, "bare": {"msgs_per_s": 7_000}},
        "f": {"saturation": {"error": "the Go reference is not built", "unavailable": True}},
    }
    evaluate(results)

    # When the report lists what could not be measured
    found = failures(results)

    # Then the failed round and the failed drain are there, the missing tools and the missed
    # target are not
    assert found == [
        "b saturation: 1 of its runs failed, first: wrk failed (1)",
        "d worker: the worker did not start",
    ]
    # and the table says which figures were skipped rather than not measured
    table = render(results)
    assert "skipped: loadgen is not built: no build.sh" in table
    assert "not measured: the worker did not start" in table
