"""The log lines the router writes: one JSON object per line, stamped in UTC."""

from __future__ import annotations

import io
import logging
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
import structlog

from router.observability import configure_logging

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.BytesIO]:
    """What the process writes to stderr once logging is configured for JSON."""
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(raw, write_through=True))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("json", "info")
    yield raw
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(raw: io.BytesIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in raw.getvalue().splitlines()]


def test_our_events_and_stdlib_records_are_json_lines_stamped_now_in_utc(
    stderr: io.BytesIO,
) -> None:
    before = datetime.now(UTC)
    structlog.get_logger("router.test").info("webhook", status=200)
    time.sleep(0.002)  # a different microsecond, possibly a different second
    logging.getLogger("aiohttp.test").warning("from the stdlib")
    after = datetime.now(UTC)

    ours, stdlib = lines(stderr)
    assert (ours["event"], ours["status"], ours["level"]) == ("webhook", 200, "info")
    assert (stdlib["event"], stdlib["level"]) == ("from the stdlib", "warning")
    stamps = [ours["timestamp"], stdlib["timestamp"]]
    assert all(isinstance(s, str) and ISO_UTC.fullmatch(s) for s in stamps), stamps
    parsed = [datetime.fromisoformat(str(s).replace("Z", "+00:00")) for s in stamps]
    assert before <= parsed[0] < parsed[1] <= after
