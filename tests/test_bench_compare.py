"""Two ``make bench`` runs side by side (``python -m bench.compare``): each figure of both,
how it moved, and what besides the figures differs between the runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.compare import main


def a_run(**changes: Any) -> dict[str, Any]:
    """The parts of a bench result the comparison reads, as ``bench.run`` writes them."""
    results: dict[str, Any] = {
        "started_at": "2026-11-27T14:23:33Z",
        "mode": "full",
        "config": {"workers": 2, "seconds": 10.0, "repeat": 3},
        "machine": {
            "cores": 2,
            "cpu": "AMD EPYC",
            "memory": "24.7 GB",
            "kernel": "6.18",
            "rabbitmq": {"version": "3.10.8"},
            "packages": {"aiohttp": "3.14.5", "aio-pika": "10.2.1"},
        },
        "a": {"msgs_per_s": 8_000},
        "b": {"saturation": {"ok_per_s": 7_200}, "fixed_rate": {"p99_ms": 4.0}},
        "ratios": {"ingress_to_bare": 0.9},
        "e": {"peak_rss_mb": 56.0},
    }
    for key, value in changes.items():
        results[key] = value
    return results


def compare(tmp_path: Path, before: Any, after: Any, *args: str) -> None:
    """``python -m bench.compare`` on the two runs, written where ``make bench`` would."""
    paths = [tmp_path / "before.json", tmp_path / "after.json"]
    for path, results in zip(paths, (before, after), strict=True):
        path.write_text(json.dumps(results))
    assert main([*map(str, paths), *args]) == 0


def test_each_figure_is_set_beside_its_earlier_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a run, and a later one on the same machine where the ingress answered more and
    # the Go reference was measured too
    before = a_run()
    after = a_run(
        b={"saturation": {"ok_per_s": 8_640}, "fixed_rate": {"p99_ms": 3.0}},
        ratios={"ingress_to_bare": 1.08},
        f={"saturation": {"ok_per_s": 9_000}},
    )

    # When they are compared
    compare(tmp_path, before, after)
    out = capsys.readouterr().out.splitlines()

    # Then each figure shows both values, after / before, and which way is better
    def row(label: str) -> list[str]:
        line = next(line for line in out if line.startswith(label))
        return line[len(label) :].split()

    assert row("b ingress at saturation, events/s") == ["7,200", "8,640", "1.20x", "higher"]
    assert row("b ingress / bare publisher") == ["0.90", "1.08", "1.20x", "higher"]
    assert row("b ingress p99 at the fixed rate, ms") == ["4.00", "3.00", "0.75x", "lower"]
    assert row("e ingress peak RSS, MB") == ["56.0", "56.0", "1.00x", "lower"]
    # a figure only one run has is shown, with '-' for the other; one neither has is not
    assert row("f Go reference at saturation, events/s") == ["-", "9,000", "-", "higher"]
    assert not any(line.startswith("d ") for line in out)
    # and nothing besides the figures differs, so there are no notes
    assert "notes:" not in out


def test_what_else_differs_is_said_below_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a later run on another machine, in quick mode, with a newer aiohttp
    before = a_run()
    packages = {**before["machine"]["packages"], "aiohttp": "3.15.0"}
    machine = {**before["machine"], "cpu": "Intel Xeon", "packages": packages}
    config = {**before["config"], "workers": 1, "seconds": 2.0}
    after = a_run(machine=machine, mode="quick", config=config)

    # When they are compared
    compare(tmp_path, before, after)
    out = capsys.readouterr().out

    # Then every difference is noted, the machine's first: its figures do not compare
    notes = out.split("notes:\n")[1].splitlines()
    assert notes == [
        "  - different machines (cpu AMD EPYC -> Intel Xeon): their figures do not compare",
        "  - a full run against a quick one: a quick run's figures come from shorter runs",
        "  - --workers 2 -> 1",
        "  - --seconds 10.0 -> 2.0",
        "  - aiohttp 3.14.5 -> 3.15.0",
    ]


def test_markdown_gives_a_table_for_the_readme(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compare(tmp_path, a_run(), a_run(a={"msgs_per_s": 9_000}), "--markdown")
    out = capsys.readouterr().out.splitlines()
    assert "| figure | before | after | after / before | better |" in out
    assert "| a bare publisher, msg/s | 8,000 | 9,000 | 1.12x | higher |" in out


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "cannot read {path}: No such file or directory"),
        ("{not json", "{path} is not JSON: Expecting property name enclosed in double quotes"),
        ("[1, 2]", "{path} is not a make bench result (no machine recorded)"),
    ],
)
def test_a_file_that_is_not_a_bench_result_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, said: str
) -> None:
    # Given a good result and a path that is missing, not JSON, or not a bench result
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(a_run()))
    if content is not None:
        bad.write_text(content)

    # When they are compared
    with pytest.raises(SystemExit) as stopped:
        main([str(good), str(bad)])

    # Then it says what is wrong with which file, in one line, and exits 2
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m bench.compare: {said.format(path=bad)}")
    assert err.count("\n") == 1
