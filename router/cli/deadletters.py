"""The ``attentive-router dlq|unrouted|invalid ...`` commands: list, show, replay, purge.

Thin over :mod:`router.deadletters`, which talks to RabbitMQ directly (not through the admin
API). Exit codes: 0 done, 1 the operation failed (RabbitMQ unreachable, no such event or
queue, some replays failed), 2 wrong usage or input (a bad filter, a bad application name).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

import orjson
import structlog

from router.deadletters import DeadLetters, Entry, Filter, Kind, NotFound, Parked, Summary
from router.errors import ConfigError, RouterError
from router.settings import Settings

PROG = "attentive-router"
#: Subcommands of each parking place (``invalid`` events cannot be replayed, only purged).
OPERATIONS: dict[Kind, tuple[str, ...]] = {
    Kind.DLQ: ("list", "show", "replay", "purge"),
    Kind.UNROUTED: ("list", "show", "replay", "purge"),
    Kind.INVALID: ("list", "show", "purge"),
}
_HELP = {
    Kind.DLQ: "an application's dead-letter queue: list, show, replay, purge",
    Kind.UNROUTED: "events no application claimed (attentive.unrouted)",
    Kind.INVALID: "authentic webhooks that could not be parsed (attentive.invalid)",
}
_ERROR_WIDTH = 40


# -- progress -------------------------------------------------------------------------------


class ProgressReporter:
    """A ``progress(done, total)`` callback for :class:`DeadLetters`' walks.

    On a terminal it redraws ``[#####.....] 500/1000`` on one line (at most 10 times a second)
    and ends it with a newline; otherwise it logs a structured ``progress`` line every
    ``interval`` seconds or every 10 %, whichever comes first, and at the end.
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
        self.tty = tty if tty is not None else _isatty(self._stream)
        self._logger = logger
        self._width = width
        self._redraw = redraw
        self._interval = interval
        self._clock = clock
        self._last_draw = -float("inf")  # the bar shows at once
        self._last_log = clock()  # a log line after ``interval`` or the first 10 %
        self._last_decile = 0
        self._open_line = False

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        if self.tty:
            if done >= total or now - self._last_draw >= self._redraw:
                self._draw(done, total)
                self._last_draw = now
            if done >= total:
                self.finish()
            return
        decile = done * 10 // total if total else 10
        if done >= total or decile > self._last_decile or now - self._last_log >= self._interval:
            self._log().info("progress", operation=self.operation, done=done, total=total)
            self._last_log = now
            self._last_decile = decile

    def finish(self) -> None:
        """End the bar's line (a walk can stop short of ``total`` when others took messages)."""
        if self._open_line:
            self._stream.write("\n")
            self._stream.flush()
            self._open_line = False

    def _draw(self, done: int, total: int) -> None:
        filled = self._width * done // total if total else self._width
        bar = "#" * filled + "." * (self._width - filled)
        self._stream.write(f"\r[{bar}] {done}/{total}")
        self._stream.flush()
        self._open_line = True

    def _log(self) -> Any:
        # looked up each time: the structlog configuration in force now (capture_logs too)
        return self._logger if self._logger is not None else structlog.get_logger("router.dlq")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _stderr_logger(settings: Settings) -> Any:
    """JSON lines (or console lines) on this command's stderr; the global config untouched."""
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if settings.log_format == "console"
        else structlog.processors.JSONRenderer(serializer=lambda o, **_: orjson.dumps(o).decode())
    )
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
    )


# -- parsers --------------------------------------------------------------------------------


def add_deadletter_parsers(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``dlq``, ``unrouted`` and ``invalid`` (each with its subcommands) to ``commands``."""
    for kind, operations in OPERATIONS.items():
        place = commands.add_parser(kind.value, help=_HELP[kind])
        sub = place.add_subparsers(
            dest="deadletter_command", required=True, parser_class=parser_class
        )
        for operation in operations:
            parser = sub.add_parser(operation, help=_operation_help(kind, operation))
            if kind is Kind.DLQ:
                parser.add_argument("--app", required=True, help="the application (its DLQ)")
            if operation == "show":
                parser.add_argument("message_id", metavar="MESSAGE_ID")
                parser.add_argument(
                    "--reveal", action="store_true", help="show phone numbers and emails unmasked"
                )
            else:
                _add_filters(parser)
            if operation == "replay":
                parser.add_argument(
                    "--limit",
                    type=_positive_int,
                    metavar="N",
                    help="replay at most N matching events",
                )
                parser.add_argument(
                    "--rate", type=_positive_float, metavar="N", help="at most N events per second"
                )
                parser.add_argument(
                    "--dry-run", action="store_true", help="only count what would be replayed"
                )
            if operation == "purge":
                parser.add_argument(
                    "--yes", action="store_true", help="really delete (without it: a dry run)"
                )
            parser.add_argument("--json", action="store_true", help="JSON output for scripts")
            parser.add_argument("--amqp-url", help="RabbitMQ URL (ROUTER_AMQP_URL)")
            parser.add_argument("--namespace", help="prefix of queue names (attentive)")


def _operation_help(kind: Kind, operation: str) -> str:
    match operation:
        case "list":
            return "list the parked events (nothing leaves the queue)"
        case "show":
            return "one event: headers and payload (masked unless --reveal)"
        case "replay":
            where = "the application's queue" if kind is Kind.DLQ else "attentive.events"
            return f"move matching events back to {where}"
        case _:
            return "delete matching events (a dry run without --yes)"


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--type", dest="event_type", metavar="PATTERN", help="sms.sent, sms.* or *")
    parser.add_argument("--company", metavar="ID", help="one company id")
    parser.add_argument(
        "--message-id",
        action="append",
        default=[],
        dest="message_ids",
        metavar="ID",
        help="this event (repeatable)",
    )
    parser.add_argument(
        "--since", metavar="ISO", help="parked at or after (ISO 8601, e.g. 2026-11-26T09:00Z)"
    )
    parser.add_argument("--until", metavar="ISO", help="parked at or before (ISO 8601)")
    parser.add_argument(
        "--error", metavar="TEXT", help="the last error contains TEXT (case-insensitive)"
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


# -- running --------------------------------------------------------------------------------


def run_deadletter_command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run one ``dlq|unrouted|invalid`` subcommand; the exit code."""
    try:
        settings = Settings.from_env(env, amqp_url=args.amqp_url, namespace=args.namespace)
        dead = DeadLetters(settings.amqp_url, settings.names)
        parked = dead.parked(args.command, getattr(args, "app", None))
        where = _filter(args) if args.deadletter_command != "show" else Filter()
    except RouterError as error:  # ConfigError, InvalidClaim, a malformed --since/--until
        return _fail(error, 2)
    try:
        with _quiet_amqp_logs():
            return asyncio.run(_run(dead, parked, where, args, settings))
    except NotFound as error:
        return _fail(error, 1)
    except ConfigError as error:
        return _fail(error, 2)
    except RouterError as error:
        return _fail(error, 1)
    except KeyboardInterrupt:
        return _fail("interrupted; events not yet replayed or purged stay parked", 130)


@contextlib.contextmanager
def _quiet_amqp_logs() -> Iterator[None]:
    """aiormq logs a failed connect itself; unless logging is configured, that would be a
    second, raw line next to our one-line message."""
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


def _filter(args: argparse.Namespace) -> Filter:
    return Filter.build(
        event=args.event_type,
        company=args.company,
        message_ids=args.message_ids,
        since=args.since,
        until=args.until,
        error=args.error,
    )


async def _run(
    dead: DeadLetters, parked: Parked, where: Filter, args: argparse.Namespace, settings: Settings
) -> int:
    operation: str = args.deadletter_command
    if operation == "show":
        entry = await dead.show(parked, args.message_id)
        _print_entry(entry, reveal=args.reveal, as_json=args.json)
        return 0
    progress = ProgressReporter(f"{parked.kind}.{operation}", logger=_maybe_logger(settings))
    try:
        match operation:
            case "list":
                summary = await dead.list(parked, where, progress=progress)
            case "replay":
                summary = await dead.replay(
                    parked,
                    where,
                    limit=args.limit,
                    rate=args.rate,
                    dry_run=args.dry_run,
                    progress=progress,
                )
            case "purge":
                summary = await dead.purge(parked, where, dry_run=not args.yes, progress=progress)
            case _:  # pragma: no cover
                raise AssertionError(operation)
    finally:
        progress.finish()
    if operation == "list":
        _print_list(parked, summary, as_json=args.json)
        return 0
    if args.json:
        print(orjson.dumps({"queue": parked.queue, **summary.to_json()}).decode())
    elif operation == "replay":
        print(
            f"matched {summary.matched}, replayed {summary.replayed}, left {summary.left}, "
            f"failed {summary.failed}" + (" (dry run: nothing moved)" if summary.dry_run else "")
        )
    elif summary.dry_run:
        print(f"would purge {summary.matched} of {summary.total} (add --yes)")
    else:
        print(f"purged {summary.purged} of {summary.total} from {parked.queue}")
    return 1 if summary.failed else 0


def _maybe_logger(settings: Settings) -> Any:
    """On a terminal the bar needs no logger; otherwise progress lines go to our stderr."""
    return None if _isatty(sys.stderr) else _stderr_logger(settings)


def _print_list(parked: Parked, summary: Summary, *, as_json: bool) -> None:
    if as_json:
        print(
            orjson.dumps(
                {
                    "queue": parked.queue,
                    "total": summary.total,
                    "matched": summary.matched,
                    "entries": [entry.summary() for entry in summary.entries],
                }
            ).decode()
        )
        return
    print(f"{summary.matched} of {summary.total} events match in {parked.queue}")
    if not summary.entries:
        return
    print(
        f"{'MESSAGE ID':<12}  {'TYPE':<26} {'COMPANY':<20} {'ATTEMPTS':>8}  "
        f"{'LAST ERROR':<{_ERROR_WIDTH}}  PARKED AT"
    )
    for entry in summary.entries:
        row = entry.summary()
        print(
            f"{entry.message_id[:12]:<12}  {entry.event_type or '?':<26} "
            f"{entry.company_id or '?':<20} {_dash(entry.attempts):>8}  "
            f"{_truncate(entry.error or entry.reason or '', _ERROR_WIDTH):<{_ERROR_WIDTH}}  "
            f"{row['parked_at'] or '-'}"
        )


def _print_entry(entry: Entry, *, reveal: bool, as_json: bool) -> None:
    detail = entry.detail(reveal=reveal)
    if as_json:
        print(orjson.dumps(detail).decode())
        return
    for label, value in (
        ("message id", detail["message_id"]),
        ("type", detail["type"]),
        ("company", detail["company"]),
        ("routing key", detail["routing_key"]),
        ("attempts", detail["attempts"]),
        ("error", detail["error"]),
        ("reason", detail["reason"]),
        ("parked at", detail["parked_at"]),
        ("replays", detail["replays"]),
    ):
        print(f"{label + ':':<13}{_dash(value)}")
    print("headers:")
    print(_indented(detail["headers"]))
    print("payload:" + ("" if reveal else " (masked; --reveal to show)"))
    print(_indented(detail["payload"]))


def _indented(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2, default=repr).decode()


def _dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _truncate(text: str, width: int) -> str:
    text = " ".join(text.split())  # one line, whatever the error said
    return text if len(text) <= width else text[: width - 1] + "…"


def _fail(error: object, code: int) -> int:
    print(f"{PROG}: {error}", file=sys.stderr)
    return code


__all__ = ["ProgressReporter", "add_deadletter_parsers", "run_deadletter_command"]
