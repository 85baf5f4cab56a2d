"""The ingress: verifies Attentive webhooks and publishes them durably.

``create_app(settings)`` builds the aiohttp application that holds the ingress's parts
(settings, verifier, broker, metrics and the :class:`Receiver`) and the broker connection's
life (``cleanup_ctx``, so start-up and shutdown are symmetric). ``serve`` runs it on
:mod:`router.ingress.http1` connections, which hand every request to :meth:`Receiver.handle`.

Every answer follows one rule: 2xx only once RabbitMQ has confirmed the persistent message,
503 with Retry-After whenever it has not.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import orjson
import structlog
from aiohttp import web

from router.amqp.broker import Broker
from router.amqp.frames import Properties
from router.contract.events import Event, Unusable, parse
from router.contract.names import (
    CLOUDEVENTS_PREFIX,
    CLOUDEVENTS_SOURCE,
    COMPANY_HEADER,
    INVALID_REASON_HEADER,
    RECEIVED_AT_HEADER,
    RECEIVED_PATH_HEADER,
    SIGNATURE_HEADER,
    WEBHOOK_PATH,
)
from router.contract.signing import Verifier
from router.errors import PublishFailed
from router.ingress.messages import Answer, Refusal, Request
from router.ingress.metrics import CONTENT_TYPE, Metrics, Outcome
from router.observability import HotPathLogger
from router.settings import Settings

log = structlog.get_logger("router.ingress.webhook")
#: The ``webhook`` line, one per request.
request_log = HotPathLogger("router.ingress.webhook")

SETTINGS = web.AppKey("settings", Settings)
BROKER = web.AppKey("broker", Broker)
METRICS = web.AppKey("metrics", Metrics)
VERIFIER = web.AppKey("verifier", Verifier)

_CE_SPECVERSION = f"{CLOUDEVENTS_PREFIX}specversion"
_CE_ID = f"{CLOUDEVENTS_PREFIX}id"
_CE_TYPE = f"{CLOUDEVENTS_PREFIX}type"
_CE_SOURCE = f"{CLOUDEVENTS_PREFIX}source"
_CE_TIME = f"{CLOUDEVENTS_PREFIX}time"

_SIGNATURE = SIGNATURE_HEADER.encode()
_COMPANY_URLS = WEBHOOK_PATH + "/"
#: Outcomes and error bodies of the requests the connection refused (router.ingress.http1).
_REFUSED = {
    Refusal.BAD_REQUEST: (Outcome.BAD_REQUEST, "bad request"),
    Refusal.TIMEOUT: (Outcome.TIMEOUT, "request timeout"),
    Refusal.TOO_LARGE: (Outcome.TOO_LARGE, "request entity too large"),
    Refusal.UNSUPPORTED_ENCODING: (Outcome.BAD_REQUEST, "unsupported content encoding"),
    Refusal.HEAD_TOO_LARGE: (Outcome.BAD_REQUEST, "request header fields too large"),
    Refusal.NOT_IMPLEMENTED: (Outcome.BAD_REQUEST, "transfer coding not implemented"),
    Refusal.VERSION_NOT_SUPPORTED: (Outcome.BAD_REQUEST, "http version not supported"),
}


def create_app(settings: Settings, *, connection_name: str = "attentive-router") -> web.Application:
    """The ingress's parts for ``settings`` (which must carry at least one signing key)."""
    settings.require_signing_keys()
    app = web.Application()
    app[SETTINGS] = settings
    app[VERIFIER] = Verifier(settings.signing_keys)
    app[BROKER] = broker = Broker(
        settings.amqp_url,
        settings.names,
        confirm_timeout=settings.confirm_timeout,
        connection_name=connection_name,
        timeouts_to_recycle=settings.confirm_timeouts_to_recycle,
        recycle_window=settings.confirm_timeout_window,
    )
    app[METRICS] = Metrics()
    app[METRICS].in_flight.set_function(lambda: broker.in_flight)  # read when scraped
    app[RECEIVER] = Receiver(settings, app[VERIFIER], broker, app[METRICS])
    app.cleanup_ctx.append(_broker_lifecycle)
    return app


async def _broker_lifecycle(app: web.Application) -> AsyncIterator[None]:
    broker = app[BROKER]
    broker.start()
    yield
    await broker.close()


@dataclass(slots=True)
class _Record:
    """What one webhook request came to: logged and counted by :meth:`Receiver.handle`."""

    outcome: Outcome
    fields: dict[str, Any] = field(default_factory=dict)


#: An answer, and its record when the request was a webhook (or a refused request).
_Reply = tuple[Answer, _Record | None]


@dataclass(frozen=True, slots=True)
class Receiver:
    """Answers the webhook listener's requests: webhooks are verified, parsed, published,
    then answered. It holds what a request needs, so nothing is looked up per request."""

    settings: Settings
    verifier: Verifier
    broker: Broker
    metrics: Metrics

    async def handle(self, request: Request) -> Answer:
        """Route ``request``, answer it, and log and count it once if it is no probe."""
        started = time.perf_counter()
        try:
            webhook = request.raw_path == WEBHOOK_PATH and request.method == "POST"
            if webhook and request.refusal is None:
                answer, record = await self.receive(request)
            else:
                answer, record = await self._route(request)
        except Exception:
            log.exception("unhandled_error", path=request.path, method=request.method)
            answer, record = Answer(500, b'{"error":"internal error"}'), _Record(Outcome.ERROR)
        if record is not None:
            self.metrics.request_outcomes[record.outcome].inc()
            request_log.info(
                "webhook",
                outcome=record.outcome.value,
                status=answer.status,
                method=request.method,
                path=request.path,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                **record.fields,
            )
        return answer

    async def _route(self, request: Request) -> _Reply:
        """Whatever is not a POST to the universal webhook URL."""
        path, method = request.raw_path, request.method
        if request.refusal is not None:
            outcome, error = _REFUSED[request.refusal]
            return _answer(outcome, int(request.refusal), {"error": error})
        if path.startswith(_COMPANY_URLS):
            company = path[len(_COMPANY_URLS) :]
            if company and "/" not in company:
                if method != "POST":
                    return _not_allowed("POST")
                return await self.receive(request, unquote(company))
        elif path == WEBHOOK_PATH:
            return _not_allowed("POST")
        elif (probe := _PROBES.get(path)) is not None:
            if method not in ("GET", "HEAD"):
                return _not_allowed("GET, HEAD")
            return probe(self), None
        return _answer(Outcome.NOT_FOUND, 404, {"error": "not found"})

    def _alive(self) -> Answer:
        """GET /healthz: the process is alive."""
        return Answer(200, b'{"status":"alive"}')

    def _readiness(self) -> Answer:
        """GET /readyz: 200 only while publishing can succeed (connected, topology up,
        unblocked)."""
        broker = self.broker
        ready = broker.ready
        state = {"status": "ready" if ready else "not ready"}
        state |= {"connected": broker.connected, "blocked": broker.blocked}  # type: ignore[dict-item]
        return Answer(200 if ready else 503, orjson.dumps(state))

    def _metrics(self) -> Answer:
        """GET /metrics: Prometheus text."""
        self.metrics.broker_ready.set(1 if self.broker.ready else 0)
        return Answer(200, self.metrics.page(), content_type=CONTENT_TYPE)

    async def receive(self, request: Request, path_company: str | None = None) -> _Reply:
        """A webhook (``path_company``: the company its URL names, if any)."""
        body = request.body
        if not self.verifier.verify(body, request.header(_SIGNATURE)):
            return _answer(Outcome.UNAUTHORIZED, 401, {"error": "unauthorized"})

        match parse(body):
            case Unusable(reason=reason, message_id=mid):
                return await self._quarantine(request, reason, mid)
            case Event() as event:
                if path_company is not None and path_company != event.company_id:
                    return _answer(
                        Outcome.FORBIDDEN,
                        403,
                        {
                            "error": "forbidden",
                            "reason": "company_id differs from the URL's company",
                        },
                        event_type=event.type,
                        company_id=event.company_id,
                        message_id=event.message_id,
                    )
                publishing = self.broker.publish_event(event.routing_key, body, _properties(event))
                try:
                    await self._confirmed(publishing)
                except PublishFailed as error:
                    return self._unavailable(error, event)
                self.metrics.count_published(event.type, event.known)
                return _answer(
                    Outcome.ACCEPTED,
                    200,
                    {"status": "accepted", "message_id": event.message_id, "type": event.type},
                    event_type=event.type,
                    company_id=event.company_id,
                    message_id=event.message_id,
                    known=event.known,
                )
        raise AssertionError("parse() returns an Event or an Unusable")  # pragma: no cover

    async def _quarantine(self, request: Request, reason: str, message_id: str) -> _Reply:
        """Park an authentic but unusable body, raw, in the invalid queue; 202 once confirmed."""
        received_ms = _now_ms()
        properties = Properties(
            content_type=_declared_content_type(request),
            message_id=message_id,
            timestamp=received_ms // 1000,
            headers={
                INVALID_REASON_HEADER: reason,
                RECEIVED_PATH_HEADER: request.path,
                RECEIVED_AT_HEADER: received_ms,
            },
        )
        queue = self.settings.names.invalid_queue
        try:
            await self._confirmed(self.broker.publish_to_queue(queue, request.body, properties))
        except PublishFailed as error:
            return self._unavailable(error, None, message_id=message_id)
        self.metrics.quarantined.labels(reason).inc()
        log.warning("webhook_quarantined", reason=reason, message_id=message_id, queue=queue)
        return _answer(
            Outcome.QUARANTINED,
            202,
            {"status": "quarantined", "reason": reason, "message_id": message_id, "queue": queue},
            message_id=message_id,
            reason=reason,
        )

    async def _confirmed(self, publishing: Awaitable[None]) -> None:
        """Await a publish, measuring its confirm latency."""
        started = time.perf_counter()
        try:
            await publishing
        finally:
            self.metrics.confirm_seconds.observe(time.perf_counter() - started)

    def _unavailable(self, error: PublishFailed, event: Event | None, **fields: Any) -> _Reply:
        if event is not None:
            fields.update(
                event_type=event.type, company_id=event.company_id, message_id=event.message_id
            )
        retry_after = self.settings.retry_after
        return _answer(
            Outcome.UNAVAILABLE,
            503,
            {"error": "unavailable", "reason": str(error), "retry_after": retry_after},
            headers=(("Retry-After", str(retry_after)),),
            error=str(error),
            **fields,
        )


RECEIVER = web.AppKey("receiver", Receiver)

#: The endpoints that are not webhooks: answered, never logged or counted as webhooks.
_PROBES: dict[str, Callable[[Receiver], Answer]] = {
    "/healthz": Receiver._alive,
    "/readyz": Receiver._readiness,
    "/metrics": Receiver._metrics,
}


def _properties(event: Event) -> Properties:
    """The message properties of ``event``: CloudEvents attributes as headers."""
    occurred_ms = event.timestamp_ms if event.timestamp_ms is not None else _now_ms()
    second, millis = divmod(occurred_ms, 1000)
    return Properties(
        content_type="application/json",
        message_id=event.message_id,
        timestamp=second,
        headers={
            _CE_SPECVERSION: "1.0",
            _CE_ID: event.message_id,
            _CE_TYPE: event.type,
            _CE_SOURCE: CLOUDEVENTS_SOURCE,
            _CE_TIME: f"{_utc_second(second)}.{millis:03d}Z",
            COMPANY_HEADER: event.company_id,
        },
    )


@functools.lru_cache(maxsize=64)
def _utc_second(second: int) -> str:
    """``second`` (Unix) as ISO 8601 in UTC without a fraction; events come in bursts of the
    same few seconds, so the formatting is mostly a cache hit."""
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _declared_content_type(request: Request) -> str:
    """The client's media type, when an AMQP ``content_type`` (a short string) can carry it."""
    header = request.header(b"content-type") or "application/octet-stream"
    declared = header.partition(";")[0].strip().lower()
    fits = declared.isascii() and declared.isprintable() and 0 < len(declared) <= 255
    return declared if fits else "application/octet-stream"


# -- answers ---------------------------------------------------------------------------------


def _answer(
    outcome: Outcome,
    status: int,
    payload: dict[str, Any],
    *,
    headers: tuple[tuple[str, str], ...] = (),
    **fields: Any,
) -> _Reply:
    return Answer(status, orjson.dumps(payload), headers=headers), _Record(outcome, fields)


def _not_allowed(allow: str) -> _Reply:
    return _answer(
        Outcome.METHOD_NOT_ALLOWED,
        405,
        {"error": "method not allowed"},
        headers=(("Allow", allow),),
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


__all__ = ["BROKER", "METRICS", "RECEIVER", "SETTINGS", "WEBHOOK_PATH", "Receiver", "create_app"]
