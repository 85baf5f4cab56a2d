"""The ``attentive-router`` command: parse arguments, build settings, call the library.

Each command module (``claims``, ``apps``, ``deadletters``, ``jobs``, ``keeper``, ``db``,
``attentive``, ``sendtest``, ``queues``, ``contract``) adds its parsers and its
``run(args, env)``; this module builds the parser, runs the command and, when it raises, ends
it in one line with the exit code of the error's kind (:data:`router.errors.KINDS`): 0 done,
1 the operation failed (or was refused), 2 wrong usage, configuration or input.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import NoReturn

from router.attentive.settings import TOKEN_VARIABLE
from router.cli import (
    apps,
    attentive,
    claims,
    contract,
    db,
    deadletters,
    history,
    jobs,
    keeper,
    output,
    queues,
    sendtest,
)
from router.errors import RouterError
from router.settings import Settings, parse_keys

PROG = output.PROG


class OneLineParser(argparse.ArgumentParser):
    """argparse, but wrong usage is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    serve = commands.add_parser("serve", help="run the webhook ingress")
    serve.set_defaults(run=lambda args, _: _serve(args))
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

    sendtest.add_commands(commands, OneLineParser)
    claims.add_commands(commands, OneLineParser)
    apps.add_commands(commands, OneLineParser)
    deadletters.add_commands(commands, OneLineParser)
    attentive.add_commands(commands, OneLineParser)

    worker = commands.add_parser("worker", help="run a consumer worker: MODULE:OBJECT")
    worker.set_defaults(run=_worker)
    worker.add_argument("target", metavar="MODULE:OBJECT", help="e.g. consumers.sms_audit:worker")
    worker.add_argument("--prefetch", type=int, help="deliveries in flight (WORKER_PREFETCH)")
    worker.add_argument(
        "--metrics-port", type=int, help="serve /metrics here (WORKER_METRICS_PORT)"
    )
    worker.add_argument("--log-format", choices=["auto", "json", "console"])

    queues.add_commands(commands, OneLineParser)
    keeper.add_commands(commands, OneLineParser)
    db.add_commands(commands, OneLineParser)
    jobs.add_commands(commands, OneLineParser)
    history.add_commands(commands, OneLineParser)
    contract.add_commands(commands, OneLineParser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attentive-router`` console script."""
    args = _build_parser().parse_args(argv)
    try:
        code: int = args.run(args, os.environ)
    except RouterError as error:
        return output.report(error, secrets=_secrets(os.environ))
    except KeyboardInterrupt:
        return output.fail("interrupted", 130)
    return code


def _secrets(env: Mapping[str, str]) -> tuple[str, ...]:
    """What no error line may show, whatever a library put in its message."""
    token = env.get(TOKEN_VARIABLE, "").strip()
    return (token,) if token else ()


def _worker(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from consumers.runtime.cli import run_worker_command

    return run_worker_command(args, env)


def _serve(args: argparse.Namespace) -> int:
    import structlog

    from router.attentive.settings import AttentiveSettings
    from router.observability import configure_logging
    from router.parked.settings import KeeperSettings
    from router.serve import run

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
    # The console's Attentive page needs the token; without it, the page is not offered.
    attentive = AttentiveSettings.from_env(os.environ) if os.environ.get(TOKEN_VARIABLE) else None
    return run(settings, KeeperSettings.from_env(os.environ), attentive)


__all__ = ["OneLineParser", "main"]
