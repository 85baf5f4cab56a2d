"""The ``attentive-router dlq|unrouted|invalid ...`` commands: list, show, replay, purge.

Thin over :mod:`router.deadletters`, which talks to RabbitMQ directly (not through the admin
API). Exit codes: 0 done, 1 the operation failed (RabbitMQ unreachable, no such event or
queue, some replays failed), 2 wrong usage or input (a bad filter, a bad application name).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from typing import Any

from router.cli import output
from router.deadletters import DeadLetters, Entry, Filter, Kind, Parked, Summary
from router.settings import Settings

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


# -- parsers --------------------------------------------------------------------------------


def add_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``dlq``, ``unrouted`` and ``invalid`` (each with its subcommands) to ``commands``."""
    for kind, operations in OPERATIONS.items():
        place = commands.add_parser(kind.value, help=_HELP[kind])
        place.set_defaults(run=run)
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


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run one ``dlq|unrouted|invalid`` subcommand; the exit code."""
    settings = Settings.from_env(env, amqp_url=args.amqp_url, namespace=args.namespace)
    dead = DeadLetters(settings.amqp_url.reveal(), settings.names)
    parked = dead.parked(args.command, getattr(args, "app", None))
    where = _filter(args) if args.deadletter_command != "show" else Filter()
    try:
        with output.quiet_amqp_logs():
            return asyncio.run(_call(dead, parked, where, args, settings))
    except KeyboardInterrupt:
        return output.fail("interrupted; events not yet replayed or purged stay parked", 130)


def _filter(args: argparse.Namespace) -> Filter:
    return Filter.build(
        event=args.event_type,
        company=args.company,
        message_ids=args.message_ids,
        since=args.since,
        until=args.until,
        error=args.error,
    )


async def _call(
    dead: DeadLetters, parked: Parked, where: Filter, args: argparse.Namespace, settings: Settings
) -> int:
    operation: str = args.deadletter_command
    if operation == "show":
        entry = await dead.show(parked, args.message_id)
        _print_entry(entry, reveal=args.reveal, as_json=args.json)
        return 0
    progress = output.ProgressReporter(
        f"{parked.kind}.{operation}", logger=_progress_logger(settings)
    )
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
        output.print_json({"queue": parked.queue, **summary.to_json()})
    elif operation == "replay":
        output.print_line(
            f"matched {summary.matched}, replayed {summary.replayed}, left {summary.left}, "
            f"failed {summary.failed}" + (" (dry run: nothing moved)" if summary.dry_run else "")
        )
    elif summary.dry_run:
        output.print_line(f"would purge {summary.matched} of {summary.total} (add --yes)")
    else:
        output.print_line(f"purged {summary.purged} of {summary.total} from {parked.queue}")
    return 1 if summary.failed else 0


def _progress_logger(settings: Settings) -> Any:
    """On a terminal the bar needs no logger; otherwise progress lines go to our stderr."""
    if output.isatty(sys.stderr):
        return None
    return output.stderr_logger(console=settings.log_format == "console")


# -- output ---------------------------------------------------------------------------------


def _print_list(parked: Parked, summary: Summary, *, as_json: bool) -> None:
    if as_json:
        output.print_json(
            {
                "queue": parked.queue,
                "total": summary.total,
                "matched": summary.matched,
                "entries": [entry.summary() for entry in summary.entries],
            }
        )
        return
    output.print_line(f"{summary.matched} of {summary.total} events match in {parked.queue}")
    if not summary.entries:
        return
    output.print_table(
        ["MESSAGE ID", "TYPE", "COMPANY", "ATTEMPTS", "LAST ERROR", "PARKED AT"],
        (
            [
                entry.message_id[:12],
                entry.event_type or "?",
                entry.company_id or "?",
                output.dash(entry.attempts),
                output.truncate(entry.error or entry.reason or "", _ERROR_WIDTH),
                output.dash(entry.summary()["parked_at"]),
            ]
            for entry in summary.entries
        ),
        right={3},
    )


def _print_entry(entry: Entry, *, reveal: bool, as_json: bool) -> None:
    detail = entry.detail(reveal=reveal)
    if as_json:
        output.print_json(detail)
        return
    output.print_fields(
        [
            ("message id", detail["message_id"]),
            ("type", detail["type"]),
            ("company", detail["company"]),
            ("routing key", detail["routing_key"]),
            ("attempts", detail["attempts"]),
            ("error", detail["error"]),
            ("reason", detail["reason"]),
            ("parked at", detail["parked_at"]),
            ("replays", detail["replays"]),
        ]
    )
    output.print_line("headers:")
    output.print_block(detail["headers"])
    output.print_line("payload:" + ("" if reveal else " (masked; --reveal to show)"))
    output.print_block(detail["payload"])


__all__ = ["OPERATIONS", "add_commands", "run"]
