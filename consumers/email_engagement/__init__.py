"""email-engagement: per-company email engagement counters for Prometheus.

Every ``email.*`` event increments ``attentive_email_engagement_total{company, kind}``, kind
one of sent, opened, clicked (``email.message_link_click``), subscribed, unsubscribed, or
other for types Attentive adds later. A redelivered webhook is skipped by the runtime's
idempotency, so it is not counted twice. Run it with ``attentive-router worker
consumers.email_engagement:worker`` and ``WORKER_METRICS_PORT`` set: the counters are served
on ``/metrics`` there.
"""

from consumers.email_engagement.worker import build_worker

#: Built at import: a registry and a counter, no I/O.
worker = build_worker()

__all__ = ["build_worker", "worker"]
