"""structlog set-up: one renderer for our events and for aiohttp's and aio-pika's stdlib logs.

JSON lines (orjson) when stderr is not a terminal, the console renderer when it is.
Context variables are merged first, timestamps are ISO 8601 UTC. Tracebacks, either way,
never show the frames' local variables: those hold settings, tokens and request bodies.
A line logged on every request goes through a :class:`HotPathLogger`: the same line, for
less.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, TextIO

import orjson
import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor

from router.settings import LogFormat


class _UtcTimestamp:
    """``timestamp``: now in ISO 8601 UTC with microseconds ("2026-11-27T01:19:12.472441Z").

    What structlog's ``TimeStamper(fmt="iso", utc=True)`` writes (but always with six
    digits), for less: the date and time of day are formatted once per second, and only the
    microseconds per line. The
    second and its text are swapped as one tuple, so a line logged from another thread never
    pairs a new second with the old text.
    """

    __slots__ = ("_cached",)

    def __init__(self) -> None:
        self._cached = (-1, "")

    def __call__(self, logger: Any, method: str, event_dict: EventDict) -> EventDict:
        now = time.time()
        second = int(now)
        cached = self._cached
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._cached = cached
        event_dict["timestamp"] = f"{cached[1]}.{int((now - second) * 1_000_000):06d}Z"
        return event_dict


@dataclass(frozen=True, slots=True)
class _JsonLines:
    """Our JSON lines as :func:`configure_logging` set them up: where they go, what is added."""

    stream: BinaryIO
    #: Every processor of our chain before the renderer but the traceback one.
    processors: tuple[Callable[[Any, str, EventDict], EventDict], ...]
    #: The chain's last processor: while it is structlog's, structlog is configured so.
    renderer: Processor
    info_enabled: bool

    def in_force(self) -> bool:
        """Whether structlog still runs this chain (not reset, not capturing for a test)."""
        processors = structlog.get_config()["processors"]
        return bool(processors) and processors[-1] is self.renderer


#: Set by :func:`configure_logging` while our events are JSON lines written as bytes.
_json_lines: _JsonLines | None = None


class HotPathLogger:
    """``info`` for a line logged on every request: the line structlog would write, for less.

    structlog's way to a line is general: a logger proxy, a copy of the bound context, a loop
    over the processors and their checks, a lock. This runs the same processors itself and
    writes orjson's bytes, in about half the time (docs/performance.md). Where our lines are
    not JSON (a terminal), a traceback is to be rendered, or structlog is configured
    otherwise (a test capturing logs), it hands the line to
    structlog's logger of that name.

    In an event loop the lines are flushed once per turn of the loop, not once per line: at
    saturation one turn answers dozens of requests, whose lines then cost one ``write``
    system call instead of one each. Nothing else writes in between (every other line is
    flushed as it is written, after ours), and a line waits at most for the end of its turn.
    """

    __slots__ = ("_flushing", "_structlog")

    def __init__(self, name: str) -> None:
        self._structlog = structlog.get_logger(name)
        #: The loop that will flush our lines at the end of its turn, if one will.
        self._flushing: asyncio.AbstractEventLoop | None = None

    def info(self, event: str, **fields: Any) -> None:
        lines = _json_lines
        if lines is None or "exc_info" in fields or not lines.in_force():
            self._structlog.info(event, **fields)
            return
        if not lines.info_enabled:
            return
        line: EventDict = fields
        line["event"] = event
        for processor in lines.processors:
            line = processor(None, "info", line)
        lines.stream.write(orjson.dumps(line) + b"\n")
        self._flush_soon(lines.stream)

    def _flush_soon(self, stream: BinaryIO) -> None:
        flushing = self._flushing
        if flushing is not None and flushing.is_running():
            return  # this turn's flush is on its way (no loop lookup: a getpid call on 3.11)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: now
            stream.flush()
            return
        # (a loop that stopped before its turn ended, its flush with it, is forgotten)
        self._flushing = loop
        loop.call_soon(self._flush, stream)

    def _flush(self, stream: BinaryIO) -> None:
        self._flushing = None
        stream.flush()


#: Tracebacks as data, without the frames' local variables (structlog's ``dict_tracebacks``
#: writes them, each cut to 80 characters).
_DICT_TRACEBACKS = structlog.processors.ExceptionRenderer(
    ExceptionDictTransformer(show_locals=False)
)


def _json_str(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=repr).decode()


#: The stderr :func:`_buffer_stderr` replaced: were it collected, it might close the
#: descriptor our buffered stderr writes to.
_unbuffered_stderr: TextIO | None = None


def _buffer_stderr() -> None:
    """Give stderr a buffer when it has none, so that the hot path's lines can wait for the
    end of their turn and go out in one ``write``.

    With ``PYTHONUNBUFFERED=1`` (set by most container images, ours included) or ``python -u``,
    ``sys.stderr.buffer`` is the raw file: every line written to it is a system call of its
    own, whatever :class:`HotPathLogger` does. Here stderr becomes a line-buffered stream over
    a buffer on the same file descriptor, as it is without that setting: every other line
    still goes out as it is written (after ours), and ours at the end of their turn. The
    stream replaced is kept: it may own the descriptor (Python's own ``sys.__stderr__`` does
    not, a stream a test put there may), and collecting it would close that.
    """
    global _unbuffered_stderr
    raw = getattr(sys.stderr, "buffer", None)
    if not isinstance(raw, io.FileIO):
        return
    _unbuffered_stderr = sys.stderr
    sys.stderr = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(raw.fileno(), "wb", closefd=False)),
        encoding=sys.stderr.encoding,
        errors=sys.stderr.errors,
        line_buffering=True,
    )


def configure_logging(log_format: LogFormat = "auto", level: str = "info") -> None:
    """Configure structlog and the stdlib root logger to write one renderer's lines to stderr."""
    global _json_lines
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    stamped = (
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _UtcTimestamp(),
    )
    shared: list[Processor] = [*stamped]
    renderer: Processor
    if as_json:
        shared += [_DICT_TRACEBACKS]
        renderer = structlog.processors.JSONRenderer(serializer=_json_str)
    else:
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    # Our own events (one per request on the hot path) go out as bytes straight from orjson.
    own: list[Processor] = [*shared, renderer]
    factory: Any = structlog.WriteLoggerFactory(sys.stderr)
    _json_lines = None
    if as_json:
        _buffer_stderr()
    if as_json and hasattr(sys.stderr, "buffer"):
        to_bytes = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        own = [*shared, to_bytes]
        factory = structlog.BytesLoggerFactory(sys.stderr.buffer)
        info = numeric_level <= logging.INFO
        _json_lines = _JsonLines(sys.stderr.buffer, stamped, to_bytes, info)
    structlog.configure(
        processors=own,
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # aio-pika and aiormq narrate every reconnect attempt at INFO; their warnings matter.
    root.setLevel(max(numeric_level, logging.INFO))
    for noisy in ("aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(max(numeric_level, logging.WARNING))


def log_trace_ids() -> None:
    """From now on, every line logged in a sampled span carries its ``trace_id`` and
    ``span_id`` (:mod:`router.tracing.logs`): called once tracing is on, never otherwise, so
    that without it no line pays for the look-up. The processor goes into the chain in
    place, after the context variables, so loggers already in use take it too; idempotent."""
    global _json_lines
    from router.tracing.logs import add_trace_ids  # (opentelemetry: only with tracing on)

    processors = structlog.get_config()["processors"]
    if add_trace_ids not in processors:
        processors.insert(1 if processors else 0, add_trace_ids)
    lines = _json_lines
    if lines is not None and add_trace_ids not in lines.processors:
        first, *rest = lines.processors
        _json_lines = replace(lines, processors=(first, add_trace_ids, *rest))


__all__ = ["HotPathLogger", "configure_logging", "log_trace_ids"]
