"""The webhook port's handler: which request goes where, and what each webhook is answered,
logged and counted as.

The port faces the internet, so it serves webhooks and nothing else but ``/healthz``, which
says the process is alive and nothing more (for a load balancer). ``/metrics`` and ``/readyz``
are the internal listener's (:mod:`router.ingress.internal`): here they are paths like any
other, answered 404.

Webhooks (``POST /webhooks/attentive`` and ``POST /webhooks/attentive/<company>``) go to
:class:`~router.ingress.webhook.WebhookReceiver`; its outcome becomes the answer here, in one
place: 200 accepted, 202 quarantined, 401 (no valid signature, or a key bound to other
companies), 403, and 503 with ``Retry-After`` when RabbitMQ did not confirm. ``/healthz`` is
answered, never logged or counted as a webhook; every other request is logged and counted
once (404, 405, and what the connection refused: 400, 408, 413, 415, 431, 501, 505).

Every request is counted, but only the lines about authentic webhooks (200, 202, 403, 503,
and the 401 of a key bound to other companies: signed by a key of ours) and about errors of
our own (500) are always written: the others (anyone on the internet can send them by the
thousand) go through the ingress's
:class:`~router.ingress.refused_log.RefusedLog`, which bounds how many are written and
counts the rest. A line's path is cut to :data:`~router.ingress.refused_log.PATH_CHARS`
characters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson
import structlog

from router.contract.names import WEBHOOK_PATH
from router.ingress.messages import Answer, Refusal, Request
from router.ingress.metrics import Metrics, Outcome
from router.ingress.refused_log import RefusedLog, cut_path
from router.ingress.webhook import (
    Accepted,
    KeyNotForCompany,
    Quarantined,
    Received,
    Unconfirmed,
    Unsigned,
    WebhookReceiver,
    WrongCompany,
)
from router.observability import HotPathLogger

log = structlog.get_logger("router.ingress.routes")
#: The ``webhook`` line, one per request.
request_log = HotPathLogger("router.ingress.routes")

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

#: An answer, with the outcome it is logged and counted as (None: ``/healthz``, neither), and
#: the log line's fields.
_Reply = tuple[Answer, Outcome | None, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Routes:
    """Answers the webhook listener's requests. It holds what a request needs, so nothing is
    looked up per request."""

    receiver: WebhookReceiver
    metrics: Metrics
    #: Seconds a 503 asks the client to wait before it sends the webhook again.
    retry_after: int
    #: What bounds the lines about requests that are no authentic webhook.
    refused_log: RefusedLog = field(default_factory=RefusedLog)

    async def handle(self, request: Request) -> Answer:
        """Route ``request``, answer it, and log and count it once if it is no ``/healthz``."""
        started = time.perf_counter()
        try:
            webhook = request.raw_path == WEBHOOK_PATH and request.method == "POST"
            if webhook and request.refusal is None:
                received = await self.receiver.receive(request.body, request.headers, WEBHOOK_PATH)
                answer, outcome, fields = self._reply_to(received)
            else:
                answer, outcome, fields = await self._route(request)
        except Exception:
            log.exception("unhandled_error", path=cut_path(request.path), method=request.method)
            answer, outcome, fields = Answer(500, b'{"error":"internal error"}'), Outcome.ERROR, {}
        if outcome is not None:
            self.metrics.request_outcomes[outcome].inc()
            if outcome not in _ALWAYS_LOGGED and not self.refused_log.allow(outcome.value):
                return answer
            request_log.info(
                "webhook",
                outcome=outcome.value,
                status=answer.status,
                method=request.method,
                path=cut_path(request.path),
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                **fields,
            )
        return answer

    async def _route(self, request: Request) -> _Reply:
        """Whatever is not a POST to the universal webhook URL."""
        path, method = request.raw_path, request.method
        if request.refusal is not None:
            outcome, error = _REFUSED[request.refusal]
            return _reply(outcome, int(request.refusal), {"error": error})
        if path.startswith(_COMPANY_URLS):
            company = path[len(_COMPANY_URLS) :]
            if company and "/" not in company:
                if method != "POST":
                    return _not_allowed("POST")
                received = await self.receiver.receive(
                    request.body, request.headers, request.path, unquote(company)
                )
                return self._reply_to(received)
        elif path == WEBHOOK_PATH:
            return _not_allowed("POST")
        elif path == _ALIVE_PATH:
            if method not in ("GET", "HEAD"):
                return _not_allowed("GET, HEAD")
            return _ALIVE, None, _NO_FIELDS
        return _reply(Outcome.NOT_FOUND, 404, {"error": "not found"})

    def _reply_to(self, received: Received) -> _Reply:
        """The answer to a webhook, its log line's fields, and its counts."""
        metrics = self.metrics
        match received:
            case Accepted():  # (class patterns without keywords: no getattr per field)
                event = received.event
                metrics.confirm_seconds.observe(received.confirm_seconds)
                metrics.count_published(event.type, event.known)
                return _reply(
                    Outcome.ACCEPTED,
                    200,
                    {"status": "accepted", "message_id": event.message_id, "type": event.type},
                    event_type=event.type,
                    company_id=event.company_id,
                    message_id=event.message_id,
                    known=event.known,
                )
            case Quarantined():
                reason, message_id, queue = received.reason, received.message_id, received.queue
                metrics.confirm_seconds.observe(received.confirm_seconds)
                metrics.quarantined.labels(reason).inc()
                log.warning(
                    "webhook_quarantined", reason=reason, message_id=message_id, queue=queue
                )
                return _reply(
                    Outcome.QUARANTINED,
                    202,
                    {
                        "status": "quarantined",
                        "reason": reason,
                        "message_id": message_id,
                        "queue": queue,
                    },
                    message_id=message_id,
                    reason=reason,
                )
            case Unsigned():
                return _reply(Outcome.UNAUTHORIZED, 401, _UNAUTHORIZED)
            case KeyNotForCompany():  # (answered as unsigned: the answer gives no hint)
                fields: dict[str, Any] = {
                    "company_id": received.company,
                    "message_id": received.message_id,
                }
                if received.event is not None:
                    fields["event_type"] = received.event.type
                return _reply(Outcome.KEY_NOT_FOR_COMPANY, 401, _UNAUTHORIZED, **fields)
            case WrongCompany():
                event = received.event
                return _reply(
                    Outcome.FORBIDDEN,
                    403,
                    {"error": "forbidden", "reason": "company_id differs from the URL's company"},
                    event_type=event.type,
                    company_id=event.company_id,
                    message_id=event.message_id,
                )
            case Unconfirmed():
                metrics.confirm_seconds.observe(received.confirm_seconds)
                reason = str(received.error)
                fields = {"error": reason}
                if received.event is not None:
                    fields.update(
                        event_type=received.event.type, company_id=received.event.company_id
                    )
                fields["message_id"] = received.message_id
                retry_after = self.retry_after
                return _reply(
                    Outcome.UNAVAILABLE,
                    503,
                    {"error": "unavailable", "reason": reason, "retry_after": retry_after},
                    headers=(("Retry-After", str(retry_after)),),
                    **fields,
                )
        raise AssertionError(f"unknown outcome {received!r}")  # pragma: no cover


#: The one path besides the webhooks': the process is alive (and it says nothing else).
_ALIVE_PATH = "/healthz"
_ALIVE = Answer(200, b'{"status":"alive"}')
_UNAUTHORIZED = {"error": "unauthorized"}
_NO_FIELDS: dict[str, Any] = {}
#: The outcomes whose lines are always written: authentic webhooks (signed by a key of ours)
#: and errors of our own.
_ALWAYS_LOGGED = frozenset(
    {
        Outcome.ACCEPTED,
        Outcome.QUARANTINED,
        Outcome.KEY_NOT_FOR_COMPANY,
        Outcome.FORBIDDEN,
        Outcome.UNAVAILABLE,
        Outcome.ERROR,
    }
)


def _reply(
    outcome: Outcome,
    status: int,
    payload: dict[str, Any],
    *,
    headers: tuple[tuple[str, str], ...] = (),
    **fields: Any,
) -> _Reply:
    return Answer(status, orjson.dumps(payload), headers=headers), outcome, fields


def _not_allowed(allow: str) -> _Reply:
    return _reply(
        Outcome.METHOD_NOT_ALLOWED,
        405,
        {"error": "method not allowed"},
        headers=(("Allow", allow),),
    )


__all__ = ["Routes"]
