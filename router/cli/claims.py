"""The ``attentive-router claims ...`` commands: thin calls to the admin API and claims.check."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from router.admin.client import AdminClient
from router.claims.check import find_conflicts, load_claims_file
from router.settings import Settings


def run_claims_command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run one ``claims`` subcommand; the exit code."""
    if args.claims_command == "check":
        return _check(Path(args.file))
    settings = Settings.from_env(env, namespace=getattr(args, "namespace", None))
    url = args.admin_url or env.get("ROUTER_ADMIN_URL") or settings.admin_url
    token = args.token or settings.require_admin_token()
    return asyncio.run(_with_admin(args, url, token, settings))


async def _with_admin(args: argparse.Namespace, url: str, token: str, settings: Settings) -> int:
    async with AdminClient(url, token) as admin:
        match args.claims_command:
            case "list":
                claims = await admin.list_claims(args.app)
                _print_claims(claims, as_json=args.json)
                return 0
            case "add":
                answer = await admin.add_claims(args.app, args.events, args.company)
                if answer.granted:
                    _print_claims(answer.claims, as_json=args.json)
                    return 0
                if args.json:
                    print(orjson.dumps({"conflicts": answer.conflicts}).decode())
                for conflict in answer.conflicts:
                    print(
                        f"refused: {args.app} {conflict['wanted']} conflicts with claim "
                        f"{conflict['id']} of application {conflict['app']!r} "
                        f"({conflict['event']}, {_scope(conflict['company'])})",
                        file=sys.stderr,
                    )
                return 1
            case "remove":
                if await admin.remove_claim(args.id):
                    print(f"removed claim {args.id}")
                    return 0
                print(f"no claim {args.id}", file=sys.stderr)
                return 1
            case "rabbitmq-definitions":
                apps = {c["app"] for c in await admin.list_claims()} | set(args.app)
                return _definitions(sorted(apps), args, settings)
    raise AssertionError(args.claims_command)  # pragma: no cover


def _check(path: Path) -> int:
    specs = load_claims_file(path)
    conflicts = find_conflicts(specs)
    for conflict in conflicts:
        print(f"conflict: {conflict}", file=sys.stderr)
    if conflicts:
        return 1
    apps = len({spec.app for spec in specs})
    print(f"ok: {len(specs)} claims of {apps} applications, no conflicts")
    return 0


def _definitions(apps: list[str], args: argparse.Namespace, settings: Settings) -> int:
    from router.amqp.permissions import generate_password, rabbitmq_definitions

    passwords = {app: generate_password() for app in apps}
    document = rabbitmq_definitions(settings.names, apps, passwords=passwords, vhost=args.vhost)
    print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    lines = "".join(f"{settings.names.app_user(a)}={p}\n" for a, p in passwords.items())
    if args.credentials_out:
        out = Path(args.credentials_out)
        out.write_text(lines, encoding="utf-8")
        out.chmod(0o600)
        print(f"credentials of {len(apps)} users written to {out}", file=sys.stderr)
    else:
        sys.stderr.write(lines)
    return 0


def _scope(company: str | None) -> str:
    return f"company {company}" if company else "all companies"


def _print_claims(claims: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        print(orjson.dumps({"claims": claims}).decode())
        return
    print(f"{'ID':>5}  {'APPLICATION':<24} {'EVENTS':<28} {'COMPANY':<20} CREATED")
    for claim in claims:
        print(
            f"{claim['id']:>5}  {claim['app']:<24} {claim['event']:<28} "
            f"{claim['company'] or '(all)':<20} {claim['created_at'] or ''}"
        )


__all__ = ["run_claims_command"]
