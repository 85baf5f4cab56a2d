"""W3C Trace Context in AMQP headers: written into a message as it is published, read back
from a delivery. (It imports OpenTelemetry: only code that runs with tracing on imports it.)

The header names are :data:`~router.contract.names.TRACEPARENT_HEADER` and
:data:`~router.contract.names.TRACESTATE_HEADER`, which are those of the propagator.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from random import getrandbits
from typing import Any

from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanContext, get_current_span, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from router.contract.names import TRACEPARENT_HEADER, TRACESTATE_HEADER

_PROPAGATOR = TraceContextTextMapPropagator()
#: What the propagator writes: the names the contract gives them.
FIELDS = frozenset(_PROPAGATOR.fields)


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads a header as text: AMQP tables carry strings as ``str`` or ``bytes``."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


def inject(headers: MutableMapping[str, Any], span: Span) -> None:
    """Write ``span``'s context into ``headers`` (``traceparent``, and ``tracestate`` if it
    has one), as the propagator writes them, for a fraction of its cost (it runs per webhook)."""
    context = span.get_span_context()
    headers[TRACEPARENT_HEADER] = (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    )
    if context.trace_state:
        headers[TRACESTATE_HEADER] = context.trace_state.to_header()


_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def unsampled_traceparent() -> str:
    """A ``traceparent`` of a new trace that is not sampled: what a webhook's message carries
    when no span was made for it, so that its deliveries are not sampled either."""
    ids = f"{getrandbits(192):048x}"  # (one draw for both ids: it runs per webhook)
    trace_id, span_id = ids[:32], ids[32:]
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:  # (invalid ids; 1 in 2**64 at most)
        return unsampled_traceparent()
    return f"00-{trace_id}-{span_id}-00"


def extract(headers: Mapping[str, Any]) -> SpanContext | None:
    """The span context ``headers`` carry, if they carry a valid one."""
    context = _PROPAGATOR.extract(headers, Context(), _GETTER)
    span_context = get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None


def traceparent(span: Span) -> str:
    """``span``'s context as a ``traceparent`` value."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, set_span_in_context(span, Context()))
    return carrier[TRACEPARENT_HEADER]


def parse_traceparent(value: str | None) -> SpanContext | None:
    """The span context a ``traceparent`` value names, if it is a valid one."""
    return None if value is None else extract({TRACEPARENT_HEADER: value})


__all__ = [
    "FIELDS",
    "extract",
    "inject",
    "parse_traceparent",
    "traceparent",
    "unsampled_traceparent",
]
