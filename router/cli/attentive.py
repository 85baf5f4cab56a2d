"""The ``attentive-router attentive ...`` commands: Attentive's webhooks, and the audit.

    attentive webhooks list | create | update ID | disable ID | enable ID | delete ID
    attentive audit [--admin-url URL --token TOKEN] [--router-base-url URL] [--strict]

Settings are read here, once: ``ATTENTIVE_API_TOKEN`` (required), ``ATTENTIVE_API_URL``
(and the retry knobs, see :class:`router.attentive.AttentiveSettings`); for the audit
``ROUTER_ADMIN_URL`` / ``ROUTER_ADMIN_TOKEN`` as for ``claims``. Exit codes: 0 done, 1 the
operation failed (Attentive or the admin API refused or could not be reached) or the audit
found a conflict, 2 wrong usage or input (nothing was sent).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from router.admin.client import AdminClient
from router.attentive import (
    AttentiveClient,
    AttentiveError,
    AttentiveSettings,
    InvalidWebhookInput,
    Webhook,
    resolve_events,
    subscription_url,
    validate_webhook_url,
)
from router.attentive.audit import (
    AuditClaim,
    AuditReport,
    audit,
    compact_events,
    find_source_conflicts,
    group_conflicts,
)
from router.cli import output
from router.cli.admin_api import add_admin_options, admin_client
from router.contract.events import EVENT_TYPES
from router.settings import Settings

_EVENTS_HELP = (
    "event types, patterns such as sms.* or * (all 11), space- or comma-separated; "
    "case sensitive: " + ", ".join(EVENT_TYPES)
)


# -- parsers --------------------------------------------------------------------------------


def add_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``attentive webhooks ...`` and ``attentive audit`` to ``commands``."""
    attentive = commands.add_parser(
        "attentive", help="Attentive's webhooks (its Webhooks API) and the one-application audit"
    )
    attentive.set_defaults(run=run)
    sub = attentive.add_subparsers(
        dest="attentive_command", required=True, parser_class=parser_class
    )
    webhooks = sub.add_parser("webhooks", help="list, create, update, disable, enable, delete")
    ops = webhooks.add_subparsers(dest="webhooks_command", required=True, parser_class=parser_class)

    ops.add_parser("list", help="every webhook the token can see")
    create = ops.add_parser("create", help="create a webhook (--disabled: create, then disable)")
    target = create.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="where Attentive posts (https://)")
    target.add_argument(
        "--company-id",
        metavar="ID",
        help="post to this router's subscription URL for the company (with --router-base-url)",
    )
    create.add_argument(
        "--router-base-url",
        metavar="URL",
        help="this router's public https:// base, e.g. https://hooks.example.com",
    )
    create.add_argument("--events", nargs="+", required=True, metavar="EVENT", help=_EVENTS_HELP)
    create.add_argument("--disabled", action="store_true", help="create it disabled")
    update = ops.add_parser("update", help="change a webhook's url and/or events")
    update.add_argument("id", metavar="ID")
    update.add_argument("--url", help="the new https:// URL")
    update.add_argument("--events", nargs="+", metavar="EVENT", help=_EVENTS_HELP)
    for name, text in (
        ("disable", "stop a webhook (Attentive keeps it)"),
        ("enable", "start a disabled webhook again"),
        ("delete", "delete a webhook"),
    ):
        ops.add_parser(name, help=text).add_argument("id", metavar="ID")
    for parser in ops.choices.values():
        parser.add_argument("--json", action="store_true", help="JSON output for scripts")

    check = sub.add_parser(
        "audit",
        help="event types several enabled webhooks receive (exit 1), and disagreements "
        "between Attentive's webhooks and the router's claims (warnings)",
    )
    add_admin_options(check)
    check.add_argument(
        "--router-base-url",
        metavar="URL",
        help="compare with the claims only the webhooks posting to this router",
    )
    check.add_argument("--strict", action="store_true", help="exit 1 for warnings too")
    check.add_argument(
        "--source-only", action="store_true", help="only Attentive's side: skip the claims"
    )
    check.add_argument("--json", action="store_true", help="JSON output for scripts")


# -- running --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Change:
    """What ``create`` / ``update`` were asked for, validated before anything is sent."""

    url: str | None = None
    events: tuple[str, ...] | None = None


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run one ``attentive`` subcommand; the exit code. The input is checked before the
    settings are read, and both before anything is sent."""
    change = _change(args)
    settings = AttentiveSettings.from_env(env)
    admin = _admin(args, env)
    return asyncio.run(_call(args, change, settings, admin))


def _change(args: argparse.Namespace) -> _Change:
    if args.attentive_command != "webhooks" or args.webhooks_command not in ("create", "update"):
        return _Change()
    events = resolve_events(args.events) if args.events is not None else None
    if args.webhooks_command == "update":
        if args.url is None and events is None:
            raise InvalidWebhookInput("nothing to update: give --url and/or --events")
        return _Change(validate_webhook_url(args.url) if args.url is not None else None, events)
    if args.company_id is not None:
        if not args.router_base_url:
            raise InvalidWebhookInput("--company-id needs --router-base-url")
        return _Change(subscription_url(args.router_base_url, args.company_id), events)
    if args.router_base_url:
        raise InvalidWebhookInput("--router-base-url goes with --company-id, not --url")
    return _Change(validate_webhook_url(args.url), events)


def _admin(args: argparse.Namespace, env: Mapping[str, str]) -> AdminClient | None:
    """The audit's client of the admin API (None: no audit, or only Attentive's side)."""
    if args.attentive_command != "audit":
        return None
    if args.router_base_url:
        validate_webhook_url(args.router_base_url, field="router_base_url")
    if args.source_only:
        return None
    return admin_client(args, Settings.from_env(env))


async def _call(
    args: argparse.Namespace,
    change: _Change,
    settings: AttentiveSettings,
    admin: AdminClient | None,
) -> int:
    retries = output.stderr_logger(console=output.isatty(sys.stderr))
    async with AttentiveClient(settings, logger=retries) as attentive:
        if args.attentive_command == "audit":
            return await _audit(attentive, admin, args)
        match args.webhooks_command:
            case "list":
                _print_webhooks(await attentive.list_webhooks(), as_json=args.json)
                return 0
            case "create":
                return await _create(attentive, change, args)
            case "update":
                current = await attentive.get_webhook(args.id)
                webhook = await attentive.update_webhook(
                    current.id,
                    url=change.url or current.url,
                    events=change.events or current.events,
                    disabled=not current.enabled,
                )
                await _show_changed(attentive, webhook, current, as_json=args.json)
                return 0
            case "disable" | "enable":
                current = await attentive.get_webhook(args.id)
                webhook = await attentive.update_webhook(
                    current.id,
                    url=current.url,
                    events=current.events,
                    disabled=args.webhooks_command == "disable",
                )
                await _show_changed(attentive, webhook, current, as_json=args.json)
                return 0
            case "delete":
                await attentive.delete_webhook(args.id)
                if args.json:
                    output.print_json({"deleted": args.id})
                else:
                    output.print_line(f"deleted webhook {args.id}")
                return 0
    raise AssertionError(args.webhooks_command)  # pragma: no cover


async def _create(attentive: AttentiveClient, change: _Change, args: argparse.Namespace) -> int:
    assert change.url is not None and change.events is not None
    existing = await attentive.list_webhooks()
    created = await attentive.create_webhook(change.url, change.events, existing=existing)
    webhook = created.webhook
    if created.note:
        output.note(created.note)
    if args.disabled:
        try:
            webhook = await attentive.update_webhook(
                webhook.id, url=webhook.url, events=webhook.events, disabled=True
            )
        except AttentiveError as error:  # the same kind of error, saying what was done
            raise type(error)(
                f"created webhook {webhook.id}, but could not disable it, so it is ENABLED: "
                f"{error}",
                status=error.status,
            ) from None
    await _show_changed(
        attentive,
        webhook,
        created.webhook,
        as_json=args.json,
        extra={"id_from_listing": created.id_from_listing},
    )
    output.note(
        "Attentive does not return the signing key: copy it from Attentive into ROUTER_SIGNING_KEYS"
    )
    return 0


async def _show_changed(
    attentive: AttentiveClient,
    answer: Webhook,
    before: Webhook,
    *,
    as_json: bool,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Print a created or updated webhook as listed now (create and update answers lack the
    company), and warn on stderr when it shares an event type with another enabled webhook."""
    try:
        listed: list[Webhook] | None = await attentive.list_webhooks()
    except AttentiveError as error:
        listed = None
        output.warn(f"could not list the webhooks to check for duplicates: {error}")
    now = next((w for w in listed or () if w.id == answer.id), None)
    if now is None:
        now = replace(
            answer,
            type=answer.type or before.type,
            company_id=answer.company_id or before.company_id,
        )
    if as_json:
        output.print_json({"webhook": now.to_json(), **(extra or {})})
    else:
        _print_webhooks([now], as_json=False)
    if listed is None or not now.enabled:
        return
    for conflict in group_conflicts(find_source_conflicts(listed)):
        if now.id in conflict.webhook_ids:
            output.warn(f"{conflict.describe()} (see `{output.PROG} attentive audit`)")


async def _audit(
    attentive: AttentiveClient, admin: AdminClient | None, args: argparse.Namespace
) -> int:
    webhooks = await attentive.list_webhooks()
    claims: list[AuditClaim] | None = None
    if admin is not None:
        async with admin as client:
            claims = [AuditClaim.from_admin(c) for c in await client.list_claims()]
    report = audit(webhooks, claims, router_base_url=args.router_base_url)
    code = report.exit_code(strict=args.strict)
    if args.json:
        document = {
            "webhooks": [w.to_json() for w in webhooks],
            "claims": [c.to_json() for c in claims] if claims is not None else None,
            **report.to_json(),
            "exit_code": code,
        }
        output.print_json(document)
    else:
        _print_report(report, webhooks, claims)
    return code


# -- output ---------------------------------------------------------------------------------


def _print_report(
    report: AuditReport, webhooks: Sequence[Webhook], claims: Sequence[AuditClaim] | None
) -> None:
    by_id = {w.id: w for w in webhooks}
    enabled = sum(w.enabled for w in webhooks)
    compared = f"router: {len(claims)} claims" if claims is not None else "claims not compared"
    output.print_line(
        f"Attentive: {len(webhooks)} webhooks ({enabled} enabled, "
        f"{len(webhooks) - enabled} disabled); {compared}"
    )
    for conflict in group_conflicts(report.conflicts):
        output.print_line(f"CONFLICT  {conflict.describe()}")
        for webhook_id in conflict.webhook_ids:
            webhook = by_id[webhook_id]
            output.print_line(
                f"          {webhook.id}  {_scope(webhook.company_id)}  {webhook.url}"
            )
    for warning in report.warnings:
        output.print_line(f"warning   {warning.describe()}")
    if report.elsewhere:
        output.print_line(
            f"note      {output.plural(len(report.elsewhere), 'enabled webhook')} "
            f"{'posts' if len(report.elsewhere) == 1 else 'post'} elsewhere than the router "
            f"({', '.join(report.elsewhere)}): counted for conflicts only"
        )
    conflicts, warnings = len(report.conflicts), len(report.warnings)
    if not conflicts and not warnings:
        output.print_line("ok: every event type goes to at most one enabled webhook per company")
    else:
        output.print_line(
            f"{output.plural(conflicts, 'conflict')}, {output.plural(warnings, 'warning')}"
        )


def _print_webhooks(webhooks: Sequence[Webhook], *, as_json: bool) -> None:
    if as_json:
        output.print_json({"webhooks": [w.to_json() for w in webhooks]})
        return
    rows = [
        [
            w.id,
            w.type or "-",
            "enabled" if w.enabled else "disabled",
            w.company_id or "(all)",
            w.url,
            ", ".join(compact_events(w.events)),
        ]
        for w in webhooks
    ]
    output.print_table(["ID", "TYPE", "STATUS", "COMPANY", "URL", "EVENTS"], rows)


def _scope(company: str | None) -> str:
    return f"company {company}" if company is not None else "every company"


__all__ = ["add_commands", "run"]
