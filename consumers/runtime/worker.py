"""A worker's definition: its application name, its handlers, and how it retries.

Defining one touches no broker; :mod:`consumers.runtime.runner` runs it, and
:mod:`consumers.testing` runs its handlers in-process.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from consumers.runtime.breaker import BreakerPolicy
from consumers.runtime.errors import NoHandler, WorkerConfigError
from consumers.runtime.event import Event
from consumers.runtime.flow import FlowMetrics
from consumers.runtime.idempotency import IdempotencyStore, MemoryStore
from consumers.runtime.middleware import (
    Idempotency,
    Logging,
    Metrics,
    Middleware,
    Next,
    Retries,
    chain,
)
from consumers.runtime.outcomes import Handled, Outcome
from consumers.runtime.retry import RetryPolicy
from router.claims.model import ClaimSpec, EventPattern
from router.contract.type_labels import DEFAULT_MAX_OTHER_TYPES
from router.errors import InvalidClaim

HandlerFn = Callable[[Event], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    """A handler and what it is for."""

    pattern: EventPattern
    companies: tuple[str, ...] | None
    handler: HandlerFn

    def matches(self, event: Event) -> bool:
        return self.pattern.matches(event.type) and (
            self.companies is None or event.company_id in self.companies
        )


class Worker:
    """An application's worker: ``@worker.on("sms.*")`` registers a handler.

    An event goes to the first registered handler whose pattern (and companies) match it.
    The worker claims exactly the patterns its handlers are registered for. ``breaker``:
    when its circuit breaker stops every replica taking deliveries (on by default, see
    :class:`~consumers.runtime.breaker.BreakerPolicy`); ``rate_limit``: at most that many
    handler starts a second across its replicas, the rest waiting in the queue.
    """

    def __init__(
        self,
        app: str,
        *,
        prefetch: int = 16,
        retry: RetryPolicy | None = None,
        idempotency: IdempotencyStore | None = None,
        middleware: Sequence[Middleware] = (),
        shutdown_timeout: float = 30.0,
        breaker: BreakerPolicy | None = None,
        rate_limit: float | None = None,
    ) -> None:
        try:
            ClaimSpec.parse(app, "*")
        except InvalidClaim as error:
            raise WorkerConfigError(str(error)) from None
        if prefetch < 1:
            raise WorkerConfigError("prefetch must be at least 1")
        if rate_limit is not None and not (math.isfinite(rate_limit) and rate_limit > 0):
            raise WorkerConfigError(f"rate_limit must be a positive number, not {rate_limit}")
        self.app = app
        self.prefetch = prefetch
        self.retry = retry or RetryPolicy()
        self.idempotency: IdempotencyStore = idempotency or MemoryStore()
        self.shutdown_timeout = shutdown_timeout
        #: The circuit breaker's policy (:mod:`consumers.runtime.breaker`); the
        #: ``WORKER_BREAKER*`` settings win where set. None: the defaults (on).
        self.breaker = breaker
        #: At most this many handler starts a second across every replica (None: no limit;
        #: ``WORKER_RATE_LIMIT`` wins where set): :mod:`consumers.runtime.ratelimit`.
        self.rate_limit = rate_limit
        self.registry = CollectorRegistry(auto_describe=True)
        #: The breaker's, the pause's and the probes' series (:mod:`consumers.runtime.flow`).
        self.flow_metrics = FlowMetrics(app, self.registry)
        #: Undocumented event types with a ``type`` label of their own in the metrics (the
        #: runner sets it from ``ROUTER_METRICS_MAX_OTHER_TYPES``); the rest count as ``other``.
        self.metrics_max_other_types = DEFAULT_MAX_OTHER_TYPES
        self.routes: list[Route] = []
        self.on_startup: list[Hook] = []
        self.on_shutdown: list[Hook] = []
        self._extra_middleware = tuple(middleware)
        self._pipeline: Next | None = None

    def on(
        self, pattern: str, *, companies: Sequence[str] | None = None
    ) -> Callable[[HandlerFn], HandlerFn]:
        """Register the decorated coroutine for events matching ``pattern`` (and companies)."""
        if isinstance(companies, str):
            raise WorkerConfigError(
                f"companies must be a list of ids, not the string {companies!r}"
            )
        try:
            specs = self._specs(pattern, companies)
        except InvalidClaim as error:
            raise WorkerConfigError(str(error)) from None

        def register(handler: HandlerFn) -> HandlerFn:
            company_ids = tuple(companies) if companies is not None else None
            self.routes.append(Route(specs[0].pattern, company_ids, handler))
            self._pipeline = None
            return handler

        return register

    def _specs(self, pattern: str, companies: Sequence[str] | None) -> list[ClaimSpec]:
        if companies is None:
            return [ClaimSpec.parse(self.app, pattern)]
        if not companies:
            raise InvalidClaim("companies, when given, must name at least one company")
        return [ClaimSpec.parse(self.app, pattern, company) for company in companies]

    @property
    def claims(self) -> list[ClaimSpec]:
        """The claims this worker needs: one per pattern and company of its handlers."""
        specs: list[ClaimSpec] = []
        for route in self.routes:
            for spec in self._specs(str(route.pattern), route.companies):
                if not any(spec.same_as(other) for other in specs):
                    specs.append(spec)
        return specs

    def use_idempotency(self, store: IdempotencyStore) -> None:
        """Replace the idempotency store (before the worker handles anything)."""
        self.idempotency = store
        self._pipeline = None

    def route(self, event: Event) -> HandlerFn | None:
        """The handler an event goes to, if any."""
        return next((r.handler for r in self.routes if r.matches(event)), None)

    async def handle(self, event: Event) -> Outcome:
        """Run one event through the pipeline; what should become of the delivery."""
        if self._pipeline is None:
            self._pipeline = chain(
                [
                    Logging(self.app),
                    Metrics(self.app, self.registry, self.metrics_max_other_types),
                    Retries(self.retry),
                    *self._extra_middleware,
                    Idempotency(self.app, self.idempotency),
                ],
                self._dispatch,
            )
        return await self._pipeline(event)

    async def _dispatch(self, event: Event) -> Outcome:
        handler = self.route(event)
        if handler is None:
            raise NoHandler(f"no handler of {self.app} for {event.type} of {event.company_id}")
        await handler(event)
        return Handled()


__all__ = ["HandlerFn", "Route", "Worker"]
