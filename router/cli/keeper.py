"""``attentive-router keeper``: the keeper on its own, draining the landing zones into the
parked-event store until SIGTERM or SIGINT (``serve`` runs one too, unless
``ROUTER_KEEPER=off``). With ``--metrics-port`` it serves its Prometheus metrics (and
``/healthz``) on ``ROUTER_INTERNAL_HOST`` at that port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from router.loop import run_loop
from router.observability import configure_logging
from router.parked.keeper import Keeper
from router.parked.metrics import KeeperMetrics
from router.parked.settings import KeeperSettings
from router.settings import Settings


def add_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``keeper`` to ``commands``."""
    keeper = commands.add_parser(
        "keeper", help="drain the DLQs, unrouted and invalid into the parked-event store"
    )
    keeper.set_defaults(run=run)
    keeper.add_argument("--amqp-url", help="RabbitMQ URL (ROUTER_AMQP_URL)")
    keeper.add_argument("--namespace", help="prefix of exchange and queue names (attentive)")
    keeper.add_argument("--database-url", help="the parked-event store (ROUTER_DATABASE_URL)")
    keeper.add_argument("--batch-size", type=int, help="ROUTER_KEEPER_BATCH_SIZE (500)")
    keeper.add_argument("--prefetch", type=int, help="ROUTER_KEEPER_PREFETCH (1000)")
    keeper.add_argument("--metrics-port", type=int, help="serve /metrics on this port (none)")
    keeper.add_argument("--log-format", choices=["auto", "json", "console"])


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Drain until a signal; the exit code."""
    settings = Settings.from_env(
        env,
        amqp_url=args.amqp_url,
        namespace=args.namespace,
        database_url=args.database_url,
        log_format=args.log_format,
    )
    keeper = KeeperSettings.from_env(
        env, batch_size=args.batch_size, prefetch=args.prefetch, enabled=True
    )
    configure_logging(settings.log_format, settings.log_level)
    run_loop(_keep(settings, keeper, args.metrics_port))
    return 0


async def _keep(settings: Settings, keeper_settings: KeeperSettings, port: int | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    metrics = KeeperMetrics()
    keeper = Keeper(
        settings, keeper_settings, metrics=metrics, connection_name=f"keeper {os.getpid()}"
    )
    runner = await _serve_metrics(metrics, settings.internal_host, port) if port else None
    try:
        await keeper.run(stop)
    finally:
        if runner is not None:
            await runner.cleanup()


async def _serve_metrics(metrics: KeeperMetrics, host: str, port: int) -> web.AppRunner:
    async def page(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def alive(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    app = web.Application()
    app.router.add_get("/metrics", page)
    app.router.add_get("/healthz", alive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


__all__ = ["add_commands", "run"]
