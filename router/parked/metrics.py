"""The keeper's Prometheus families, registered in the registry of the page they appear on.

Inside ``serve`` that is the ingress's registry, so they are on the internal listener's
``/metrics`` beside the ingress's (with ``--workers``, under the first process's
``process="0"``); the counters count what the keeper did, the gauges are what it last read
(every ``ROUTER_KEEPER_STATS_INTERVAL`` seconds): the landing zones' depths and the store's
size and oldest parked entry; and every ``ROUTER_KEEPER_PARKED_INTERVAL`` seconds how many
entries are still parked in each landing zone's place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge

from router.parked.jobs import Job, JobKind, JobState
from router.parked.query import StoreStats


class KeeperMetrics:
    """Counters and gauges of one keeper."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        #: The reasons shown so far per (place, app), to show 0 for one that is gone.
        self._reasons: dict[tuple[str, str], set[str]] = {}
        self.stored = Counter(
            "attentive_router_keeper_entries_stored",
            "Deliveries from the landing zones stored as new parked entries.",
            registry=self.registry,
        )
        self.duplicates = Counter(
            "attentive_router_keeper_duplicates_skipped",
            "Deliveries the store already held (redelivered, or seen by another keeper).",
            registry=self.registry,
        )
        self.batches = Counter(
            "attentive_router_keeper_batches_committed",
            "Batches committed to the parked-event store (then acked).",
            registry=self.registry,
        )
        self.store_failures = Counter(
            "attentive_router_keeper_store_failures",
            "Commits (or store openings) that failed: the batch waits unacked and is retried.",
            registry=self.registry,
        )
        self.expired = Counter(
            "attentive_router_parked_entries_expired",
            "Replayed or purged entries deleted by retention (ROUTER_PARKED_RETENTION_DAYS).",
            registry=self.registry,
        )
        self.lag = Gauge(
            "attentive_router_keeper_lag_messages",
            "Messages ready in each landing zone (not yet delivered to a keeper), as last read.",
            ["queue"],
            registry=self.registry,
        )
        self.parked = Gauge(
            "attentive_router_parked_entries",
            "Entries still parked, by place, application (none for unrouted and invalid) and "
            "reason, as last read; every keeper reports the same store: aggregate with max.",
            ["place", "app", "reason"],
            registry=self.registry,
        )
        self.jobs = Gauge(
            "attentive_router_parked_jobs",
            "Replay and purge jobs waiting for a keeper or running, as last read.",
            ["state"],
            registry=self.registry,
        )
        self.jobs_remaining = Gauge(
            "attentive_router_parked_job_entries_remaining",
            "Entries the queued and running jobs have yet to handle, by kind, as last read.",
            ["kind"],
            registry=self.registry,
        )
        self.store_entries = Gauge(
            "attentive_router_parked_store_entries",
            "Entries in the parked-event store, of any state, as last read.",
            registry=self.registry,
        )
        self.store_parked = Gauge(
            "attentive_router_parked_store_parked",
            "Entries still parked (not replayed, not purged), as last read.",
            registry=self.registry,
        )
        self.oldest_parked_age = Gauge(
            "attentive_router_parked_oldest_age_seconds",
            "Age of the oldest entry still parked (0 when none), as last read.",
            registry=self.registry,
        )

    def count_batch(self, delivered: int, new: int) -> None:
        """One committed batch of ``delivered`` deliveries, ``new`` of them new to the store."""
        self.batches.inc()
        self.stored.inc(new)
        self.duplicates.inc(delivered - new)

    def show_parked(self, place: str, app: str | None, by_reason: Mapping[str, int]) -> None:
        """How many entries of ``place`` (and ``app``) are still parked, by reason; a reason
        counted before and gone now is shown as 0."""
        key = (place, app or "")
        for reason in self._reasons.get(key, set()) - set(by_reason):
            self.parked.labels(place, app or "", reason).set(0)
        for reason, count in by_reason.items():
            self.parked.labels(place, app or "", reason).set(count)
        self._reasons[key] = self._reasons.get(key, set()) | set(by_reason)

    def show_jobs(self, jobs: Iterable[Job]) -> None:
        """The jobs still to end (queued or running): how many, and how much they have left."""
        states = dict.fromkeys((JobState.QUEUED, JobState.RUNNING), 0)
        remaining = dict.fromkeys(JobKind, 0)
        for job in jobs:
            if job.state in states:
                states[job.state] += 1
                remaining[job.kind] += job.remaining
        for state, count in states.items():
            self.jobs.labels(state.value).set(count)
        for kind, left in remaining.items():
            self.jobs_remaining.labels(kind.value).set(left)

    def show_stats(self, stats: StoreStats, now: datetime | None = None) -> None:
        """The store's size and oldest parked entry, as :meth:`ParkedStore.stats` read them."""
        self.store_entries.set(stats.entries)
        self.store_parked.set(stats.parked)
        oldest = stats.oldest_parked_at
        age = 0.0 if oldest is None else ((now or datetime.now(UTC)) - oldest).total_seconds()
        self.oldest_parked_age.set(max(age, 0.0))


__all__ = ["KeeperMetrics"]
