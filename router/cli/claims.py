"""The ``attentive-router claims ...`` commands: thin calls to the admin API and claims.check.

Exit codes: 0 done, 1 refused (a conflicting claim, no such claim) or failed (the admin API
refused or could not be reached), 2 wrong usage, configuration or a malformed claims file.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from router.admin.client import AdminClient, AdminRequestFailed
from router.claims.check import find_conflicts, load_claims_file
from router.cli import output
from router.cli.admin_api import add_admin_options, admin_client
from router.durations import parse_span
from router.settings import Settings


def add_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``claims list | add | remove | check | rabbitmq-definitions`` to ``commands``."""
    claims = commands.add_parser("claims", help="who owns which events (the admin API)")
    claims.set_defaults(run=run)
    sub = claims.add_subparsers(dest="claims_command", required=True, parser_class=parser_class)

    def admin_options(parser: argparse.ArgumentParser) -> None:
        add_admin_options(parser)
        parser.add_argument("--json", action="store_true", help="JSON output for scripts")

    listing = sub.add_parser("list", help="every claim")
    listing.add_argument("--app", help="only this application's claims")
    admin_options(listing)
    add = sub.add_parser("add", help="claim event patterns for an application")
    add.add_argument("app")
    add.add_argument("events", nargs="+", metavar="EVENT", help="sms.subscribed, sms.* or *")
    add.add_argument("--company", help="one company id (default: all companies)")
    add.add_argument(
        "--backfill",
        type=_span,
        metavar="SPAN",
        help="also send the application these events of the archive's last SPAN (7d, 6h)",
    )
    admin_options(add)
    remove = sub.add_parser("remove", help="release a claim by id")
    remove.add_argument("id", type=int)
    admin_options(remove)
    check = sub.add_parser("check", help="find conflicts in a TOML/YAML file of intended claims")
    check.add_argument("file")
    definitions = sub.add_parser(
        "rabbitmq-definitions",
        help="RabbitMQ users and permissions so applications cannot bypass their claims",
    )
    definitions.add_argument(
        "--app", action="append", default=[], help="also for this application (repeatable)"
    )
    definitions.add_argument("--credentials-out", help="write app=password lines to this file")
    definitions.add_argument("--vhost", default="/")
    definitions.add_argument("--namespace", help="prefix of queue names (attentive)")
    admin_options(definitions)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run one ``claims`` subcommand; the exit code."""
    if args.claims_command == "check":
        return _check(Path(args.file))
    settings = Settings.from_env(env, namespace=getattr(args, "namespace", None))
    admin = admin_client(args, settings)
    return asyncio.run(_call(args, admin, settings))


async def _call(args: argparse.Namespace, client: AdminClient, settings: Settings) -> int:
    async with client as admin:
        match args.claims_command:
            case "list":
                claims = await admin.list_claims(args.app)
                _print_claims(claims, as_json=args.json)
                return 0
            case "add":
                answer = await admin.add_claims(args.app, args.events, args.company)
                if answer.granted:
                    _print_claims(answer.claims, as_json=args.json)
                    if args.backfill:
                        return await _backfill(admin, args.app, answer.claims, args.backfill)
                    return 0
                if args.json:
                    output.print_json({"conflicts": answer.conflicts})
                for conflict in answer.conflicts:
                    output.print_line(
                        f"refused: {args.app} {conflict['wanted']} conflicts with claim "
                        f"{conflict['id']} of application {conflict['app']!r} "
                        f"({conflict['event']}, {_scope(conflict['company'])})",
                        err=True,
                    )
                return 1
            case "remove":
                if await admin.remove_claim(args.id):
                    output.print_line(f"removed claim {args.id}")
                    return 0
                output.print_line(f"no claim {args.id}", err=True)
                return 1
            case "rabbitmq-definitions":
                apps = {c["app"] for c in await admin.list_claims()} | set(args.app)
                return _definitions(sorted(apps), args, settings)
    raise AssertionError(args.claims_command)  # pragma: no cover


async def _backfill(admin: AdminClient, app: str, claims: list[dict[str, Any]], span: str) -> int:
    """A backfill job of each granted claim's events of the last ``span``; 1 when one could
    not be made (the claims stay granted)."""
    for claim in claims:
        fields = {"since": span, "type": claim["event"], "to_app": app}
        if claim["company"]:
            fields["company"] = claim["company"]
        try:
            job = await admin.backfill(**fields)
        except AdminRequestFailed as error:
            output.print_line(
                f"claim {claim['id']} granted, its backfill refused: {error}", err=True
            )
            return 1
        output.print_line(
            f"backfill job {job['id']}: {job['matched']} {claim['event']} events of the last "
            f"{span} to {app} (a keeper sends them: attentive-router jobs show {job['id']})",
            err=True,
        )
    return 0


def _span(text: str) -> str:
    """``text`` when it is a span (``7d``); else the usage error argparse reports."""
    try:
        parse_span(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _check(path: Path) -> int:
    specs = load_claims_file(path)
    conflicts = find_conflicts(specs)
    for conflict in conflicts:
        output.print_line(f"conflict: {conflict}", err=True)
    if conflicts:
        return 1
    apps = len({spec.app for spec in specs})
    output.print_line(f"ok: {len(specs)} claims of {apps} applications, no conflicts")
    return 0


def _definitions(apps: list[str], args: argparse.Namespace, settings: Settings) -> int:
    from router.claims.permissions import generate_password, rabbitmq_definitions

    passwords = {app: generate_password() for app in apps}
    document = rabbitmq_definitions(settings.names, apps, passwords=passwords, vhost=args.vhost)
    output.print_json(document, indent=True)
    lines = [f"{settings.names.app_user(a)}={p}" for a, p in passwords.items()]
    if args.credentials_out:
        out = Path(args.credentials_out)
        out.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        out.chmod(0o600)
        output.print_line(f"credentials of {len(apps)} users written to {out}", err=True)
    else:
        for line in lines:
            output.print_line(line, err=True)
    return 0


def _scope(company: str | None) -> str:
    return f"company {company}" if company else "all companies"


def _print_claims(claims: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        output.print_json({"claims": claims})
        return
    output.print_table(
        ["ID", "APPLICATION", "EVENTS", "COMPANY", "CREATED"],
        (
            [str(c["id"]), c["app"], c["event"], c["company"] or "(all)", c["created_at"] or ""]
            for c in claims
        ),
        right={0},
    )


__all__ = ["add_commands", "run"]
