"""The ingress as one service: :class:`Ingress` owns its RabbitMQ connection, its metrics and
its two listeners, from :meth:`Ingress.start` to :meth:`Ingress.stop`: the webhook port
(:mod:`router.ingress.routes`) and the internal listener (:mod:`router.ingress.internal`).

``attentive-router serve`` (:mod:`router.serve`), ``--workers`` and the tests all run the
ingress through it. Start-up: the broker connection begins (in the background: ``/readyz``
says when it is up), then the ports listen. Shutdown: the webhook port stops listening, idle
connections close, the requests under way are answered (within :data:`SHUTDOWN_TIMEOUT`,
then dropped); then the internal listener stops (it answers probes and scrapes until then),
and only then does the broker connection close.
"""

from __future__ import annotations

import asyncio

from router.amqp.broker import Broker
from router.contract.ordering import SubjectKeys, subject_secret
from router.contract.signing import Verifier
from router.ingress.http1 import HttpServer
from router.ingress.internal import Probes
from router.ingress.limits import Limits
from router.ingress.messages import Handler
from router.ingress.metrics import Metrics
from router.ingress.processes import Processes, Siblings
from router.ingress.refused_log import RefusedLog
from router.ingress.routes import Routes
from router.ingress.webhook import WebhookReceiver
from router.observability import log_trace_ids
from router.settings import Settings
from router.tracing import start_tracing

#: Seconds in-flight requests get to finish on shutdown.
SHUTDOWN_TIMEOUT = 15.0
#: Connections the listening socket queues before they are accepted.
BACKLOG = 128
#: Seconds the internal listener's requests under way get to finish on shutdown.
INTERNAL_SHUTDOWN_TIMEOUT = 2.0
#: The largest body the internal listener reads (its requests have none).
INTERNAL_MAX_BODY_BYTES = 1024
#: The ingress's service name in its traces (unless ``OTEL_SERVICE_NAME`` names another).
SERVICE_NAME = "attentive-router"


def limits_of(settings: Settings, max_body_bytes: int | None = None) -> Limits:
    """The connections' limits and timers that ``settings`` set (``max_body_bytes``: another
    body limit than the webhooks')."""
    return Limits(
        max_body_bytes=settings.max_body_bytes if max_body_bytes is None else max_body_bytes,
        head_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        keepalive_timeout=settings.keepalive_timeout,
    )


class Ingress:
    """The webhook listener on ``settings.host``:``settings.port``, publishing to the RabbitMQ
    of ``settings`` (which must carry at least one signing key), and the internal listener on
    ``settings.internal_host``:``settings.internal_port``.

    ``reuse_port``: share the webhook port with other processes (SO_REUSEPORT), as
    ``--workers`` does; ``processes``: which of those processes this is (the first listens on
    the internal port and answers for all, the others on a Unix socket each).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        connection_name: str = "attentive-router",
        reuse_port: bool = False,
        processes: Processes | None = None,
    ) -> None:
        settings.require_signing_keys()
        self.settings = settings
        self.broker = broker = Broker(
            settings.amqp_url.reveal(),
            settings.names,
            confirm_timeout=settings.confirm_timeout,
            connection_name=connection_name,
            timeouts_to_recycle=settings.confirm_timeouts_to_recycle,
            recycle_window=settings.confirm_timeout_window,
            archive=settings.archive_retention,
        )
        self.metrics = Metrics(settings.metrics_max_other_types)
        self.metrics.in_flight.set_function(lambda: broker.in_flight)  # read when scraped
        subject_keys = SubjectKeys(
            subject_secret(settings.subject_key_secret, settings.signing_keys)
        )
        receiver = WebhookReceiver(
            Verifier(settings.signing_keys), broker, settings.names.invalid_queue, subject_keys
        )
        #: One per process: it bounds the lines about requests that are no authentic webhook.
        self.refused_log = RefusedLog(settings.refused_log_rate)
        self.routes = Routes(receiver, self.metrics, settings.retry_after, self.refused_log)
        #: With tracing on (``OTEL_*``: router.tracing), the tracer of this process.
        self.tracing = start_tracing(settings.tracing, SERVICE_NAME)
        handle: Handler = self.routes.handle
        if self.tracing is not None:
            from router.ingress.spans import traced  # (opentelemetry: only when it is on)

            names = settings.names
            exchange = names.ingress_exchange if settings.archive else names.events_exchange
            handle = traced(self.routes, self.tracing, exchange)
        self.http = HttpServer(handle, limits_of(settings), self.refused_log)
        siblings = None
        if processes is not None and processes.first and processes.count > 1:
            siblings = Siblings(processes)  # (it answers for all of them)
        self.probes = Probes(broker, self.metrics, siblings)
        self.internal_http = HttpServer(
            self.probes.handle, limits_of(settings, INTERNAL_MAX_BODY_BYTES), self.refused_log
        )
        self._reuse_port = reuse_port
        self._processes = processes
        self._listener: asyncio.Server | None = None
        self._internal: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The webhook port (the one the system chose, when ``settings.port`` is 0)."""
        return _port_of(self._listener)

    @property
    def internal_port(self) -> int:
        """The internal listener's port (the one the system chose, when
        ``settings.internal_port`` is 0); RuntimeError on a Unix socket."""
        return _port_of(self._internal)

    @property
    def internal_address(self) -> str:
        """Where the internal listener listens: ``host:port``, or its Unix socket's path."""
        if self._processes is not None and not self._processes.first:
            return self._processes.socket(self._processes.index)
        return f"{self.settings.internal_host}:{self.internal_port}"

    async def start(self) -> None:
        """Begin connecting to RabbitMQ and listen (raises OSError when a port is taken)."""
        if self.tracing is not None:
            log_trace_ids()
        self.broker.start()
        loop = asyncio.get_running_loop()
        settings = self.settings
        try:
            self._listener = await loop.create_server(
                self.http,
                settings.host,
                settings.port,
                backlog=BACKLOG,
                reuse_port=self._reuse_port or None,
            )
            processes = self._processes
            if processes is None or processes.first:
                self._internal = await loop.create_server(
                    self.internal_http,
                    settings.internal_host,
                    settings.internal_port,
                    backlog=BACKLOG,
                )
            else:
                self._internal = await loop.create_unix_server(
                    self.internal_http, processes.socket(processes.index), backlog=BACKLOG
                )
        except BaseException:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            await self.broker.close()
            raise

    async def stop(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Stop listening for webhooks, let the answers under way finish (``timeout`` seconds
        at most), stop the internal listener, then close the RabbitMQ connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            await asyncio.sleep(0)  # (a connection accepted just before is made, then closed)
            await self.http.shutdown(timeout)
        internal, self._internal = self._internal, None
        if internal is not None:
            internal.close()
            await asyncio.sleep(0)
            await self.internal_http.shutdown(INTERNAL_SHUTDOWN_TIMEOUT)
        self.refused_log.flush()  # (what was held back since the last summary)
        await self.broker.close()
        if self.tracing is not None:
            await self.tracing.close()  # (the spans not exported yet)


def _port_of(listener: asyncio.Server | None) -> int:
    if listener is None or not listener.sockets:
        raise RuntimeError("the ingress is not listening")
    address = listener.sockets[0].getsockname()
    if not isinstance(address, tuple):
        raise RuntimeError(f"the listener is on a Unix socket, {address}")
    port: int = address[1]
    return port


__all__ = [
    "BACKLOG",
    "INTERNAL_MAX_BODY_BYTES",
    "INTERNAL_SHUTDOWN_TIMEOUT",
    "SERVICE_NAME",
    "SHUTDOWN_TIMEOUT",
    "Ingress",
    "limits_of",
]
