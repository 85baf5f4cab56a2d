"""``attentive-router db upgrade | version``: the parked-event store's schema.

``upgrade`` applies the migrations the database lacks (under a lock: safe while routers run,
and when several run it at once) and prints the version after; ``version`` prints the
database's version and the one this router reads. Exit codes: 0 done, 1 the database could
not be reached or used, 2 wrong usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from typing import Any

from router.cli import output
from router.parked.open import parked_store_from_url
from router.parked.schema import LATEST_VERSION
from router.settings import Settings


def add_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``db upgrade | version`` to ``commands``."""
    db = commands.add_parser("db", help="the parked-event store's schema")
    db.set_defaults(run=run)
    sub = db.add_subparsers(dest="db_command", required=True, parser_class=parser_class)
    for name, text in (
        ("upgrade", "apply the schema migrations the database lacks"),
        ("version", "the database's schema version and this router's"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("--database-url", help="ROUTER_DATABASE_URL")
        command.add_argument("--json", action="store_true", help="JSON output for scripts")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run one ``db`` subcommand; the exit code."""
    settings = Settings.from_env(env, database_url=args.database_url)
    found = asyncio.run(_call(args.db_command, settings.database_url.reveal()))
    shown = {"database": str(settings.database_url), "version": found, "latest": LATEST_VERSION}
    if args.json:
        output.print_json(shown)
    elif args.db_command == "upgrade":
        output.print_line(f"schema version {found} (latest)")
    else:
        output.print_line(f"schema version {found} of {LATEST_VERSION} ({_state(found)})")
    return 0


def _state(found: int) -> str:
    if found == LATEST_VERSION:
        return "current"
    if found > LATEST_VERSION:
        return "newer than this router reads: upgrade the router"
    return "upgrade it: attentive-router db upgrade"


async def _call(command: str, url: str) -> int:
    store = parked_store_from_url(url)
    await store.open()
    try:
        return await (store.upgrade() if command == "upgrade" else store.schema_version())
    finally:
        await store.close()


__all__ = ["add_commands", "run"]
