"""The pipeline every delivery goes through, outermost first:

    logging ─▶ metrics ─▶ retries ─▶ idempotency ─▶ your handler

Each middleware is an object with ``async def __call__(event, call_next) -> Outcome``: it
may act before and after the rest of the pipeline. Retry policy lives in :class:`Retries`
alone: it turns a handler's exception into a typed outcome the runtime settles.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

from consumers.runtime.errors import NoHandler, Reject, Retry
from consumers.runtime.event import Event
from consumers.runtime.idempotency import (
    Acquired,
    AlreadyDone,
    IdempotencyStore,
    InProgressElsewhere,
)
from consumers.runtime.outcomes import DeadLetter, Deferred, Handled, Outcome, RetryLater, Skipped
from consumers.runtime.retry import RetryPolicy
from router.contract.masking import mask_excerpt
from router.contract.type_labels import DEFAULT_MAX_OTHER_TYPES, TypeLabels

Next = Callable[[Event], Awaitable[Outcome]]
log = structlog.get_logger("consumers")


class Middleware(Protocol):
    async def __call__(self, event: Event, call_next: Next) -> Outcome: ...


def chain(middleware: Sequence[Middleware], handler: Next) -> Next:
    """Compose ``middleware`` around ``handler``, the first one outermost."""
    call = handler
    for layer in reversed(middleware):
        call = _bind(layer, call)
    return call


def _bind(layer: Middleware, call_next: Next) -> Next:
    async def call(event: Event) -> Outcome:
        return await layer(event, call_next)

    return call


class Logging:
    """One log line per delivery, with the message id bound for everything logged inside.

    A handled delivery is logged at debug level (``ROUTER_LOG_LEVEL=debug`` shows it): that
    line cost a no-op worker about a fifth of its CPU per delivery, more than the rest of
    the pipeline. A skipped duplicate and a deferred delivery are logged at info, a retry at
    warning and a dead letter at error, with the error's text masked
    (:mod:`router.contract.masking`).
    """

    def __init__(self, app: str) -> None:
        self.app = app

    async def __call__(self, event: Event, call_next: Next) -> Outcome:
        started = time.perf_counter()
        # bind and reset by token: bound_contextvars() copies the whole context twice
        tokens = structlog.contextvars.bind_contextvars(
            app=self.app, message_id=event.message_id, event_type=event.type, attempt=event.attempt
        )
        try:
            outcome = await call_next(event)
            fields = {
                "company_id": event.company_id,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            match outcome:
                case Handled():
                    log.debug("event_handled", **fields)
                case Skipped(reason=reason):
                    log.info("event_skipped", reason=reason, **fields)
                case Deferred():
                    log.info("event_deferred", reason="in-progress-elsewhere", **fields)
                case RetryLater(delay_ms=delay_ms, error=error):
                    log.warning("event_retry", delay_ms=delay_ms, error=_summary(error), **fields)
                case DeadLetter(reason=reason, error=error):
                    log.error("event_dead_lettered", reason=reason, error=_summary(error), **fields)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
        return outcome


class Metrics:
    """Counts outcomes and times handlers, in the worker's registry.

    ``max_other_types``: how many undocumented event types get a ``type`` label of their own
    (:class:`~router.contract.type_labels.TypeLabels`); the rest are counted as ``other``."""

    def __init__(
        self,
        app: str,
        registry: CollectorRegistry,
        max_other_types: int = DEFAULT_MAX_OTHER_TYPES,
    ) -> None:
        self.outcomes = Counter(
            "attentive_worker_events",
            "Deliveries by outcome (handled, skipped, deferred, retry, dead_letter); "
            "type=other for undocumented types beyond the first few of them.",
            ["app", "type", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "attentive_worker_handler_seconds",
            "Time spent in the pipeline per delivery.",
            ["app"],
            registry=registry,
        )
        self.app = app
        self._seconds = self.seconds.labels(app)
        self._type_labels = TypeLabels(max_other_types)
        #: Label children by type label and outcome class, resolved once.
        self._counters: dict[tuple[str, type], Any] = {}

    async def __call__(self, event: Event, call_next: Next) -> Outcome:
        started = time.perf_counter()
        outcome = await call_next(event)
        self._seconds.observe(time.perf_counter() - started)
        key = (self._type_labels(event.type), type(outcome))
        counter = self._counters.get(key)
        if counter is None:
            name = _OUTCOME_NAMES.get(type(outcome), "dead_letter")
            counter = self._counters[key] = self.outcomes.labels(self.app, key[0], name)
        counter.inc()
        return outcome


_OUTCOME_NAMES: dict[type, str] = {
    Handled: "handled",
    Skipped: "skipped",
    Deferred: "deferred",
    RetryLater: "retry",
}


class Retries:
    """Exceptions become outcomes: :class:`Reject` dead-letters now; anything else retries
    through the policy's tiers until ``max_attempts``, then dead-letters."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    async def __call__(self, event: Event, call_next: Next) -> Outcome:
        try:
            return await call_next(event)
        except NoHandler as error:
            return DeadLetter("no-handler", error)
        except Reject as error:
            return DeadLetter("rejected", error)
        except Exception as error:
            at_least = error.delay if isinstance(error, Retry) else 0.0
            delay = self.policy.delay_after(event.attempt, at_least=at_least)
            if delay is None:
                return DeadLetter("exhausted", error)
            return RetryLater(delay, error)


class Idempotency:
    """One delivery of a message id at a time, and none once it was handled: the id is
    claimed in the store before the handler runs (:mod:`consumers.runtime.idempotency`).
    A backfill's copy is claimed by its id within the job (:attr:`Event.idempotency_key`):
    once per backfill, whether or not the event was handled before.

    Claimed: the rest of the pipeline runs; a :class:`Handled` id is completed (done for the
    window), anything else, or an exception, releases it so a retry or a replay can claim it.
    Done already: :class:`Skipped` ``duplicate``. Claimed by another delivery:
    :class:`Deferred`, returned later. A store error raises, and so retries the delivery.
    """

    def __init__(self, app: str, store: IdempotencyStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, event: Event, call_next: Next) -> Outcome:
        claim = await self.store.begin(self.app, event.idempotency_key)
        if isinstance(claim, AlreadyDone):
            return Skipped("duplicate")
        if isinstance(claim, InProgressElsewhere):
            return Deferred()
        try:
            outcome = await call_next(event)
        except BaseException:
            await self._release(claim, "exception")
            raise
        if isinstance(outcome, Handled):
            if not await self.store.complete(claim):
                # the lease ran out and another delivery claimed the id: it may run twice
                log.warning("idempotency_claim_lost", after="Handled")
        else:
            await self._release(claim, type(outcome).__name__)
        return outcome

    async def _release(self, claim: Acquired, after: str) -> None:
        """Release ``claim``; if the store fails, log it: the claim then lapses with its
        lease, and what the handler did (its exception, its outcome) stands."""
        try:
            if not await self.store.release(claim):
                log.warning("idempotency_claim_lost", after=after)
        except Exception as error:
            log.warning("idempotency_release_failed", after=after, error=_summary(error))


def _summary(error: BaseException) -> str:
    return mask_excerpt(f"{type(error).__name__}: {error}", 500)


def error_summary(error: BaseException) -> str:
    """``Type: message``, contact details masked, at most 500 characters (for headers and
    logs): handler errors often quote the subscriber's phone number or email address."""
    return _summary(error)


def traceback_summary(error: BaseException, limit: int = 2000) -> str:
    """The last frames of the traceback, contact details masked, at most ``limit``
    characters."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__, limit=-5))
    return mask_excerpt(text, limit, tail=True)


__all__ = [
    "Idempotency",
    "Logging",
    "Metrics",
    "Middleware",
    "Next",
    "Retries",
    "chain",
    "error_summary",
    "traceback_summary",
]
