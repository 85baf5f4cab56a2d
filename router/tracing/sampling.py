"""The sampler of ``OTEL_TRACES_SAMPLER``, and how a delivery's span follows its webhook's.

A worker's span for a delivery starts a trace of its own, linked to the span the event was
published in (a delivery may come minutes after its webhook, or days after, from a replay).
A parent-based sampler would decide for it afresh, as for any root, so that with a ratio
of 1 % one webhook in ten thousand would be followed into its worker. With a parent-based
sampler, a root span linked to the context its message was created in takes that context's
decision instead: a webhook sampled is followed through every delivery, retry and replay,
and one that was not costs its deliveries nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from random import getrandbits

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from router.tracing.conventions import LINK_CREATED, LINK_TYPE
from router.tracing.settings import TracingSettings

#: Set while a webhook's server span is made whose trace :func:`root_sampling` chose.
_WEBHOOK_SAMPLED: ContextVar[bool] = ContextVar("attentive_webhook_sampled", default=False)


def root_sampling(settings: TracingSettings) -> Callable[[], bool]:
    """Whether a new webhook's trace is sampled, decided before any span is made, as the
    sampler's root would (a trace id ratio: a random 64-bit number under the same bound): a
    webhook not sampled then costs no span at all. A span made inside :func:`sampled_webhook`
    is sampled whatever the sampler says."""
    root = settings.sampler.removeprefix("parentbased_")
    if root != "traceidratio":
        chosen = root == "always_on"
        return lambda: chosen
    bound = TraceIdRatioBased.get_bound_for_rate(settings.sampler_arg)
    return lambda: getrandbits(64) < bound


@contextlib.contextmanager
def sampled_webhook() -> Iterator[None]:
    """Spans started meanwhile are sampled (their webhook's trace was chosen already)."""
    token = _WEBHOOK_SAMPLED.set(True)
    try:
        yield
    finally:
        _WEBHOOK_SAMPLED.reset(token)


class FollowsCreation(Sampler):
    """``inner``'s decision, but sampled for a webhook :func:`root_sampling` chose and, when
    ``follows`` (a parent-based sampler), for a root span linked to a creation context (a
    link whose :data:`~router.tracing.conventions.LINK_TYPE` is ``created``): that
    context's."""

    def __init__(self, inner: Sampler, *, follows: bool = True) -> None:
        self._parent_based = inner
        self._follows = follows

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if _WEBHOOK_SAMPLED.get():
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        parent = get_current_span(parent_context).get_span_context()
        if self._follows and not parent.is_valid:
            for link in links or ():
                if link.attributes and link.attributes.get(LINK_TYPE) == LINK_CREATED:
                    sampled = link.context.trace_flags.sampled
                    decision = Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP
                    return SamplingResult(decision, attributes if sampled else None)
        return self._parent_based.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"FollowsCreation{{{self._parent_based.get_description()}}}"


def sampler_of(settings: TracingSettings) -> Sampler:
    """The sampler ``OTEL_TRACES_SAMPLER`` (and its argument) name; a parent-based one also
    follows a delivery's creation context (:class:`FollowsCreation`)."""
    name = settings.sampler
    root = name.removeprefix("parentbased_")
    chosen: Sampler = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(settings.sampler_arg),
    }[root]
    if name.startswith("parentbased_"):
        return FollowsCreation(ParentBased(chosen))
    return FollowsCreation(chosen, follows=False)


__all__ = ["FollowsCreation", "root_sampling", "sampled_webhook", "sampler_of"]
