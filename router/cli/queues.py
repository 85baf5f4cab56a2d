"""``attentive-router queues``: how many messages wait in the router's queues."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from typing import Any

from router.amqp.depths import queue_depths
from router.cli import output
from router.settings import Settings


def add_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``queues`` to ``commands``."""
    queues = commands.add_parser("queues", help="message counts of the router's queues")
    queues.set_defaults(run=run)
    queues.add_argument("--amqp-url", help="RabbitMQ URL (ROUTER_AMQP_URL)")
    queues.add_argument("--namespace", help="prefix of exchange and queue names (attentive)")
    queues.add_argument(
        "--app", action="append", default=[], help="also this application's queue (repeatable)"
    )


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Print each queue's message count; the exit code."""
    settings = Settings.from_env(env, amqp_url=args.amqp_url, namespace=args.namespace)
    depths = asyncio.run(queue_depths(settings.amqp_url.reveal(), settings.names, apps=args.app))
    for queue, count in depths.items():
        output.print_line(f"{queue:<40} {count:>8}")
    return 0


__all__ = ["add_commands", "run"]
