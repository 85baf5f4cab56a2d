"""The ``attentive-router`` command: parse arguments, build settings, call the library.

Exit codes: 0 done, 1 the operation failed (or was refused), 2 wrong usage, configuration or
input.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from router.contract.events import EVENT_TYPES
from router.contract.examples import DEFAULT_COMPANY_ID
from router.errors import ConfigError, InvalidClaim, RouterError
from router.settings import Settings, parse_keys

PROG = "attentive-router"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but wrong usage is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    serve = commands.add_parser("serve", help="run the webhook ingress")
    serve.add_argument("--host", help="address to listen on (ROUTER_HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port to listen on (ROUTER_PORT, default 8080)")
    serve.add_argument(
        "--workers", type=int, help="ingress processes sharing the port (ROUTER_WORKERS, 1)"
    )
    serve.add_argument("--amqp-url", help="RabbitMQ URL (ROUTER_AMQP_URL)")
    serve.add_argument(
        "--signing-key",
        action="append",
        dest="signing_keys",
        help="Attentive signing key; repeat for several (ROUTER_SIGNING_KEYS, comma-separated)",
    )
    serve.add_argument("--max-body-bytes", type=int, help="ROUTER_MAX_BODY_BYTES (256 KiB)")
    serve.add_argument("--confirm-timeout", type=float, help="ROUTER_CONFIRM_TIMEOUT (5 s)")
    serve.add_argument("--namespace", help="prefix of exchange and queue names (attentive)")
    serve.add_argument("--log-format", choices=["auto", "json", "console"])
    serve.add_argument("--database-url", help="where claims persist (ROUTER_DATABASE_URL)")
    serve.add_argument("--admin-host", help="admin API address (ROUTER_ADMIN_HOST, 127.0.0.1)")
    serve.add_argument("--admin-port", type=int, help="admin API port (ROUTER_ADMIN_PORT, 8081)")

    send = commands.add_parser("send-test", help="sign and post example webhooks")
    send.add_argument("event_type", nargs="?", help="one of: " + ", ".join(EVENT_TYPES))
    send.add_argument("--all", action="store_true", help="send one event of each of the 11 types")
    send.add_argument(
        "--url",
        default="http://127.0.0.1:8080/webhooks/attentive",
        help="the ingress webhook URL (default %(default)s)",
    )
    send.add_argument("--company-id", default=DEFAULT_COMPANY_ID)
    send.add_argument("--signing-key", help="default: the first of ROUTER_SIGNING_KEYS")

    _add_claims_parser(commands)
    from router.cli.deadletters import add_deadletter_parsers

    add_deadletter_parsers(commands, OneLineParser)
    from router.cli.attentive import add_attentive_parser

    add_attentive_parser(commands, OneLineParser)

    worker = commands.add_parser("worker", help="run a consumer worker: MODULE:OBJECT")
    worker.add_argument("target", metavar="MODULE:OBJECT", help="e.g. consumers.sms_audit:worker")
    worker.add_argument("--prefetch", type=int, help="deliveries in flight (WORKER_PREFETCH)")
    worker.add_argument(
        "--metrics-port", type=int, help="serve /metrics here (WORKER_METRICS_PORT)"
    )
    worker.add_argument("--log-format", choices=["auto", "json", "console"])

    queues = commands.add_parser("queues", help="message counts of the router's queues")
    queues.add_argument("--amqp-url", help="RabbitMQ URL (ROUTER_AMQP_URL)")
    queues.add_argument("--namespace", help="prefix of exchange and queue names (attentive)")
    queues.add_argument(
        "--app", action="append", default=[], help="also this application's queue (repeatable)"
    )
    return parser


def _add_claims_parser(commands: Any) -> None:
    claims = commands.add_parser("claims", help="who owns which events (the admin API)")
    sub = claims.add_subparsers(dest="claims_command", required=True, parser_class=OneLineParser)

    def admin_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--admin-url", help="default ROUTER_ADMIN_URL or http://127.0.0.1:8081")
        parser.add_argument("--token", help="admin token (default ROUTER_ADMIN_TOKEN)")
        parser.add_argument("--json", action="store_true", help="JSON output for scripts")

    listing = sub.add_parser("list", help="every claim")
    listing.add_argument("--app", help="only this application's claims")
    admin_options(listing)
    add = sub.add_parser("add", help="claim event patterns for an application")
    add.add_argument("app")
    add.add_argument("events", nargs="+", metavar="EVENT", help="sms.subscribed, sms.* or *")
    add.add_argument("--company", help="one company id (default: all companies)")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attentive-router`` console script."""
    args = _build_parser().parse_args(argv)
    try:
        match args.command:
            case "serve":
                return _serve(args)
            case "send-test":
                return _send_test(args)
            case "queues":
                return _queues(args)
            case "worker":
                from consumers.runtime.cli import run_worker_command

                return run_worker_command(args, os.environ)
            case "dlq" | "unrouted" | "invalid":
                from router.cli.deadletters import run_deadletter_command

                return run_deadletter_command(args, os.environ)
            case "attentive":
                from router.cli.attentive import run_attentive_command

                return run_attentive_command(args, os.environ)
            case "claims":
                from router.cli.claims import run_claims_command

                return run_claims_command(args, os.environ)
    except (ConfigError, InvalidClaim) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    except RouterError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover


def _serve(args: argparse.Namespace) -> int:
    import structlog

    from router.ingress.service import run
    from router.observability import configure_logging

    keys = tuple(k for raw in args.signing_keys or () for k in parse_keys(raw)) or None
    settings = Settings.from_env(
        os.environ,
        host=args.host,
        port=args.port,
        workers=args.workers,
        amqp_url=args.amqp_url,
        signing_keys=keys,
        max_body_bytes=args.max_body_bytes,
        confirm_timeout=args.confirm_timeout,
        namespace=args.namespace,
        log_format=args.log_format,
        database_url=args.database_url,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
    )
    settings.require_signing_keys()
    configure_logging(settings.log_format, settings.log_level)
    structlog.get_logger("router").info(
        "starting", signing_keys=len(settings.signing_keys), namespace=settings.namespace
    )
    return run(settings)


def _send_test(args: argparse.Namespace) -> int:
    from router.cli.sendtest import send_examples

    if args.all == (args.event_type is not None):
        raise ConfigError("give one EVENT_TYPE or --all")
    if args.event_type is not None and args.event_type not in EVENT_TYPES:
        raise ConfigError(
            f"unknown event type {args.event_type!r}; choose one of: {', '.join(EVENT_TYPES)}"
        )
    key = args.signing_key or next(iter(Settings.from_env(os.environ).signing_keys), None)
    if not key:
        raise ConfigError("no signing key: pass --signing-key or set ROUTER_SIGNING_KEYS")
    types = EVENT_TYPES if args.all else (args.event_type,)
    results = asyncio.run(
        send_examples(args.url, types, signing_key=key, company_id=args.company_id)
    )
    for result in results:
        print(f"{result.event_type:<26} {result.status}  {result.body}")
    return 0 if all(result.ok for result in results) else 1


def _queues(args: argparse.Namespace) -> int:
    from router.amqp.depths import queue_depths

    settings = Settings.from_env(os.environ, amqp_url=args.amqp_url, namespace=args.namespace)
    depths = asyncio.run(queue_depths(settings.amqp_url, settings.names, apps=args.app))
    for queue, count in depths.items():
        print(f"{queue:<40} {count:>8}")
    return 0


__all__ = ["OneLineParser", "main"]
