"""What the commands print, in one place: tables, ``--json`` documents, one-line errors,
notes and warnings, progress.

stdout carries a command's result (a table or one JSON document); stderr everything else:
the one-line error that ends a failed command, notes, warnings and progress (a bar on a
terminal, structured log lines otherwise).

Much of what the commands show came from outside: an event's type and company, a handler's
error, a header, a body that was not JSON, an answer from Attentive. None of it reaches the
terminal as it is: every function here that writes text escapes control characters visibly
(:func:`escape_controls`), so ESC, CR, a newline or a bidirectional override shows as ``\\x1b``,
``\\r``, ``\\n`` or ``\\u202e`` instead of acting on the operator's terminal. ``--json``
documents stay exact JSON: a consumer parses back the very strings that came in. Commands
write only through these functions (tests/test_terminal_safety.py holds them to it).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any, TextIO

import orjson
import structlog

from router.errors import InvalidInput, codes_for

PROG = "attentive-router"


# -- text safe for a terminal ----------------------------------------------------------------

#: Characters a terminal acts on or that change what it shows, beyond the C0 controls: DEL,
#: the C1 controls (0x9b is a CSI of its own), the line and paragraph separators, and the
#: bidirectional marks, embeddings, overrides and isolates, which reorder the text around them.
_BEYOND_C0 = r"\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
#: All that :func:`escape_controls` escapes: the C0 controls (ESC, CR, LF, tab, BEL, backspace
#: ...), the above, and lone surrogates (a terminal's encoding cannot write them).
_CONTROLS = re.compile(rf"[\x00-\x1f{_BEYOND_C0}\ud800-\udfff]")
#: orjson escapes the C0 controls in strings itself; these it writes as they are.
_RAW_IN_JSON = re.compile(rf"[{_BEYOND_C0}]")
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_SPACES = re.compile(" {2,}")


def escape_controls(text: str) -> str:
    """``text`` with every control character written out as Python would (``\\x1b``, ``\\r``,
    ``\\n``, ``\\u202e``), so it shows instead of acting; printable text, accents and emoji
    stay as they are. A backslash is left alone, so escaping twice changes nothing more."""
    return _CONTROLS.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def _json_escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


# -- results on stdout ------------------------------------------------------------------------


def print_json(document: object, *, indent: bool = False) -> None:
    """One JSON document on stdout (one line unless ``indent``)."""
    print(to_json(document, indent=indent))


def to_json(value: object, *, indent: bool = False) -> str:
    """``value`` as JSON text; what JSON cannot hold is shown by its ``repr``. No control
    character is written raw: those orjson leaves in strings become ``\\u`` escapes, which a
    JSON parser reads back as the same characters."""
    option = orjson.OPT_INDENT_2 if indent else 0
    text = orjson.dumps(value, option=option, default=repr).decode()
    return _RAW_IN_JSON.sub(_json_escaped, text)


def print_line(text: str = "", *, err: bool = False) -> None:
    """One line of text on stdout (on stderr with ``err``), control characters escaped."""
    print(escape_controls(text), file=sys.stderr if err else sys.stdout)


def print_document(text: str) -> None:
    """A document the router generated (Markdown, YAML) on stdout, line by line, each line's
    control characters escaped."""
    for line in text.splitlines():
        print_line(line)


def print_fields(fields: Iterable[tuple[str, object]]) -> None:
    """``label: value`` lines, the values aligned, ``-`` for nothing (the head of a ``show``)."""
    pairs = [(f"{label}:", dash(value)) for label, value in fields]
    width = max((len(label) for label, _ in pairs), default=0) + 1
    for label, value in pairs:
        print_line(f"{label:<{width}}{value}")


def print_block(value: object) -> None:
    """A value under a heading: text on one line, anything else as indented JSON."""
    if isinstance(value, str):
        print_line(value)
        return
    for line in to_json(value, indent=True).split("\n"):
        print_line(line)


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, right: Collection[int] = ()
) -> None:
    """Columns as wide as their widest cell, two spaces apart, the last one not padded;
    the columns whose index is in ``right`` (counts, ids) aligned right. Every cell has its
    control characters escaped."""
    table = [[escape_controls(cell) for cell in row] for row in (headers, *rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers) - 1)]
    for row in table:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        print("  ".join([*cells, row[-1]]))


def dash(value: object) -> str:
    """A table cell or field: ``-`` for nothing."""
    return "-" if value is None or value == "" else str(value)


def truncate(text: str, width: int) -> str:
    """``text`` on one line (control characters escaped, runs of spaces as one), cut to
    ``width`` characters with an ellipsis."""
    text = _SPACES.sub(" ", escape_controls(text)).strip(" ")
    return text if len(text) <= width else text[: width - 1] + "…"


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# -- messages on stderr -----------------------------------------------------------------------


def note(text: str) -> None:
    print_line(f"note: {text}", err=True)


def warn(text: str) -> None:
    print_line(f"warning: {text}", err=True)


def fail(error: BaseException | str, code: int, *, secrets: Iterable[str] = ()) -> int:
    """End a command: ``attentive-router: <error>`` on stderr, without any of ``secrets``;
    returns ``code``. An input error names its field as the command's flag."""
    text = error if isinstance(error, str) else describe(error)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    print_line(f"{PROG}: {text}", err=True)
    return code


def report(error: BaseException, *, secrets: Iterable[str] = ()) -> int:
    """End a command on ``error``: its one line, and the exit code of its kind."""
    return fail(error, codes_for(error).exit_code, secrets=secrets)


def describe(error: BaseException) -> str:
    """The error's message, with the input it is about named as a flag (``--router-base-url``)."""
    if isinstance(error, InvalidInput) and error.field:
        return f"--{error.field.replace('_', '-')} {error.problem}"
    return str(error)


@contextlib.contextmanager
def quiet_amqp_logs() -> Iterator[None]:
    """aiormq logs a failed connect itself; unless logging is configured, that would be a
    second, raw line next to the command's one-line error."""
    if logging.getLogger().handlers:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("aiormq", "aio_pika")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def console_logs(log_format: str) -> bool:
    """Whether log lines on stderr are console lines (else JSON): ``--log-format``'s choice,
    or (``auto``) whether stderr is a terminal."""
    return log_format == "console" or (log_format == "auto" and isatty(sys.stderr))


@contextlib.contextmanager
def library_logs(log_format: str) -> Iterator[None]:
    """While a command runs library code that logs (a job's runner), its warnings and errors
    go to this command's stderr, rendered as :func:`stderr_logger` renders (its info lines,
    which would break a progress bar or a ``--json`` document, are dropped); the structlog
    configuration is restored after."""
    saved = structlog.get_config()
    structlog.configure(
        processors=_processors(console=console_logs(log_format)),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**saved)


def stderr_logger(*, console: bool) -> Any:
    """Log lines on this command's stderr (console lines or JSON, control characters escaped
    either way); the global config untouched."""
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr), processors=_processors(console=console)
    )


def _processors(*, console: bool) -> list[Any]:
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if console
        else structlog.processors.JSONRenderer(serializer=lambda o, **_: to_json(o))
    )
    return [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        renderer,
        _escape_rendered,
    ]


def _escape_rendered(_: Any, __: str, rendered: Any) -> str:
    """The line the renderer made (on a terminal it shows values by their ``repr``, which
    escapes them already) with what is left raw, the event's name for one, escaped."""
    return "\n".join(escape_controls(part) for part in str(rendered).split("\n"))


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- progress ---------------------------------------------------------------------------------


def progress_reporter(operation: str, log_format: str) -> ProgressReporter:
    """A bar on a terminal; otherwise progress lines on this command's stderr."""
    logger = None if isatty(sys.stderr) else stderr_logger(console=console_logs(log_format))
    return ProgressReporter(operation, logger=logger)


class ProgressReporter:
    """A ``progress(done, total)`` callback for long operations (a replay or purge job).

    On a terminal it redraws ``[#####.....] 500/1000`` on one line (at most 10 times a second;
    with ``rate`` and ``eta`` when given: ``  250/s  ETA 0:02``) and ends it with a newline;
    otherwise it logs a structured ``progress`` line (``rate``, ``eta_seconds`` too when given)
    every ``interval`` seconds or every 10 %, whichever comes first, and at the end.
    """

    def __init__(
        self,
        operation: str,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        logger: Any = None,
        width: int = 30,
        redraw: float = 0.1,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.operation = operation
        self._stream = stream if stream is not None else sys.stderr
        self.tty = tty if tty is not None else isatty(self._stream)
        self._logger = logger
        self._width = width
        self._redraw = redraw
        self._interval = interval
        self._clock = clock
        self._last_draw = -float("inf")  # the bar shows at once
        self._last_log = clock()  # a log line after ``interval`` or the first 10 %
        self._last_decile = 0
        self._open_line = False
        self._drawn = 0

    def __call__(
        self, done: int, total: int, *, rate: float | None = None, eta: float | None = None
    ) -> None:
        """Report ``done`` of ``total``; ``rate`` (a second) and ``eta`` (seconds) if known."""
        now = self._clock()
        if self.tty:
            if done >= total or now - self._last_draw >= self._redraw:
                self._draw(done, total, _speed(rate, eta))
                self._last_draw = now
            if done >= total:
                self.finish()
            return
        decile = done * 10 // total if total else 10
        if done >= total or decile > self._last_decile or now - self._last_log >= self._interval:
            extra: dict[str, float] = {}
            if rate is not None:
                extra["rate"] = round(rate, 1)
            if eta is not None:
                extra["eta_seconds"] = round(eta, 1)
            self._log().info("progress", operation=self.operation, done=done, total=total, **extra)
            self._last_log = now
            self._last_decile = decile

    def finish(self) -> None:
        """End the bar's line (a walk can stop short of ``total`` when others took messages)."""
        if self._open_line:
            self._stream.write("\n")
            self._stream.flush()
            self._open_line = False

    def _draw(self, done: int, total: int, speed: str) -> None:
        filled = min(self._width * done // total if total else self._width, self._width)
        bar = "#" * filled + "." * (self._width - filled)
        line = f"[{bar}] {done}/{total}{speed}"
        # spaces over what a longer line before left
        self._stream.write(f"\r{line}{' ' * max(self._drawn - len(line), 0)}")
        self._stream.flush()
        self._drawn = len(line)
        self._open_line = True

    def _log(self) -> Any:
        # looked up each time: the structlog configuration in force now (capture_logs too)
        return self._logger if self._logger is not None else structlog.get_logger("router.cli")


def _speed(rate: float | None, eta: float | None) -> str:
    """``  250/s  ETA 0:02`` (what is known of it)."""
    text = ""
    if rate is not None:
        text += f"  {rate:.0f}/s" if rate >= 10 else f"  {rate:.1f}/s"
    if eta is not None:
        minutes, seconds = divmod(int(eta + 0.5), 60)
        hours, minutes = divmod(minutes, 60)
        text += (
            f"  ETA {hours}:{minutes:02d}:{seconds:02d}"
            if hours
            else f"  ETA {minutes}:{seconds:02d}"
        )
    return text


__all__ = [
    "PROG",
    "ProgressReporter",
    "console_logs",
    "dash",
    "describe",
    "escape_controls",
    "fail",
    "isatty",
    "library_logs",
    "note",
    "plural",
    "print_block",
    "print_document",
    "print_fields",
    "print_json",
    "print_line",
    "print_table",
    "progress_reporter",
    "quiet_amqp_logs",
    "report",
    "stderr_logger",
    "to_json",
    "truncate",
    "warn",
]
