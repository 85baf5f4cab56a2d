"""Counting a process's instructions with valgrind's callgrind: a figure that repeats.

Throughput on a shared 2-core machine moves ±20 % from run to run; the instructions a
process executes for the same work move by less than 0.1 %. callgrind counts user-space
instructions only (no kernel time, no cache misses), and runs the program about 50 times
slower, so it says what our code costs, not how fast it runs.

A process is started after :func:`prefix` with counting off; :func:`count` turns it on for
the measured part, and :func:`instructions` reads the total once the part is done.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from bench.common import BenchError

_TOTALS = re.compile(rb"^totals: (\d+)", re.MULTILINE)


def available() -> str | None:
    """None when valgrind and callgrind_control are installed, else what is missing."""
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not installed (Debian: valgrind)" if missing else None


def prefix(out: Path) -> list[str]:
    """What runs a command under callgrind, counting nothing until :func:`count` turns it on;
    its counts are written to ``out``.N."""
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        f"--log-file={out}.log",
    ]


def count(pid: int, on: bool) -> None:
    """Turn counting on or off in the process ``pid`` runs under callgrind."""
    _control("-i", "on" if on else "off", pid)


def instructions(pid: int, out: Path) -> int:
    """Every instruction counted so far in the running process ``pid`` (written out now)."""
    _control("-d", None, pid)
    return instructions_written(out)


def instructions_written(out: Path) -> int:
    """Every instruction a process wrote to ``out`` (at its exit) and ``out``.N (on request)."""
    files = [out, *out.parent.glob(f"{out.name}.*")]
    totals = [
        int(n)
        for path in files
        if path.suffix != ".log" and path.exists()
        for n in _TOTALS.findall(path.read_bytes())
    ]
    if not totals:
        raise BenchError(f"callgrind wrote no totals to {out}")
    return sum(totals)


def _control(flag: str, value: str | None, pid: int) -> None:
    args = ["callgrind_control", flag, *([value] if value else []), str(pid)]
    try:
        subprocess.run(args, capture_output=True, timeout=120, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        raise BenchError(f"{' '.join(args)} failed: {error}") from None


__all__ = ["available", "count", "instructions", "instructions_written", "prefix"]
