"""The ``attentive-router apps ...`` commands: pause and resume applications by hand, and list
them, through the admin API.

Exit codes: 0 done (also a pause of a paused application, or a resume of a running one: the
command says so), 1 the admin API refused or could not be reached, 2 wrong usage or a malformed
application name. A pause RabbitMQ could not be told of is still done (stored: every worker
takes it at its next look at the router): exit 0, with a warning.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from typing import Any

from router.admin.client import AdminClient
from router.apps.model import check_app, check_reason
from router.cli import output
from router.cli.admin_api import add_admin_options, admin_client
from router.cli.deadletters import who
from router.settings import Settings


def add_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``apps list | pause APP [--reason TEXT] | resume APP`` to ``commands``."""
    apps = commands.add_parser(
        "apps", help="pause and resume applications' workers by hand (the admin API)"
    )
    apps.set_defaults(run=run)
    sub = apps.add_subparsers(dest="apps_command", required=True, parser_class=parser_class)

    def options(parser: argparse.ArgumentParser) -> None:
        add_admin_options(parser)
        parser.add_argument("--json", action="store_true", help="JSON output for scripts")

    options(sub.add_parser("list", help="every application: paused or not, breaker, queue"))
    pause = sub.add_parser("pause", help="stop every worker of APP taking events (they wait)")
    pause.add_argument("app")
    pause.add_argument("--reason", default="", help="why, for the others on call and the audit")
    options(pause)
    resume = sub.add_parser("resume", help="let the workers of APP take events again")
    resume.add_argument("app")
    options(resume)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run one ``apps`` subcommand; the exit code."""
    if args.apps_command != "list":
        check_app(args.app)
    if args.apps_command == "pause":
        check_reason(args.reason)
    settings = Settings.from_env(env)
    return asyncio.run(_call(args, admin_client(args, settings)))


async def _call(args: argparse.Namespace, client: AdminClient) -> int:
    async with client as admin:
        match args.apps_command:
            case "list":
                apps = await admin.list_apps()
                if args.json:
                    output.print_json({"apps": apps})
                else:
                    _print_apps(apps)
            case "pause":
                _print_change(
                    await admin.change_app(args.app, "pause", reason=args.reason, by=who()),
                    args.json,
                )
            case "resume":
                _print_change(await admin.change_app(args.app, "resume", by=who()), args.json)
    return 0


def _print_apps(apps: list[dict[str, Any]]) -> None:
    if not apps:
        output.note("no application holds a claim or was ever paused")
        return
    output.print_table(
        ["APPLICATION", "STATE", "SINCE", "BY", "BREAKER", "QUEUED", "CONSUMERS", "REASON"],
        (
            [
                app["app"],
                "paused" if app["paused"] else "running",
                output.dash(app["since"]),
                output.dash(app["by"]),
                app["breaker"],
                *_queue(app["queue"]),
                output.truncate(app["reason"], 60) or "-",
            ]
            for app in apps
        ),
        right={5, 6},
    )


def _queue(queue: dict[str, int] | None) -> tuple[str, str]:
    if queue is None:
        return "-", "-"
    return f"{queue['messages']:,}", str(queue["consumers"])


def _print_change(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        output.print_json(answer)
    else:
        output.print_line(_said(answer))
    if answer.get("warning"):
        output.warn(answer["warning"])


def _said(answer: dict[str, Any]) -> str:
    """What a pause or resume did, in one line."""
    app, since, by = answer["app"], answer["since"], answer["by"]
    why = f": {output.truncate(answer['reason'], 200)}" if answer["reason"] else ""
    if not answer["paused"]:
        return f"resumed {app}" if answer["changed"] else f"{app} was not paused: nothing to resume"
    if answer["changed"]:
        return f"paused {app}{why} (its events wait in its queue until: apps resume {app})"
    return f"{app} was already paused since {since} by {by}{why}"


__all__ = ["add_commands", "run"]
