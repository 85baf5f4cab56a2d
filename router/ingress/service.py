"""The ingress as one service: :class:`Ingress` owns its RabbitMQ connection, its metrics and
its listener, from :meth:`Ingress.start` to :meth:`Ingress.stop`.

``attentive-router serve`` (:mod:`router.serve`), ``--workers`` and the tests all run the
ingress through it. Start-up: the broker connection begins (in the background: ``/readyz``
says when it is up), then the port listens. Shutdown: the port stops listening, idle
connections close, the requests under way are answered (within :data:`SHUTDOWN_TIMEOUT`,
then dropped), and only then does the broker connection close.
"""

from __future__ import annotations

import asyncio

from router.amqp.broker import Broker
from router.contract.signing import Verifier
from router.ingress.http1 import HttpServer
from router.ingress.limits import Limits
from router.ingress.metrics import Metrics
from router.ingress.refused_log import RefusedLog
from router.ingress.routes import Routes
from router.ingress.webhook import WebhookReceiver
from router.settings import Settings

#: Seconds in-flight requests get to finish on shutdown.
SHUTDOWN_TIMEOUT = 15.0
#: Connections the listening socket queues before they are accepted.
BACKLOG = 128


def limits_of(settings: Settings) -> Limits:
    """The connections' limits and timers that ``settings`` set."""
    return Limits(
        max_body_bytes=settings.max_body_bytes,
        head_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        keepalive_timeout=settings.keepalive_timeout,
    )


class Ingress:
    """The webhook listener on ``settings.host``:``settings.port``, publishing to the RabbitMQ
    of ``settings`` (which must carry at least one signing key).

    ``reuse_port``: share the port with other processes (SO_REUSEPORT), as ``--workers`` does.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        connection_name: str = "attentive-router",
        reuse_port: bool = False,
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
        )
        self.metrics = Metrics(settings.metrics_max_other_types)
        self.metrics.in_flight.set_function(lambda: broker.in_flight)  # read when scraped
        receiver = WebhookReceiver(
            Verifier(key.reveal() for key in settings.signing_keys),
            broker,
            settings.names.invalid_queue,
        )
        #: One per process: it bounds the lines about requests that are no authentic webhook.
        self.refused_log = RefusedLog(settings.refused_log_rate)
        self.routes = Routes(receiver, broker, self.metrics, settings.retry_after, self.refused_log)
        self.http = HttpServer(self.routes.handle, limits_of(settings), self.refused_log)
        self._reuse_port = reuse_port
        self._listener: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the one the system chose, when ``settings.port`` is 0)."""
        if self._listener is None or not self._listener.sockets:
            raise RuntimeError("the ingress is not listening")
        port: int = self._listener.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Begin connecting to RabbitMQ and listen (raises OSError when the port is taken)."""
        self.broker.start()
        try:
            self._listener = await asyncio.get_running_loop().create_server(
                self.http,
                self.settings.host,
                self.settings.port,
                backlog=BACKLOG,
                reuse_port=self._reuse_port or None,
            )
        except BaseException:
            await self.broker.close()
            raise

    async def stop(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Stop listening, let the answers under way finish (``timeout`` seconds at most),
        then close the RabbitMQ connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            await asyncio.sleep(0)  # (a connection accepted just before is made, then closed)
            await self.http.shutdown(timeout)
        self.refused_log.flush()  # (what was held back since the last summary)
        await self.broker.close()


__all__ = ["BACKLOG", "SHUTDOWN_TIMEOUT", "Ingress", "limits_of"]
