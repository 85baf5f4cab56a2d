"""A structlog processor that adds the ids of the span a line is logged in, so that a log
line leads to its trace (installed by :func:`router.observability.log_trace_ids` only when
tracing is on)."""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import get_current_span
from structlog.typing import EventDict


def add_trace_ids(logger: Any, method: str, event_dict: EventDict) -> EventDict:
    """``trace_id`` and ``span_id`` (hex, as trace viewers show them) of the current span,
    when it is sampled (a line of an unsampled trace would lead nowhere)."""
    context = get_current_span().get_span_context()
    if context.trace_flags.sampled:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


__all__ = ["add_trace_ids"]
