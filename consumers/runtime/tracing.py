"""A delivery's spans, when tracing is on: a consumer span per delivery, the handler's span as
its child.

Each delivery's span (``process attentive.app.<app>``) starts a trace of its own, linked to
the span the event was published in (the ``traceparent`` the ingress wrote into the
message's headers, kept through retries, dead letters and replays): a delivery may come
minutes after its webhook, or days after from a replay, and its trace is then not the
webhook's. The links say which is which (:data:`~router.tracing.conventions.LINK_TYPE`):

- ``created``: the ingress's publish span, in the webhook's trace (every delivery);
- ``first_delivery``: the span of the first delivery of this round, on a retried (or
  deferred) delivery: its ``traceparent`` travels in ``x-attentive-first-delivery``, which
  the first delivery writes and every copy keeps;
- ``replayed_from``: the span of the first delivery of the round before, on the first
  delivery after a replay (a replayed copy keeps that header; it then writes its own).

What became of the delivery is on its span: ``attentive.outcome``, and a ``retry`` event
(with its delay tier) or a ``dead_letter`` event (with the reason); the handler's span has
the error's type and its text with contact details masked, never the raw exception.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer

from consumers.runtime.delivery import Delivery
from consumers.runtime.event import Event
from consumers.runtime.middleware import Next, error_summary
from consumers.runtime.outcomes import DeadLetter, Deferred, Handled, Outcome, RetryLater, Skipped
from router.contract import envelope
from router.tracing import conventions as sc
from router.tracing.propagation import extract, parse_traceparent, traceparent

#: What each outcome is called on a delivery's span (as in the worker's metrics).
_OUTCOMES: dict[type, str] = {
    Handled: "handled",
    Skipped: "skipped",
    Deferred: "deferred",
    RetryLater: "retry",
    DeadLetter: "dead_letter",
}
#: The outcome of a delivery given back unstarted (paused, or the breaker open).
RETURNED = "returned"


class DeliverySpans:
    """Spans of the deliveries of ``app``'s queue ``queue``, made by ``tracer``."""

    def __init__(self, tracer: Tracer, app: str, queue: str) -> None:
        self.tracer = tracer
        self.app = app
        self.queue = queue

    async def process(
        self,
        message: Delivery,
        handle: Callable[[Delivery], Awaitable[Outcome | None]],
    ) -> Outcome | None:
        """``handle(message)`` in the delivery's span; its outcome."""
        headers = message.headers
        first = not envelope.tried(headers)  # the first delivery of its round
        links = _links(headers, first)
        attributes: dict[str, Any] = {
            sc.MESSAGING_SYSTEM: sc.RABBITMQ,
            sc.MESSAGING_OPERATION_TYPE: sc.PROCESS,
            sc.MESSAGING_OPERATION_NAME: "process",
            sc.MESSAGING_DESTINATION_NAME: self.queue,
            sc.MESSAGING_CONSUMER_GROUP: self.app,
            sc.MESSAGING_ROUTING_KEY: message.routing_key,
            sc.MESSAGING_DELIVERY_TAG: message.delivery_tag,
            sc.MESSAGING_BODY_SIZE: len(message.body),
            sc.ATTEMPT: envelope.attempt(headers),
            sc.REPLAY_COUNT: envelope.replays(headers),
        }
        if message.message_id:
            attributes[sc.MESSAGING_MESSAGE_ID] = message.message_id
        with self.tracer.start_as_current_span(
            f"process {self.queue}",
            Context(),  # (a trace of its own, linked: see the module's text)
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if first:  # every copy made of this delivery (a retry, a dead letter) says so
                message.headers = envelope.first_delivered(headers, traceparent(span))
            outcome = await handle(message)
            record(span, outcome)
        return outcome


def _links(headers: Mapping[str, Any], first: bool) -> list[Link]:
    """The links of a delivery's span (see the module's text)."""
    links: list[Link] = []
    created = extract(headers)
    if created is not None:
        links.append(Link(created, {sc.LINK_TYPE: sc.LINK_CREATED}))
    earlier = parse_traceparent(envelope.first_delivery(headers))
    if earlier is not None:
        kind = sc.LINK_REPLAYED_FROM if first else sc.LINK_FIRST_DELIVERY
        links.append(Link(earlier, {sc.LINK_TYPE: kind}))
    return links


def record(span: Span, outcome: Outcome | None) -> None:
    """What became of a delivery, on its span: the outcome, a retry or a dead letter."""
    span.set_attribute(sc.OUTCOME, RETURNED if outcome is None else _OUTCOMES[type(outcome)])
    match outcome:
        case RetryLater(delay_ms=delay_ms, error=error):
            span.add_event(
                "retry", {sc.RETRY_DELAY_MS: delay_ms, sc.ERROR_TYPE: type(error).__name__}
            )
        case DeadLetter(reason=reason, error=error):
            span.add_event(
                "dead_letter",
                {sc.DEAD_LETTER_REASON: reason, sc.ERROR_TYPE: type(error).__name__},
            )
            span.set_attribute(sc.ERROR_TYPE, type(error).__name__)
            span.set_status(Status(StatusCode.ERROR, error_summary(error)))


class HandlerSpan:
    """The innermost middleware: the handler in a span of its own, named after it, a child of
    its delivery's (``route``: the handler an event goes to)."""

    def __init__(self, tracer: Tracer, route: Callable[[Event], Any]) -> None:
        self.tracer = tracer
        self.route = route

    async def __call__(self, event: Event, call_next: Next) -> Outcome:
        handler = self.route(event)
        name = getattr(handler, "__name__", None) or "handler"
        with self.tracer.start_as_current_span(
            f"handle {name}",
            attributes={sc.EVENT_TYPE: event.type, sc.COMPANY_ID: event.company_id},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return await call_next(event)
            except BaseException as error:
                # its type and its text masked (handlers' errors quote subscribers), no traceback
                summary = error_summary(error)
                span.set_attribute(sc.ERROR_TYPE, type(error).__name__)
                span.add_event(
                    "exception",
                    {"exception.type": type(error).__name__, "exception.message": summary},
                )
                span.set_status(Status(StatusCode.ERROR, summary))
                raise


__all__ = ["RETURNED", "DeliverySpans", "HandlerSpan", "record"]
