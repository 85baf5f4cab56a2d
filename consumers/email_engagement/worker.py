"""The email-engagement worker: per-company counts of email engagement, as Prometheus metrics."""

from __future__ import annotations

import os
from collections.abc import Mapping

from prometheus_client import Counter

from consumers.runtime.event import Event
from consumers.runtime.worker import Worker

APP = "email-engagement"
#: The counter's name as scraped (prometheus_client adds ``_total``).
METRIC = "attentive_email_engagement_total"

#: The kind each email event counts as; types Attentive adds later count as "other".
KINDS: dict[str, str] = {
    "email.sent": "sent",
    "email.opened": "opened",
    "email.message_link_click": "clicked",
    "email.subscribed": "subscribed",
    "email.unsubscribed": "unsubscribed",
}


def build_worker(env: Mapping[str, str] = os.environ) -> Worker:
    """The worker; it needs no configuration of its own (``WORKER_METRICS_PORT`` serves the
    counts on /metrics, read by the runtime)."""
    worker = Worker(APP)
    engagement = Counter(
        METRIC.removesuffix("_total"),
        "Email engagement events by company and kind "
        "(sent, opened, clicked, subscribed, unsubscribed, other).",
        ["company", "kind"],
        registry=worker.registry,
    )

    @worker.on("email.*")
    async def count(event: Event) -> None:
        engagement.labels(event.company_id, KINDS.get(event.type, "other")).inc()

    return worker


__all__ = ["APP", "KINDS", "METRIC", "build_worker"]
