"""The ``attentive-router history list|show|replay`` commands: search the archive stream,
and backfill a window of it to one application.

They read the stream on RabbitMQ (``ROUTER_AMQP_URL``) directly, from the timestamp offset
``--since``, on a connection of their own: nothing is consumed, no consumer notices.
Payloads are masked unless ``show --reveal``, which is recorded in the audit log of the
parked-event store (``ROUTER_DATABASE_URL``) first. ``replay --to-app APP`` is a backfill job
(:mod:`router.history.backfill`) in that store, followed here unless ``--detach`` (a keeper
runs it then). Exit codes: 0 done, 1 failed (the broker unreachable, no archive, no such
event, APP claims none of the events asked for, a backfill with failures), 2 wrong usage
or input.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from typing import Any

from router.amqp.nodes import connect_first
from router.claims.model import validate_app
from router.claims.open import store_from_url
from router.cli import output
from router.cli.deadletters import positive, positive_int, who
from router.cli.following import detached, follow_job, job_ended
from router.history import views
from router.history.backfill import request_backfill
from router.history.search import DEFAULT_LIMIT, MAX_LIMIT, Search, find_event, search_archive
from router.parked.open import parked_store_from_url
from router.settings import Settings

#: The head of ``show``: label, and key of :func:`router.history.views.detail`.
_SHOWN = (
    ("message id", "message_id"),
    ("type", "type"),
    ("company", "company"),
    ("routing key", "routing_key"),
    ("time", "time"),
    ("offset", "offset"),
)
_WHEN = "ISO 8601 (2026-11-26T09:00Z) or a span ago (90m, 6h, 7d)"


def add_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``history`` with ``list`` and ``show`` to ``commands``."""
    parent = commands.add_parser("history", help="search the archive of accepted events")
    parent.set_defaults(run=run)
    sub = parent.add_subparsers(dest="history_command", required=True, parser_class=parser_class)
    listing = sub.add_parser("list", help="the archived events of a window, oldest first")
    listing.add_argument("--message-id", metavar="ID", help="one message id")
    listing.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"the first N matching events ({DEFAULT_LIMIT}, at most {MAX_LIMIT})",
    )
    show = sub.add_parser("show", help="one archived event: headers and payload (masked)")
    show.add_argument("message_id", metavar="MESSAGE_ID")
    show.add_argument("--reveal", action="store_true", help="show phone numbers and emails")
    show.add_argument("--database-url", help="where a reveal is audited (ROUTER_DATABASE_URL)")
    replay = sub.add_parser(
        "replay", help="backfill: the window's events to one application's queue (a job)"
    )
    replay.add_argument(
        "--to-app", required=True, metavar="APP", help="the application (it must claim them)"
    )
    replay.add_argument("--rate", type=positive, metavar="N", help="at most N events a second")
    replay.add_argument(
        "--limit", type=positive_int, metavar="N", help="at most N events (oldest first)"
    )
    replay.add_argument("--dry-run", action="store_true", help="only count them")
    replay.add_argument(
        "--detach", action="store_true", help="create the job and leave it to a keeper"
    )
    replay.add_argument("--database-url", help="where the job is kept (ROUTER_DATABASE_URL)")
    for parser in (listing, replay):
        parser.add_argument("--type", metavar="PATTERN", help="sms.sent, sms.* or *")
        parser.add_argument("--company", metavar="ID", help="one company id")
    replay.add_argument("--message-id", metavar="ID", help="one message id")
    for parser in (listing, show, replay):
        parser.add_argument("--since", required=True, metavar="WHEN", help=f"from: {_WHEN}")
        parser.add_argument("--until", metavar="WHEN", help=f"to (else now): {_WHEN}")
        parser.add_argument("--json", action="store_true", help="JSON output for scripts")
        parser.add_argument("--amqp-url", help="RabbitMQ URL (ROUTER_AMQP_URL)")
        parser.add_argument("--namespace", help="prefix of queue names (attentive)")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run ``history list`` or ``history show``; the exit code."""
    settings = Settings.from_env(
        env,
        amqp_url=args.amqp_url,
        namespace=args.namespace,
        database_url=getattr(args, "database_url", None),
    )
    fields = {
        "since": args.since,
        "until": args.until,
        "type": getattr(args, "type", None),
        "company": getattr(args, "company", None),
        "message_id": args.message_id,
        "limit": str(args.limit) if args.history_command == "list" else None,
    }
    search = Search.parse(fields)
    with output.quiet_amqp_logs(), output.library_logs(settings.log_format):
        if args.history_command == "list":
            return asyncio.run(_list(settings, search, as_json=args.json))
        if args.history_command == "replay":
            return asyncio.run(_backfill(settings, search, args))
        return asyncio.run(_show(settings, search, args))


async def _list(settings: Settings, search: Search, *, as_json: bool) -> int:
    connection, _ = await connect_first(settings.amqp_url.reveal(), name="attentive-router cli")
    async with connection:
        found = await search_archive(connection, settings.names, search)
    if as_json:
        output.print_json(views.found_json(found))
        return 0
    more = " (more match: narrow the window or raise --limit)" if found.more else ""
    shown = output.plural(len(found.events), "event")
    output.print_line(f"{shown} of {found.scanned} read in the window, oldest first{more}")
    if found.events:
        output.print_table(
            ["TIME", "MESSAGE ID", "TYPE", "COMPANY", "OFFSET"],
            (_row(views.summary(event)) for event in found.events),
            right={4},
        )
    return 0


def _row(shown: dict[str, Any]) -> list[str]:
    return [
        output.dash(shown["time"]),
        shown["message_id"][:12] or "-",
        shown["type"] or "?",
        shown["company"] or "?",
        str(shown["offset"]),
    ]


async def _show(settings: Settings, search: Search, args: argparse.Namespace) -> int:
    connection, _ = await connect_first(settings.amqp_url.reveal(), name="attentive-router cli")
    async with connection:
        event = await find_event(connection, settings.names, search)
    if args.reveal:
        store = parked_store_from_url(settings.database_url.reveal())
        await store.open()
        try:
            logger = output.stderr_logger(console=True)
            stream = settings.names.archive_stream
            await views.record_reveal(store, who(), event, stream, logger=logger)
        finally:
            await store.close()
    detail = views.detail(event, reveal=args.reveal)
    if args.json:
        output.print_json(detail)
        return 0
    output.print_fields((label, detail[key]) for label, key in _SHOWN)
    masked = "" if args.reveal else " (masked; --reveal to show)"
    for part, note in (("headers", ""), ("payload", masked)):
        output.print_line(f"{part}:{note}")
        output.print_block(detail[part])
    return 0


async def _backfill(settings: Settings, search: Search, args: argparse.Namespace) -> int:
    app = validate_app(args.to_app)
    database = settings.database_url.reveal()
    store, claims = parked_store_from_url(database), store_from_url(database)
    await store.open()
    await claims.open()
    try:
        connection, _ = await connect_first(settings.amqp_url.reveal(), name="attentive-router cli")
        async with connection:
            wanted, plan = await request_backfill(
                connection,
                settings.names,
                search,
                app,
                await claims.list(app),
                who(),
                limit=args.limit,
                rate=args.rate,
                dry_run=args.dry_run,
            )
        job = await store.create_job(wanted)
        said = f"job {job.id}: backfill of {job.matched} events to {app}"
        if plan.unclaimed:
            said += f" ({plan.unclaimed} more match but belong to other applications)"
        if detached(job, said, args):
            return 0
        job = await follow_job(store, job, settings, claims.list)
    finally:
        await claims.close()
        await store.close()
    dry_run = f"would backfill {job.matched} events to {app} (dry run: nothing sent)"
    return job_ended(job, args, dry_run)


__all__ = ["add_commands", "run"]
