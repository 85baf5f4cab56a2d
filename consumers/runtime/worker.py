"""A worker's definition: its application name, its handlers, and how it retries.

Defining one touches no broker; :mod:`consumers.runtime.runner` runs it, and
:mod:`consumers.testing` runs its handlers in-process. A handler that keeps state per
subscriber opts in to newest wins with a key family (``newest="subscription"``): see
:mod:`consumers.runtime.newest_guard`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry

from consumers.runtime.breaker import BreakerPolicy
from consumers.runtime.errors import NoHandler, WorkerConfigError
from consumers.runtime.event import Event
from consumers.runtime.flow import FlowMetrics
from consumers.runtime.idempotency import IdempotencyStore, MemoryStore
from consumers.runtime.lanes import Leases
from consumers.runtime.middleware import (
    Idempotency,
    Logging,
    Metrics,
    Middleware,
    Next,
    Retries,
    chain,
)
from consumers.runtime.newest import DEFAULT_SKEW
from consumers.runtime.newest_guard import NewestWins, subject_key
from consumers.runtime.newest_stores import (
    DEFAULT_KEY_LEASE,
    MemoryNewestStore,
    NewestStore,
    check_seconds,
)
from consumers.runtime.outcomes import Handled, Outcome
from consumers.runtime.retry import RetryPolicy
from consumers.runtime.typed import HandlerFn, Register, as_handler
from router.claims.model import ClaimSpec, EventPattern
from router.contract.type_labels import DEFAULT_MAX_OTHER_TYPES
from router.errors import InvalidClaim

#: A handler as registered: of an Event, or of a model (:mod:`consumers.runtime.typed`).
H = TypeVar("H", bound=Callable[..., Awaitable[None]])
Hook = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    """A handler and what it is for."""

    pattern: EventPattern
    companies: tuple[str, ...] | None
    handler: HandlerFn
    #: The key family the handler keeps the newest state of (None: not guarded).
    newest: str | None = None

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

    ``@worker.on(pattern, newest="subscription")``: newest wins for that handler's events, one
    handler per subscriber at a time (:mod:`consumers.runtime.newest_guard`); the newest times
    and the keys' leases live in :attr:`newest_store` (this process's memory until
    :meth:`use_newest` gives it a shared one, as the runner does from
    ``WORKER_IDEMPOTENCY_URL``).
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
        #: Where newest wins keeps the newest time and the lease of each key.
        self.newest_store: NewestStore = MemoryNewestStore()
        #: Seconds an event time may be ahead of this process's clock and still be trusted.
        self.newest_skew = DEFAULT_SKEW
        #: Seconds a key's lease holds unless renewed (a replica killed mid-handler blocks
        #: its key for at most this long).
        self.key_lease = DEFAULT_KEY_LEASE
        self._extra_middleware = tuple(middleware)
        #: The handler's span, innermost, with tracing on (:meth:`use_tracing`).
        self._handler_span: tuple[Middleware, ...] = ()
        self._pipeline: Next | None = None
        # made once: each registers its series in the worker's registry
        self._metrics: Metrics | None = None
        self._guard: NewestWins | None = None

    def on(
        self,
        pattern: str,
        *,
        companies: Sequence[str] | None = None,
        newest: str | None = None,
    ) -> Register:
        """Register the decorated coroutine for events matching ``pattern`` (and companies).

        It takes an :class:`Event`, or the model of its events (``event: SmsSubscribed``,
        a union of models), then optionally the :class:`Event`: :mod:`consumers.runtime.typed`.

        ``newest``: the key family whose state the handler keeps (``subscription``,
        ``attribute``): of the events of one subscriber (and attribute) only those newer than
        the newest handled are handled, one at a time. Handlers sharing a family share it."""
        if isinstance(companies, str):
            raise WorkerConfigError(
                f"companies must be a list of ids, not the string {companies!r}"
            )
        if newest is not None and not (isinstance(newest, str) and newest.strip()):
            raise WorkerConfigError(f"newest must name a key family, not {newest!r}")
        try:
            specs = self._specs(pattern, companies)
        except InvalidClaim as error:
            raise WorkerConfigError(str(error)) from None

        def register(handler: H) -> H:
            company_ids = tuple(companies) if companies is not None else None
            call = as_handler(handler, specs[0].pattern)
            self.routes.append(Route(specs[0].pattern, company_ids, call, newest))
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

    def use_newest(
        self,
        store: NewestStore,
        *,
        skew: float = DEFAULT_SKEW,
        lease: float = DEFAULT_KEY_LEASE,
    ) -> None:
        """Replace the newest-wins store, the skew and the key lease (before the worker
        handles anything: what the old store held is not carried over)."""
        self.newest_skew = check_seconds("skew", skew)
        self.key_lease = check_seconds("key lease", lease)
        self.newest_store = store
        if self._guard is not None:
            self._guard.leases = Leases(store, self.app, lease=self.key_lease)
            self._guard.store = store
            self._guard.skew = self.newest_skew

    def use_tracing(self, handler_span: Middleware) -> None:
        """Run each handler inside ``handler_span`` (the runner does, with tracing on:
        :mod:`consumers.runtime.tracing`)."""
        self._handler_span = (handler_span,)
        self._pipeline = None

    @property
    def families(self) -> frozenset[str]:
        """The key families the handlers opted in to newest wins with."""
        return frozenset(r.newest for r in self.routes if r.newest is not None)

    def route(self, event: Event) -> HandlerFn | None:
        """The handler an event goes to, if any."""
        return next((r.handler for r in self.routes if r.matches(event)), None)

    def family_of(self, event: Event) -> str | None:
        """The key family of the handler an event goes to, if it has one."""
        return next((r.newest for r in self.routes if r.matches(event)), None)

    def lane_of(self, event: Event) -> tuple[str, str] | None:
        """The key whose handlers run one at a time, in arrival order, that ``event`` is of:
        its handler's family and its subject key; None when it has either not."""
        family = self.family_of(event)
        if family is None:
            return None
        key = subject_key(event.headers)
        return None if key is None else (family, key)

    async def handle(self, event: Event) -> Outcome:
        """Run one event through the pipeline; what should become of the delivery.

        The pipeline awaits nothing before the newest-wins guard takes the event's place in
        its key's lane, so a key's events start in the order ``handle`` was called."""
        if self._pipeline is None:
            self._pipeline = self._build_pipeline()
        return await self._pipeline(event)

    def _build_pipeline(self) -> Next:
        if self._metrics is None:
            self._metrics = Metrics(self.app, self.registry, self.metrics_max_other_types)
        guard: list[Middleware] = []
        if self.families:
            if self._guard is None:
                self._guard = NewestWins(
                    self.family_of,
                    Leases(self.newest_store, self.app, lease=self.key_lease),
                    self.registry,
                    skew=self.newest_skew,
                )
            guard.append(self._guard)
        return chain(
            [
                Logging(self.app),
                self._metrics,
                Retries(self.retry),
                *self._extra_middleware,
                *guard,
                Idempotency(self.app, self.idempotency),
                *self._handler_span,
            ],
            self._dispatch,
        )

    async def _dispatch(self, event: Event) -> Outcome:
        handler = self.route(event)
        if handler is None:
            raise NoHandler(f"no handler of {self.app} for {event.type} of {event.company_id}")
        await handler(event)
        return Handled()


__all__ = ["HandlerFn", "Route", "Worker"]
