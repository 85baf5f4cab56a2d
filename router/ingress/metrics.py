"""The ingress's Prometheus metrics, each in a registry of its own (so tests can run many),
served on the internal listener (:mod:`router.ingress.internal`), never on the webhook port."""

from __future__ import annotations

import time
from enum import StrEnum

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from router.contract.events import EVENT_TYPES
from router.contract.type_labels import DEFAULT_MAX_OTHER_TYPES, OTHER, TypeLabels

CONTENT_TYPE = CONTENT_TYPE_LATEST
# The *_created series double the exposition for no use here.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Outcome(StrEnum):
    """What the ingress did with one request: the ``outcome`` label and log field."""

    ACCEPTED = "accepted"  # 200: published and confirmed
    QUARANTINED = "quarantined"  # 202: authentic but unusable, parked in attentive.invalid
    UNAUTHORIZED = "unauthorized"  # 401: missing or wrong signature
    KEY_NOT_FOR_COMPANY = "key_not_for_company"  # 401: signed by a key bound to other companies
    FORBIDDEN = "forbidden"  # 403: subscription URL of another company
    NOT_FOUND = "not_found"  # 404
    METHOD_NOT_ALLOWED = "method_not_allowed"  # 405
    BAD_REQUEST = "bad_request"  # 400, 415, 431, 501, 505: a request its connection refused
    TIMEOUT = "timeout"  # 408: a body that did not arrive in time
    TOO_LARGE = "too_large"  # 413
    UNAVAILABLE = "unavailable"  # 503: the broker did not confirm
    ERROR = "error"  # 500: a bug


#: Seconds a rendered ``/metrics`` page is served again before it is rendered anew.
PAGE_MAX_AGE = 1.0


class Metrics:
    """Counters, gauges and histograms of one ingress app.

    ``max_other_types``: how many undocumented event types get a ``type`` label of their own
    (:class:`~router.contract.type_labels.TypeLabels`); the rest are counted as ``other``."""

    def __init__(self, max_other_types: int = DEFAULT_MAX_OTHER_TYPES) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._page = b""
        self._page_at: float | None = None
        self.requests = Counter(
            "attentive_router_requests",
            "Webhook requests answered, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.published = Counter(
            "attentive_router_events_published",
            "Events published and confirmed, by type; known=false for types Attentive has "
            "not documented (yet), type=other for those beyond the first few of them.",
            ["type", "known"],
            registry=self.registry,
        )
        self.quarantined = Counter(
            "attentive_router_events_quarantined",
            "Authentic but unusable webhooks parked in the invalid queue, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.confirm_seconds = Histogram(
            "attentive_router_confirm_seconds",
            "Time from publish to the broker's confirm (or failure).",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "attentive_router_publishes_in_flight",
            "Publishes waiting for the broker's confirm.",
            registry=self.registry,
        )
        self.broker_ready = Gauge(
            "attentive_router_broker_ready",
            "1 when connected to RabbitMQ with the topology declared and not blocked.",
            registry=self.registry,
        )
        # The label children of the hot path, resolved once (labels() takes a lock each call).
        self.request_outcomes = {
            outcome: self.requests.labels(outcome.value) for outcome in Outcome
        }
        self._type_labels = TypeLabels(max_other_types)
        self._published_by_type = {t: self.published.labels(t, "true") for t in EVENT_TYPES}
        self._published_other = self.published.labels(OTHER, "false")

    def count_published(self, event_type: str, known: bool) -> None:
        """One more event of ``event_type`` published, under the type's label (``other`` for
        undocumented types beyond ``max_other_types``)."""
        child = self._published_by_type.get(event_type)
        if child is None:
            label = self._type_labels(event_type)
            if label == OTHER:
                child = self._published_other
            else:
                child = self.published.labels(label, "true" if known else "false")
                self._published_by_type[label] = child
        child.inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def page(self) -> bytes:
        """:meth:`render`'s text, rendered at most once per :data:`PAGE_MAX_AGE` seconds.

        The event loop that renders it also answers webhooks: a flood of scrapes (pipelined,
        on many connections, from whoever reaches the internal listener) would otherwise
        render it for each and hold the loop. A scraper polls every few seconds and so always
        gets a fresh copy."""
        now = time.monotonic()
        if self._page_at is None or now - self._page_at >= PAGE_MAX_AGE:
            self._page, self._page_at = self.render(), now
        return self._page


__all__ = ["CONTENT_TYPE", "Metrics", "Outcome"]
