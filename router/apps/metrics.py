"""Which applications are paused, and for how long, as Prometheus gauges.

Every router process that serves the admin API reads the store every
:data:`REFRESH_INTERVAL` seconds and sets, per application ever paused,
``attentive_router_app_paused`` (1 or 0) and ``attentive_router_app_paused_seconds`` (0 while
it runs). Every router reads the same database: aggregate with ``max``. The alert "an
application paused longer than ..." is a threshold on the second (``deploy/prometheus``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime

import structlog
from prometheus_client import CollectorRegistry, Gauge

from router.apps.model import AppState
from router.apps.store import AppStateStore
from router.errors import RouterError

log = structlog.get_logger("router.apps.metrics")

#: Seconds between two reads of the store for the gauges.
REFRESH_INTERVAL = 15.0


class AppMetrics:
    """The gauges, in ``registry`` (the page they are scraped from)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.paused = Gauge(
            "attentive_router_app_paused",
            "1 while an application is paused by hand (attentive-router apps pause), else 0, "
            "as last read; every router reports the same store: aggregate with max.",
            ["app"],
            registry=self.registry,
        )
        self.paused_seconds = Gauge(
            "attentive_router_app_paused_seconds",
            "How long an application has been paused by hand (0 while it runs), as last read.",
            ["app"],
            registry=self.registry,
        )

    def show(self, states: Iterable[AppState], now: datetime) -> None:
        """Set both gauges of each application in ``states`` as of ``now``."""
        for state in states:
            self.paused.labels(state.app).set(1 if state.paused else 0)
            self.paused_seconds.labels(state.app).set(state.paused_seconds(now))


async def refresh(
    store: AppStateStore, metrics: AppMetrics, *, interval: float = REFRESH_INTERVAL
) -> None:
    """Show the store's states every ``interval`` seconds, until cancelled; a store that
    cannot be read is logged and read again at the next turn."""
    while True:
        try:
            metrics.show(await store.list(), datetime.now(UTC))
        except RouterError as error:
            log.warning("app_metrics_not_refreshed", error=str(error))
        await asyncio.sleep(interval)


__all__ = ["REFRESH_INTERVAL", "AppMetrics", "refresh"]
