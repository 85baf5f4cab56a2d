"""The log lines the router writes: one JSON object per line, stamped in UTC, whichever way
they are written."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import orjson
import pytest
import structlog
from structlog.testing import capture_logs

from router.observability import HotPathLogger, configure_logging
from router.settings import LogFormat

T = TypeVar("T")

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@pytest.fixture
def stderr(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[io.BytesIO]:
    """What the process writes to stderr once logging is configured for JSON (at info, or at
    the level a test gives as the fixture's parameter)."""
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(raw, write_through=True))
    yield from _configured(request, raw)


@pytest.fixture
def buffered_stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.BytesIO]:
    """What reaches the file behind stderr when stderr is buffered, as a file or a pipe is."""
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(io.BufferedWriter(raw)))
    yield from _configured(None, raw)


@pytest.fixture
def unbuffered_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The file behind stderr when it is as ``PYTHONUNBUFFERED=1`` (or ``python -u``) leaves
    it, with no buffer: most container images set that, ours too (deploy/Dockerfile)."""
    path = tmp_path / "stderr"
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(io.FileIO(path, "wb"), write_through=True))
    yield from _configured(None, path)


@pytest.fixture
def console_stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.BytesIO]:
    """What the process writes to stderr once logging is configured for a terminal."""
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(raw, write_through=True))
    yield from _configured(None, raw, "console")


def _configured(
    request: pytest.FixtureRequest | None, raw: T, log_format: LogFormat = "json"
) -> Iterator[T]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(log_format, getattr(request, "param", "info"))
    yield raw
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(written: io.BytesIO | Path) -> list[dict[str, object]]:
    """The JSON lines written so far, to memory or to a file."""
    data = written.read_bytes() if isinstance(written, Path) else written.getvalue()
    return [orjson.loads(line) for line in data.splitlines()]


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


def test_the_hot_path_writes_the_line_structlog_writes(
    stderr: io.BytesIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = {"outcome": "accepted", "status": 200, "latency_ms": 1.25, "known": True}
    hot_path = HotPathLogger("router.test")
    monkeypatch.setattr(hot_path, "_structlog", None)  # it must not hand the line over
    with structlog.contextvars.bound_contextvars(process=1):
        structlog.get_logger("router.test").info("webhook", **fields)
        hot_path.info("webhook", **fields)

    by_structlog, by_hot_path = lines(stderr)
    assert by_structlog.pop("timestamp") <= by_hot_path.pop("timestamp")  # type: ignore[operator]
    assert (
        by_hot_path == by_structlog == {**fields, "event": "webhook", "process": 1, "level": "info"}
    )
    assert list(by_hot_path) == list(by_structlog)


@pytest.mark.parametrize("stderr", ["warning"], indirect=True)
def test_the_hot_path_keeps_to_the_level(stderr: io.BytesIO) -> None:
    HotPathLogger("router.test").info("webhook", status=200)
    structlog.get_logger("router.test").warning("webhook_slow", status=200)

    assert [line["event"] for line in lines(stderr)] == ["webhook_slow"]


def test_a_test_capturing_logs_sees_the_hot_paths_lines(stderr: io.BytesIO) -> None:
    with capture_logs() as captured:
        HotPathLogger("router.test").info("webhook", status=200)
    assert captured == [{"event": "webhook", "status": 200, "log_level": "info"}]
    assert stderr.getvalue() == b""


async def test_in_a_loop_the_hot_paths_lines_go_out_together_when_the_turn_ends(
    buffered_stderr: io.BytesIO,
) -> None:
    hot_path = HotPathLogger("router.test")
    hot_path.info("webhook", request=1)
    hot_path.info("webhook", request=2)
    assert buffered_stderr.getvalue() == b""  # one write for the turn, once it is over

    await asyncio.sleep(0)
    assert [line["request"] for line in lines(buffered_stderr)] == [1, 2]

    hot_path.info("webhook", request=3)
    logging.getLogger("aiohttp.test").warning("from the stdlib")  # pushes ours out first
    assert [line.get("request", line["event"]) for line in lines(buffered_stderr)] == [
        1,
        2,
        3,
        "from the stdlib",
    ]


async def test_with_an_unbuffered_stderr_the_hot_paths_lines_still_go_out_when_the_turn_ends(
    unbuffered_stderr: Path,
) -> None:
    # Given stderr with no buffer of its own: each write to it is a system call
    hot_path = HotPathLogger("router.test")

    # When two webhooks are logged in one turn of the loop
    hot_path.info("webhook", request=1)
    hot_path.info("webhook", request=2)

    # Then neither line is in the file yet, and both are once the turn is over
    assert lines(unbuffered_stderr) == []
    await asyncio.sleep(0)
    assert [line["request"] for line in lines(unbuffered_stderr)] == [1, 2]

    # And any other line still goes out as it is written, after ours
    hot_path.info("webhook", request=3)
    logging.getLogger("aiohttp.test").warning("from the stdlib")
    assert [line.get("request", line["event"]) for line in lines(unbuffered_stderr)] == [
        1,
        2,
        3,
        "from the stdlib",
    ]


def test_a_line_logged_as_a_loop_stops_does_not_hold_back_the_next_loops_lines(
    buffered_stderr: io.BytesIO,
) -> None:
    hot_path = HotPathLogger("router.test")

    # Given a loop that stops right after a line, before the turn that would flush it
    first = asyncio.new_event_loop()

    def log_and_stop() -> None:
        hot_path.info("webhook", request=1)
        first.stop()

    first.call_soon(log_and_stop)
    first.run_forever()
    first.close()
    assert lines(buffered_stderr) == []

    # When another loop logs a line
    async def log_and_yield() -> None:
        hot_path.info("webhook", request=2)
        await asyncio.sleep(0)

    asyncio.run(log_and_yield())

    # Then both lines are out once that loop's turn ended
    assert [line["request"] for line in lines(buffered_stderr)] == [1, 2]


def test_outside_a_loop_the_hot_path_writes_each_line_at_once(buffered_stderr: io.BytesIO) -> None:
    HotPathLogger("router.test").info("webhook", request=1)
    assert [line["request"] for line in lines(buffered_stderr)] == [1]


PASSWORD = "broker-password-4d1f"
PHONE = "+15555550123"


def fail_holding_secrets() -> None:
    """Raise where the frame's locals hold a password and a subscriber's phone number."""
    settings = {"amqp_url": f"amqp://router:{PASSWORD}@rabbit:5672/", "admin_token": PASSWORD}
    body = {"subscriber": {"phone": PHONE}}
    raise RuntimeError(f"unexpected: {len(settings)} settings, {len(body)} body")


@pytest.mark.parametrize("output", ["stderr", "console_stderr"])
@pytest.mark.parametrize("logger", ["structlog", "stdlib"])
def test_a_logged_traceback_shows_no_frames_local_variables(
    output: str, logger: str, request: pytest.FixtureRequest
) -> None:
    # Given logging as configured in production, as JSON lines or for a terminal
    written: io.BytesIO = request.getfixturevalue(output)

    # When an unexpected error is logged with its traceback, ours or aiohttp's (the stdlib)
    try:
        fail_holding_secrets()
    except RuntimeError:
        if logger == "structlog":
            structlog.get_logger("router.test").exception("webhook_failed")
        else:
            logging.getLogger("aiohttp.server").exception("Error handling request")

    # Then the error and where it was raised are there, the frame's variables are not
    text = written.getvalue().decode()
    assert "RuntimeError" in text and "unexpected: 2 settings, 1 body" in text
    assert "fail_holding_secrets" in text
    assert PASSWORD not in text and PHONE not in text
