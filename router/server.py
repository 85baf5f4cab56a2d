"""``attentive-router serve``: the webhook listener and, with a token, the admin listener.

Both run in one process and one event loop; SIGTERM or SIGINT stops them together (the
ingress finishes its in-flight requests first, then the broker connection closes).

``--workers N`` (``ROUTER_WORKERS``) starts N such processes on one port (SO_REUSEPORT: the
kernel spreads connections between them), so one machine's cores are used. They start and
stop together: a signal to the parent reaches all of them, and if one dies the others are
stopped. Only the first runs the admin listener.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from typing import Any

import structlog
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from router.admin import create_admin_app
from router.ingress import Handler, create_app, webhooks_first
from router.loop import freeze_startup_heap, run_loop
from router.observability import configure_logging
from router.settings import Settings

log = structlog.get_logger("router")

#: Seconds in-flight requests get to finish on shutdown.
SHUTDOWN_TIMEOUT = 15.0


def ingress_runner(
    settings: Settings, *, connection_name: str = "attentive-router"
) -> web.AppRunner:
    """The runner of the webhook listener: the ingress app (whose handler gives a body
    ``settings.body_timeout``), on connections that must send each request's line and headers
    within ``settings.header_timeout`` (see :class:`_HeadDeadlineHandler`)."""
    return IngressRunner(
        create_app(settings, connection_name=connection_name),
        header_timeout=settings.header_timeout,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )


class IngressRunner(web.AppRunner):
    """An AppRunner for the ingress app: webhooks go to its receiver first
    (:func:`~router.ingress.webhooks_first`), on :class:`_HeadDeadlineHandler` connections."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        handler = webhooks_first(self.app, made.request_handler)
        return _HeadDeadlineServer(made, handler, self._header_timeout)


class _HeadDeadlineServer(web.Server):
    """The server aiohttp made for the app, with another request handler, making connections
    with a head deadline."""

    def __init__(self, made: web.Server, handler: Handler, header_timeout: float) -> None:
        super().__init__(
            handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )
        self._header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return _HeadDeadlineHandler(
            self, loop=self._loop, header_timeout=self._header_timeout, **self._kwargs
        )


class _HeadDeadlineHandler(RequestHandler):
    """aiohttp's connection, closed when a request head arrives too slowly (slowloris).

    aiohttp has no header or body timeout. Its one timer, ``keepalive_timeout`` (3630 s by
    default), closes a connection that has not delivered a complete request head that long
    after it opened or after its last answer; lowering it would also close the idle pooled
    connections of a proxy in front (nginx keeps them 60 s). Here a connection must deliver
    a complete head within ``header_timeout`` of being opened, and each later request within
    ``header_timeout`` of its first byte, or it is closed; idle time between requests is left
    to keepalive_timeout. Bodies are the webhook handler's (``ROUTER_BODY_TIMEOUT``).

    It relies on RequestHandler internals (``_request_count``, ``_messages``); the slow-client
    tests in tests/test_hostile_input.py fail if they change.
    """

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_deadline: asyncio.TimerHandle | None = None
        #: The body of the latest request whose head arrived: until its end, bytes are body.
        self._latest_body: StreamReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:  # a complete head (or a malformed one, answered 400)
            self._disarm_head_deadline()
            self._latest_body = self._messages[-1][1] if self._messages else None
        elif data and (self._latest_body is None or self._latest_body.is_eof()):
            self._arm_head_deadline()  # the first bytes of the next request's head

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self._loop.call_later(self._header_timeout, self._head_late)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_late(self) -> None:
        self._head_deadline = None
        log.info("request_head_timeout", peer=str(self.peername), timeout=self._header_timeout)
        self.force_close()


async def _stop_when_orphaned(parent: int, stop: asyncio.Event) -> None:
    """A child whose parent died (even by SIGKILL) stops too: they run and stop together."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.warning("parent_gone_stopping", parent=parent)
    stop.set()


def run(settings: Settings) -> int:
    """Run ``settings.workers`` ingress processes until a signal; the exit code."""
    if settings.workers == 1:
        run_loop(serve(settings))
        return 0
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_child, args=(settings, index, os.getpid()), name=f"ingress-{index}")
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


def _child(settings: Settings, index: int, parent: int) -> None:
    # ``parent`` comes from the parent itself: a child asking os.getppid() while it was still
    # starting up, after its parent had been killed, would watch PID 1 and never stop
    configure_logging(settings.log_format, settings.log_level)
    structlog.contextvars.bind_contextvars(process=index)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards SIGTERM
    run_loop(serve(settings, admin=index == 0, reuse_port=True, parent=parent))


async def serve(
    settings: Settings, *, admin: bool = True, reuse_port: bool = False, parent: int | None = None
) -> None:
    """Run until SIGTERM/SIGINT (or, for a child of ``serve --workers``, its parent's death)."""
    runners: list[web.AppRunner] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        ingress = ingress_runner(settings)
        await ingress.setup()
        runners.append(ingress)
        await web.TCPSite(ingress, settings.host, settings.port, reuse_port=reuse_port).start()
        log.info("serving", listener="webhooks", host=settings.host, port=settings.port)
        if settings.admin_token and admin:
            admin_runner = web.AppRunner(create_admin_app(settings), access_log=None)
            await admin_runner.setup()
            runners.append(admin_runner)
            await web.TCPSite(admin_runner, settings.admin_host, settings.admin_port).start()
            log.info(
                "serving", listener="admin", host=settings.admin_host, port=settings.admin_port
            )
        elif not settings.admin_token:
            log.info("admin_api_disabled", reason="ROUTER_ADMIN_TOKEN is not set")
        watchdog = asyncio.create_task(_stop_when_orphaned(parent, stop)) if parent else None
        freeze_startup_heap()  # no long collection pauses in the tail of request latency
        await stop.wait()
        if watchdog is not None:
            watchdog.cancel()
        log.info("stopping")
    finally:
        for runner in runners:
            await runner.cleanup()


__all__ = ["IngressRunner", "ingress_runner", "run", "serve"]
