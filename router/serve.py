"""``attentive-router serve``: the webhook listener, the internal listener (``/metrics``,
``/readyz``, ``/healthz``), with a token the admin listener, and (unless ``ROUTER_KEEPER=off``)
the keeper, which drains the landing zones into the parked-event store
(:mod:`router.parked.keeper`; its metrics are on the internal listener's ``/metrics``).

They run in one process and one event loop; SIGTERM or SIGINT stops them together (the
keeper commits and acks what it holds first, then the ingress finishes its in-flight requests,
then its internal listener and its broker connection close; then the admin listener stops).

``--workers N`` (``ROUTER_WORKERS``) starts N such processes on one webhook port
(SO_REUSEPORT: the kernel spreads connections between them), so one machine's cores are used.
They start and stop together: a signal to the parent reaches all of them, and if one dies the
others are stopped. Only the first runs the admin listener and the keeper, and listens on the
internal port,
where it answers for every process: the others listen on Unix sockets in a directory the
parent makes for the run (and removes), which the first asks
(:mod:`router.ingress.processes`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import tempfile

import structlog
from aiohttp import web

from router.admin.app import admin_site, create_admin_app
from router.attentive.settings import AttentiveSettings
from router.ingress.processes import Processes
from router.ingress.service import Ingress
from router.loop import freeze_startup_heap, run_loop
from router.observability import configure_logging
from router.parked.keeper import Keeper
from router.parked.metrics import KeeperMetrics
from router.parked.settings import KeeperSettings
from router.settings import Settings

log = structlog.get_logger("router")


async def _stop_when_orphaned(parent: int, stop: asyncio.Event) -> None:
    """A child whose parent died (even by SIGKILL) stops too: they run and stop together."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.warning("parent_gone_stopping", parent=parent)
    stop.set()


def run(
    settings: Settings,
    keeper: KeeperSettings | None = None,
    attentive: AttentiveSettings | None = None,
) -> int:
    """Run ``settings.workers`` ingress processes (the first with a keeper, when ``keeper``
    is enabled, and the admin listener, whose console audits Attentive's webhooks when
    ``attentive`` is given) until a signal; the exit code."""
    keeper = keeper or KeeperSettings()
    if settings.workers == 1:
        run_loop(serve(settings, keeper=keeper, attentive=attentive))
        return 0
    directory = tempfile.mkdtemp(prefix="attentive-router-")  # (only our user may enter it)
    try:
        return _run_processes(settings, keeper, attentive, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _run_processes(
    settings: Settings,
    keeper: KeeperSettings,
    attentive: AttentiveSettings | None,
    directory: str,
) -> int:
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(
            target=_child,
            args=(
                settings,
                keeper,
                attentive,
                Processes(directory, settings.workers, index),
                os.getpid(),
            ),
            name=f"ingress-{index}",
        )
        for index in range(settings.workers)
    ]
    stopping = False

    def forward(signum: int, _: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    for child in children:
        child.start()
    log.info("serving_processes", workers=settings.workers, port=settings.port)
    while any(child.is_alive() for child in children):
        for child in children:
            child.join(timeout=0.2)
            if child.exitcode not in (None, 0) and not stopping:
                log.error("ingress_process_died", process=child.name, exitcode=child.exitcode)
                forward(signal.SIGTERM, None)
    failed = [c.name for c in children if c.exitcode not in (0, -signal.SIGTERM)]
    return 1 if failed and not stopping else 0


def _child(
    settings: Settings,
    keeper: KeeperSettings,
    attentive: AttentiveSettings | None,
    processes: Processes,
    parent: int,
) -> None:
    # ``parent`` comes from the parent itself: a child asking os.getppid() while it was still
    # starting up, after its parent had been killed, would watch PID 1 and never stop
    configure_logging(settings.log_format, settings.log_level)
    structlog.contextvars.bind_contextvars(process=processes.index)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards SIGTERM
    run_loop(
        serve(
            settings,
            keeper=keeper,
            attentive=attentive,
            admin=processes.first,
            processes=processes,
            parent=parent,
        )
    )


async def serve(
    settings: Settings,
    *,
    keeper: KeeperSettings | None = None,
    attentive: AttentiveSettings | None = None,
    admin: bool = True,
    reuse_port: bool = False,
    parent: int | None = None,
    processes: Processes | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or, for a child of ``serve --workers``, its parent's death);
    ``processes``: which of ``serve --workers``'s processes this is; ``admin``: the first,
    which runs the admin listener and, when ``keeper`` is enabled, the keeper."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ingress = Ingress(settings, reuse_port=reuse_port or processes is not None, processes=processes)
    # The admin listener starts first, so that /readyz answering 200 means every listener of
    # this process is up (a probe, or a script, can then use the admin API at once).
    admin_runner: web.AppRunner | None = None
    if settings.admin_enabled and admin:
        admin_app = create_admin_app(
            settings, attentive=attentive, metrics_registry=ingress.metrics.registry
        )
        admin_runner = web.AppRunner(admin_app, access_log=None)
        await admin_runner.setup()
    try:
        if admin_runner is not None:
            await admin_site(admin_runner, settings).start()
            log.info(
                "serving", listener="admin", host=settings.admin_host, port=settings.admin_port
            )
        elif not settings.admin_enabled:
            reason = "neither ROUTER_ADMIN_TOKEN nor ROUTER_ADMIN_TOKENS_FILE is set"
            log.info("admin_api_disabled", reason=reason)
        await ingress.start()
        keeping = _KeeperTask.start(settings, keeper, ingress) if admin else None
        try:
            log.info("serving", listener="webhooks", host=settings.host, port=settings.port)
            log.info("serving", listener="internal", address=ingress.internal_address)
            watchdog = asyncio.create_task(_stop_when_orphaned(parent, stop)) if parent else None
            freeze_startup_heap()  # no long collection pauses in the tail of request latency
            await stop.wait()
            if watchdog is not None:
                watchdog.cancel()
            log.info("stopping")
        finally:
            if keeping is not None:
                await keeping.stop()
            await ingress.stop()
    finally:
        if admin_runner is not None:
            await admin_runner.cleanup()


class _KeeperTask:
    """The keeper running beside the ingress, its metrics in the ingress's registry."""

    def __init__(self, keeper: Keeper) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(keeper.run(self._stop), name="keeper")
        self._task.add_done_callback(_report_end)

    @classmethod
    def start(
        cls, settings: Settings, keeper: KeeperSettings | None, ingress: Ingress
    ) -> _KeeperTask | None:
        """The keeper started, unless ``ROUTER_KEEPER=off``."""
        keeper = keeper or KeeperSettings()
        if not keeper.enabled:
            log.info("keeper_disabled", reason="ROUTER_KEEPER is off")
            return None
        metrics = KeeperMetrics(ingress.metrics.registry)
        return cls(Keeper(settings, keeper, metrics=metrics))

    async def stop(self) -> None:
        """Let it commit and ack what it holds (its own deadline bounds that), then end."""
        self._stop.set()
        await asyncio.wait({self._task})


def _report_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("keeper_failed", error=repr(task.exception()))


__all__ = ["run", "serve"]
