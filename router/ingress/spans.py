"""A webhook's spans, when tracing is on: an HTTP server span per webhook, with its verify,
parse and publish-and-confirm as children.

Nothing in the webhook's own code knows of them: with tracing on, :func:`traced` gives the
listener a handler that opens the server span around :class:`~router.ingress.routes.Routes`,
whose receiver verifies, parses and publishes through wrappers that each open a child span,
and the publish writes its span's context into the message's headers (W3C ``traceparent``
and ``tracestate``): the context a worker's span for the event links to. With tracing off,
:class:`~router.ingress.service.Ingress` never imports this module.

The server span starts a trace of its own: a ``traceparent`` a client sends is not followed
(the port faces the internet; whether a webhook is sampled is our sampler's to say). Its
attributes are HTTP's (``http.request.method``, ``http.route``, ``url.path``,
``http.response.status_code``) and what came of the webhook (``attentive.outcome``,
``.event_type``, ``.company_id``, ``.message_id``), never the signature, the body, a phone
number or an email address.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry.context import Context, attach, detach
from opentelemetry.trace import (
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    get_current_span,
    set_span_in_context,
)

from router.amqp.frames import Properties
from router.contract.events import Routable, Unusable, parse
from router.contract.names import TRACEPARENT_HEADER, WEBHOOK_PATH
from router.contract.signing import Verifier
from router.errors import PublishFailed
from router.ingress.messages import Answer, Handler, Request
from router.ingress.metrics import Outcome
from router.ingress.refused_log import cut_path
from router.ingress.routes import Routes
from router.ingress.webhook import (
    Accepted,
    KeyNotForCompany,
    Publishing,
    Quarantined,
    Received,
    Unconfirmed,
    Unsigned,
    WebhookReceiver,
    WrongCompany,
)
from router.tracing import conventions as sc
from router.tracing.propagation import inject, unsampled_traceparent
from router.tracing.provider import Tracing
from router.tracing.sampling import root_sampling, sampled_webhook

_COMPANY_URLS = WEBHOOK_PATH + "/"
#: ``http.route`` of a company's webhook URL.
COMPANY_ROUTE = WEBHOOK_PATH + "/{company_id}"
#: The outcome each of the receiver's answers is logged and counted as (router.ingress.routes).
_OUTCOMES: dict[type, Outcome] = {
    Accepted: Outcome.ACCEPTED,
    Quarantined: Outcome.QUARANTINED,
    Unsigned: Outcome.UNAUTHORIZED,
    KeyNotForCompany: Outcome.KEY_NOT_FOR_COMPANY,
    WrongCompany: Outcome.FORBIDDEN,
    Unconfirmed: Outcome.UNAVAILABLE,
}


#: The context a webhook's trace starts from: none.
_ROOT = Context()


def traced(routes: Routes, tracing: Tracing, exchange: str) -> Handler:
    """The listener's handler: ``routes`` answering, each webhook sampled in its spans made by
    ``tracing``; ``exchange``: where events are published (the publish span's destination)."""
    tracer = tracing.tracer
    receiver = routes.receiver
    spanned = TracedReceiver(
        TracedVerifier(receiver.verifier, tracer),
        TracedPublishing(receiver.broker, tracer, exchange),
        receiver.invalid_queue,
        receiver.subject_keys,
        _traced_parse(tracer),
    )
    unsampled = dataclasses.replace(receiver, stamp=stamp_unsampled)
    return ServerSpans(
        dataclasses.replace(routes, receiver=spanned),
        dataclasses.replace(routes, receiver=unsampled),
        tracer,
        root_sampling(tracing.settings),
    ).handle


class ServerSpans:
    """An HTTP server span around each webhook ``routes`` answer (every other request goes
    straight through). A webhook whose trace is not sampled is answered by ``unsampled``,
    the receiver without spans: it pays for no span and no check of one, only for the
    ``traceparent`` that tells its deliveries they are not sampled either
    (:func:`stamp_unsampled`)."""

    def __init__(
        self, routes: Routes, unsampled: Routes, tracer: Tracer, sampled: Callable[[], bool]
    ) -> None:
        self.routes = routes
        self.unsampled = unsampled
        self.tracer = tracer
        #: Whether the next webhook's trace is sampled (router.tracing.sampling.root_sampling).
        self.sampled = sampled

    def handle(self, request: Request) -> Awaitable[Answer]:
        """The answer to ``request``; no coroutine of its own when the webhook's trace is not
        sampled (then nothing is added to its answer but the unsampled ``traceparent``)."""
        if not self.sampled():  # no span at all (its message says so: stamp_unsampled)
            return self.unsampled.handle(request)
        route = _route_of(request)
        if route is None:  # (no webhook: nothing to trace)
            return self.routes.handle(request)
        return self._spanned(request, route)

    async def _spanned(self, request: Request, route: str) -> Answer:
        """``request``'s answer in a server span named after ``route``."""
        with sampled_webhook():  # (a new trace: a client's traceparent is not followed)
            span = self.tracer.start_span(f"POST {route}", _ROOT, kind=SpanKind.SERVER)
        recording = span.is_recording()
        if recording:
            span.set_attributes(
                {
                    sc.HTTP_REQUEST_METHOD: "POST",
                    sc.HTTP_ROUTE: route,
                    sc.URL_PATH: cut_path(request.path),
                    sc.URL_SCHEME: "http",
                }
            )
        token = attach(set_span_in_context(span, _ROOT))
        answer: Answer | None = None
        try:
            answer = await self.routes.handle(request)
        finally:
            detach(token)
            if recording:  # (a span not sampled has nothing to end)
                _answered(span, answer)
                span.end()
        return answer


def _answered(span: Span, answer: Answer | None) -> None:
    """The answer's status on the server span; a 5xx (or no answer: an exception) is an error
    of the server's (a 4xx is the client's doing)."""
    if answer is not None:
        span.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE, answer.status)
    if answer is None or answer.status >= 500:
        span.set_attribute(sc.ERROR_TYPE, str(answer.status) if answer else "exception")
        span.set_status(Status(StatusCode.ERROR))


def _route_of(request: Request) -> str | None:
    """The ``http.route`` of a webhook (a POST to one of the webhook URLs), else None."""
    if request.method != "POST":
        return None
    path = request.raw_path
    if path == WEBHOOK_PATH:
        return WEBHOOK_PATH
    if path.startswith(_COMPANY_URLS) and len(path) > len(_COMPANY_URLS):
        return COMPANY_ROUTE if "/" not in path[len(_COMPANY_URLS) :] else None
    return None


class TracedReceiver(WebhookReceiver):
    """The receiver, writing what became of each webhook on the current (server) span."""

    __slots__ = ()

    async def receive(
        self,
        body: bytes,
        headers: Mapping[bytes, bytes],
        path: str,
        company: str | None = None,
    ) -> Received:
        received = await WebhookReceiver.receive(self, body, headers, path, company)
        span = get_current_span()
        if span.is_recording():
            describe(span, received)
        return received


def describe(span: Span, received: Received) -> None:
    """The attributes of what became of a webhook: its outcome, its event's type, company and
    message id (what its log line says, less the error's text)."""
    span.set_attribute(sc.OUTCOME, _OUTCOMES[type(received)].value)
    event: Routable | None = None
    match received:
        case Accepted() | WrongCompany():
            event = received.event
        case KeyNotForCompany():
            event = received.event
            span.set_attribute(sc.COMPANY_ID, received.company)
            span.set_attribute(sc.MESSAGE_ID, received.message_id)
        case Unconfirmed():
            event = received.event
            span.set_attribute(sc.MESSAGE_ID, received.message_id)
        case Quarantined():
            span.set_attribute(sc.MESSAGE_ID, received.message_id)
            span.set_attribute(sc.QUARANTINE_REASON, received.reason)
    if event is not None:
        span.set_attribute(sc.EVENT_TYPE, event.type)
        span.set_attribute(sc.COMPANY_ID, event.company_id)
        span.set_attribute(sc.MESSAGE_ID, event.message_id)


class TracedVerifier(Verifier):
    """The verifier, each signature check in a ``verify`` span saying whether it matched."""

    __slots__ = ("_inner", "_tracer")

    def __init__(self, inner: Verifier, tracer: Tracer) -> None:  # (no keys of its own)
        self._inner = inner
        self._tracer = tracer
        self.unbound = inner.unbound

    def match(self, body: bytes, signature: str | None) -> int:
        if not get_current_span().is_recording():  # (no server span records it)
            return self._inner.match(body, signature)
        span = self._tracer.start_span("verify")  # (a leaf: it never needs to be current)
        try:
            matched = self._inner.match(body, signature)
            span.set_attribute(sc.SIGNATURE_VALID, matched != 0)
            return matched
        finally:
            span.end()

    def allows(self, matched: int, company: str) -> bool:
        return self._inner.allows(matched, company)


def _traced_parse(tracer: Tracer) -> Any:
    def parse_in_span(body: bytes) -> Routable | Unusable:
        if not get_current_span().is_recording():
            return parse(body)
        span = tracer.start_span("parse")
        try:
            parsed = parse(body)
            if isinstance(parsed, Unusable):
                span.set_attribute(sc.QUARANTINE_REASON, parsed.reason)
            else:
                span.set_attribute(sc.EVENT_TYPE, parsed.type)
            return parsed
        finally:
            span.end()

    return parse_in_span


class TracedPublishing:
    """The broker's publishes, each in a producer span from the publish to RabbitMQ's
    confirm, whose context the message carries (the context it was created in)."""

    def __init__(self, inner: Publishing, tracer: Tracer, exchange: str) -> None:
        self._inner = inner
        self._tracer = tracer
        self._exchange = exchange

    def publish_event(
        self, routing_key: str, body: bytes, properties: Properties
    ) -> Awaitable[None]:
        return self._publish(self._exchange, routing_key, body, properties)

    def publish_to_queue(self, queue: str, body: bytes, properties: Properties) -> Awaitable[None]:
        return self._publish("", queue, body, properties)

    async def _publish(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties
    ) -> None:
        # (the default exchange has no name: a publish to a queue is named after the queue)
        span = self._tracer.start_span(f"publish {exchange or routing_key}", kind=SpanKind.PRODUCER)
        span.set_attributes(
            {
                sc.MESSAGING_SYSTEM: sc.RABBITMQ,
                sc.MESSAGING_OPERATION_TYPE: sc.SEND,
                sc.MESSAGING_OPERATION_NAME: "publish",
                sc.MESSAGING_DESTINATION_NAME: exchange,
                sc.MESSAGING_ROUTING_KEY: routing_key,
                sc.MESSAGING_MESSAGE_ID: properties.message_id,
                sc.MESSAGING_BODY_SIZE: len(body),
            }
        )
        try:
            await self._send(exchange, routing_key, body, _carrying(properties, span))
        except PublishFailed as error:
            span.set_attribute(sc.ERROR_TYPE, type(error).__name__)
            span.set_status(Status(StatusCode.ERROR, str(error)))
            raise
        finally:
            span.end()

    def _send(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties
    ) -> Awaitable[None]:
        if exchange:
            return self._inner.publish_event(routing_key, body, properties)
        return self._inner.publish_to_queue(routing_key, body, properties)


def stamp_unsampled(headers: dict[str, Any]) -> None:
    """Mark a message of a webhook whose trace is not sampled: a ``traceparent`` of a new
    trace, not sampled, so that its deliveries are not sampled either."""
    headers[TRACEPARENT_HEADER] = unsampled_traceparent()


def _carrying(properties: Properties, span: Span) -> Properties:
    """``properties`` with ``span``'s context in their headers: the context the message was
    created in."""
    headers = dict(properties.headers)
    inject(headers, span)
    return dataclasses.replace(properties, headers=headers)


__all__ = [
    "COMPANY_ROUTE",
    "ServerSpans",
    "TracedReceiver",
    "describe",
    "stamp_unsampled",
    "traced",
]
