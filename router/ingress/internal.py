"""The internal listener: ``/metrics``, ``/readyz`` and ``/healthz``, for Prometheus and probes.

They are kept off the webhook port, whose answers anyone on the internet may read: traffic
per event type, how many requests were refused and whether RabbitMQ holds a resource alarm
are the operator's to see. The listener (``ROUTER_INTERNAL_HOST``:``ROUTER_INTERNAL_PORT``,
127.0.0.1:8082 by default) asks for no token: Prometheus and kubelet probes cannot easily
send one, and nothing it serves changes anything or shows a secret. It is kept from strangers
by where it listens (the loopback address, or a pod address behind a NetworkPolicy), and it
runs whether the admin API does or not. Its connections are the webhook port's
(:mod:`router.ingress.http1`: the same limits and timers); what it answers is neither logged
nor counted.

With ``serve --workers N``, the first process answers for all of them
(:mod:`router.ingress.processes`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from router.amqp.broker import Broker
from router.ingress.messages import Answer, Request
from router.ingress.metrics import CONTENT_TYPE, Metrics
from router.ingress.processes import Siblings

_ALIVE = Answer(200, b'{"status":"alive"}')
_NOT_FOUND = Answer(404, b'{"error":"not found"}')
_NOT_ALLOWED = Answer(405, b'{"error":"method not allowed"}', headers=(("Allow", "GET, HEAD"),))
_REFUSED = b'{"error":"refused"}'
_UNREACHABLE: dict[str, Any] = {"status": "unreachable"}


@dataclass(frozen=True, slots=True)
class Probes:
    """Answers the internal listener's requests for one ingress process."""

    broker: Broker
    metrics: Metrics
    #: With ``serve --workers``, the first process's way to the others' answers.
    siblings: Siblings | None = None

    async def handle(self, request: Request) -> Answer:
        """``GET`` (or ``HEAD``) ``/healthz``, ``/readyz`` or ``/metrics``; 404 for any
        other path, 405 for any other method."""
        if request.refusal is not None:  # (what the connection refused: a head too large...)
            return Answer(int(request.refusal), _REFUSED)
        route = _ROUTES.get(request.raw_path)
        if route is None:
            return _NOT_FOUND
        if request.method not in ("GET", "HEAD"):
            return _NOT_ALLOWED
        return await route(self)

    async def _alive(self) -> Answer:
        """``/healthz``: the process is alive."""
        return _ALIVE

    async def _readiness(self) -> Answer:
        """``/readyz``: 200 only while publishing can succeed (connected, topology up,
        unblocked), in every process."""
        broker = self.broker
        state: dict[str, Any] = {
            "status": "ready" if broker.ready else "not ready",
            "connected": broker.connected,
            "blocked": broker.blocked,
        }
        if self.siblings is not None:
            answers = await self.siblings.ask("/readyz")
            processes = {"0": state, **{str(i): _state(a) for i, a in enumerate(answers, 1)}}
            states = processes.values()
            state = {
                "status": "ready" if all(s["status"] == "ready" for s in states) else "not ready",
                "connected": all(s.get("connected") is True for s in states),
                "blocked": any(s.get("blocked") is True for s in states),
                "processes": processes,
            }
        return Answer(200 if state["status"] == "ready" else 503, orjson.dumps(state))

    async def _metrics(self) -> Answer:
        """``/metrics``: Prometheus text (every process's, with ``serve --workers``)."""
        self.metrics.broker_ready.set(1 if self.broker.ready else 0)
        page = self.metrics.page()
        if self.siblings is not None:
            page = await self.siblings.metrics_page(page)
        return Answer(200, page, content_type=CONTENT_TYPE)


def _state(answer: tuple[int, bytes] | None) -> dict[str, Any]:
    """Another process's readiness, from its answer to ``/readyz``."""
    if answer is None:
        return _UNREACHABLE
    try:
        state = orjson.loads(answer[1])
    except orjson.JSONDecodeError:
        return _UNREACHABLE
    return state if isinstance(state, dict) and "status" in state else _UNREACHABLE


_ROUTES: dict[str, Callable[[Probes], Awaitable[Answer]]] = {
    "/healthz": Probes._alive,
    "/readyz": Probes._readiness,
    "/metrics": Probes._metrics,
}


__all__ = ["Probes"]
