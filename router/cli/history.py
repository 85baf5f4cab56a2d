"""The ``attentive-router history list|show`` commands: search the archive stream.

They read the stream on RabbitMQ (``ROUTER_AMQP_URL``) directly, from the timestamp offset
``--since``, on a connection of their own: nothing is consumed, no consumer notices.
Payloads are masked unless ``show --reveal``, which is recorded in the audit log of the
parked-event store (``ROUTER_DATABASE_URL``) first. Exit codes: 0 done, 1 failed (the broker
unreachable, no archive, no such event), 2 wrong usage or input.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from typing import Any

from router.amqp.nodes import connect_first
from router.cli import output
from router.cli.deadletters import who
from router.history import views
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
    listing.add_argument("--type", metavar="PATTERN", help="sms.sent, sms.* or *")
    listing.add_argument("--company", metavar="ID", help="one company id")
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
    for parser in (listing, show):
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
        "limit": str(getattr(args, "limit", DEFAULT_LIMIT)),
    }
    search = Search.parse(fields)
    with output.quiet_amqp_logs(), output.library_logs(settings.log_format):
        if args.history_command == "list":
            return asyncio.run(_list(settings, search, as_json=args.json))
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


__all__ = ["add_commands", "run"]
