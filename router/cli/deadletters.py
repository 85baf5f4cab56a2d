"""The ``attentive-router dlq|unrouted|invalid ...`` commands: list, facets, show, replay, purge.

Thin over the parked-event store (:mod:`router.parked`, its views and jobs), which the command
opens on ``ROUTER_DATABASE_URL`` (or ``--database-url``) directly, not through the admin API.
``replay`` and ``purge`` create a job and run it here with a progress bar (rate, ETA); Ctrl-C
leaves it to a keeper, which resumes it (``attentive-router jobs show ID``). Exit codes: 0 done,
1 the operation failed (the database unreachable, no such entry, entries that failed),
2 wrong usage or input (a bad filter, a bad application name).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
from collections.abc import Mapping
from typing import Any

from router.cli import output
from router.cli.following import detached, follow_job, job_ended
from router.parked import views
from router.parked.jobs import Job, JobKind, JobRequest
from router.parked.model import ParkedEvent, Place
from router.parked.open import parked_store_from_url
from router.parked.query import DEFAULT_FACET_SIZE, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Query
from router.parked.store import ParkedStore
from router.settings import Settings

#: Subcommands of each parking place (``invalid`` events cannot be replayed, only purged).
OPERATIONS: dict[Place, tuple[str, ...]] = {
    Place.DLQ: ("list", "facets", "show", "replay", "purge"),
    Place.UNROUTED: ("list", "facets", "show", "replay", "purge"),
    Place.INVALID: ("list", "facets", "show", "purge"),
}
_HELP = {
    Place.DLQ: "an application's dead letters: list, facets, show, replay, purge",
    Place.UNROUTED: "events no application claimed (attentive.unrouted)",
    Place.INVALID: "authentic webhooks that could not be parsed (attentive.invalid)",
}
_ERROR_WIDTH = 40
#: The head of ``show``: label, and key of :func:`router.parked.views.detail`.
_SHOWN = (
    *(("id", "id"), ("message id", "message_id"), ("state", "state"), ("type", "type")),
    *(("company", "company"), ("routing key", "routing_key"), ("attempts", "attempts")),
    *(("error", "error"), ("reason", "reason"), ("parked at", "parked_at")),
    ("replays", "replays"),
)


# -- parsers --------------------------------------------------------------------------------


def add_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``dlq``, ``unrouted`` and ``invalid`` (each with its subcommands) to ``commands``."""
    for place, operations in OPERATIONS.items():
        parent = commands.add_parser(place.value, help=_HELP[place])
        parent.set_defaults(run=run)
        sub = parent.add_subparsers(
            dest="deadletter_command", required=True, parser_class=parser_class
        )
        for operation in operations:
            parser = sub.add_parser(operation, help=_operation_help(place, operation))
            if place is Place.DLQ:
                parser.add_argument("--app", required=True, help="the application (its DLQ)")
            if operation == "show":
                parser.add_argument("ref", metavar="ID", help="a message id, or an entry id")
                parser.add_argument(
                    "--reveal", action="store_true", help="show phone numbers and emails unmasked"
                )
            else:
                _add_filters(parser)
            _add_operation_options(parser, operation)
            parser.add_argument("--json", action="store_true", help="JSON output for scripts")
            parser.add_argument(
                "--database-url", help="the parked-event store (ROUTER_DATABASE_URL)"
            )
            parser.add_argument("--amqp-url", help="RabbitMQ URL, for a replay (ROUTER_AMQP_URL)")
            parser.add_argument("--namespace", help="prefix of queue names (attentive)")


def _count_option(parser: argparse.ArgumentParser, flag: str, default: int, text: str) -> None:
    """An option taking a count of 1 or more (``N``), with its default."""
    parser.add_argument(flag, type=positive_int, default=default, metavar="N", help=text)


def _add_operation_options(parser: argparse.ArgumentParser, operation: str) -> None:
    if operation == "list":
        limit = f"entries a page (newest first; {DEFAULT_PAGE_SIZE}, at most {MAX_PAGE_SIZE})"
        _count_option(parser, "--limit", DEFAULT_PAGE_SIZE, limit)
        parser.add_argument("--cursor", help="the page after the one that printed this cursor")
    if operation == "facets":
        size = f"the largest N values of each facet ({DEFAULT_FACET_SIZE})"
        _count_option(parser, "--size", DEFAULT_FACET_SIZE, size)
    if operation == "replay":
        parser.add_argument(
            "--limit", type=positive_int, metavar="N", help="replay at most N matching events"
        )
        parser.add_argument(
            "--rate", type=positive, metavar="N", help="at most N events per second"
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="only count what would be replayed"
        )
    if operation == "purge":
        parser.add_argument(
            "--yes", action="store_true", help="really purge (without it: a dry run)"
        )
    if operation in ("replay", "purge"):
        parser.add_argument(
            "--detach", action="store_true", help="create the job and leave it to a keeper"
        )


def _operation_help(place: Place, operation: str) -> str:
    match operation:
        case "list":
            return "list the parked events, newest first, a page at a time"
        case "facets":
            return "count them by type, company, error, reason and day"
        case "show":
            return "one event: headers and payload (masked unless --reveal)"
        case "replay":
            where = "the application's queue" if place is Place.DLQ else "attentive.events"
            return f"send matching events back to {where} (a job)"
        case _:
            return "purge matching events (a job; a dry run without --yes)"


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--type", dest="event", metavar="PATTERN", help="sms.sent, sms.* or *")
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
    parser.add_argument(
        "--reason", metavar="REASON", help="why it was parked: exhausted, rejected, ..."
    )


def positive(text: str) -> float:
    """A positive, finite number (argparse's error when it is not one)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def positive_int(text: str) -> int:
    value = positive(text)
    if not value.is_integer() or not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number of at least 1: {text!r}")
    return int(value)


# -- running --------------------------------------------------------------------------------


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run one ``dlq|unrouted|invalid`` subcommand; the exit code."""
    settings = Settings.from_env(
        env, database_url=args.database_url, amqp_url=args.amqp_url, namespace=args.namespace
    )
    place = Place(args.command)
    query = _query(place, args)
    store = parked_store_from_url(settings.database_url.reveal())
    following: list[Job] = []
    try:
        with output.quiet_amqp_logs(), output.library_logs(settings.log_format):
            return asyncio.run(_call(store, query, args, settings, following))
    except KeyboardInterrupt:
        if not following:
            return output.fail("interrupted", 130)
        job = following[-1].id
        output.note(
            f"detached from job {job}: it goes on in a keeper (attentive-router jobs show {job};"
            f" attentive-router jobs cancel {job} stops it)"
        )
        return 130


#: The filter options, by the name :meth:`Query.build` gives them (each option's ``dest``).
_FILTERS = ("event", "company", "message_ids", "since", "until", "error", "reason")


def _query(place: Place, args: argparse.Namespace) -> Query:
    app = getattr(args, "app", None)
    if args.deadletter_command == "show":
        return views.in_place(Query.build(place=place, app=app))
    filters = {name: getattr(args, name) for name in _FILTERS}
    return views.in_place(Query.build(place=place, app=app, **filters))


async def _call(
    store: ParkedStore,
    query: Query,
    args: argparse.Namespace,
    settings: Settings,
    following: list[Job],
) -> int:
    await store.open()
    try:
        match args.deadletter_command:
            case "list":
                return await _list(store, query, args)
            case "facets":
                return await _facets(store, query, args)
            case "show":
                return await _show(store, query, args)
            case "replay":
                kind, dry_run = JobKind.REPLAY, args.dry_run
            case _:
                kind, dry_run = JobKind.PURGE, not args.yes
        limits = {"limit": getattr(args, "limit", None), "rate": getattr(args, "rate", None)}
        request = JobRequest.build(kind, query, who(), dry_run=dry_run, **limits)
        return await _job(store, request, args, settings, following)
    finally:
        await store.close()


def who() -> str:
    """Who runs the command, as jobs and the audit log name them: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name in a bare container
        return "cli"


async def _list(store: ParkedStore, query: Query, args: argparse.Namespace) -> int:
    page = await store.page(query, args.limit, args.cursor)
    matched = await store.count(query)
    if args.json:
        output.print_json({"matched": matched, **views.page_json(page)})
        return 0
    output.print_line(f"{matched} events match in {views.where(query)}, newest first")
    if page.entries:
        output.print_table(
            ["ID", "MESSAGE ID", "TYPE", "COMPANY", "ATTEMPTS", "LAST ERROR", "PARKED AT"],
            (_row(entry) for entry in page.entries),
            right={0, 4},
        )
    if page.next_cursor is not None:
        output.print_line(f"next page: --cursor {page.next_cursor}")
    return 0


def _row(entry: ParkedEvent) -> list[str]:
    shown = views.summary(entry)
    return [
        output.dash(entry.id),
        (entry.message_id or "-")[:12],
        entry.event_type or "?",
        entry.company or "?",
        output.dash(entry.attempts),
        output.truncate(shown["error"] or entry.reason or "", _ERROR_WIDTH),
        output.dash(shown["parked_at"]),
    ]


async def _facets(store: ParkedStore, query: Query, args: argparse.Namespace) -> int:
    counted = views.facets_json(await store.facets(query, args.size))
    if args.json:
        output.print_json(counted)
        return 0
    output.print_line(f"{counted['total']} events in {views.where(query)}")
    for name in views.FACET_NAMES:
        if counted[name]:
            output.print_line()
            output.print_table(
                [name.upper(), "COUNT"],
                ([output.dash(b["value"]), str(b["count"])] for b in counted[name]),
                right={1},
            )
    return 0


async def _show(store: ParkedStore, query: Query, args: argparse.Namespace) -> int:
    entry = await views.find(store, query, args.ref)
    if args.reveal:
        await views.record_reveal(store, who(), entry, logger=output.stderr_logger(console=True))
    detail = views.detail(entry, reveal=args.reveal)
    if args.json:
        output.print_json(detail)
        return 0
    output.print_fields((label, detail[key]) for label, key in _SHOWN)
    output.print_line("headers:")
    output.print_block(detail["headers"])
    output.print_line("payload:" + ("" if args.reveal else " (masked; --reveal to show)"))
    output.print_block(detail["payload"])
    return 0


async def _job(
    store: ParkedStore,
    request: JobRequest,
    args: argparse.Namespace,
    settings: Settings,
    following: list[Job],
) -> int:
    job = await store.create_job(request)
    following.append(job)
    where = views.where(request.query)
    if detached(job, f"job {job.id}: {job.kind.value} of {job.matched} events in {where}", args):
        return 0
    job = await follow_job(store, job, settings)
    extra = "(add --yes)" if job.kind is JobKind.PURGE else "(dry run: nothing moved)"
    return job_ended(job, args, f"would {job.kind.value} {job.matched} in {where} {extra}")


__all__ = [
    "OPERATIONS",
    "add_commands",
    "positive",
    "positive_int",
    "run",
    "who",
]
