"""The keeper's settings: whether ``serve`` runs it, how it batches, how often it looks around.

Read once at the edge (the CLI) through :mod:`router.config`, from the variables in
:data:`VARIABLES`; the broker's and the database's URLs and the namespace are the router's own
(:class:`~router.settings.Settings`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from router import config
from router.config import Variable


@dataclass(frozen=True, kw_only=True)
class KeeperSettings:
    """How the keeper drains the landing zones into the parked-event store."""

    #: ``serve`` runs a keeper in its first process (``attentive-router keeper`` always does).
    enabled: bool = True
    #: Entries committed in one transaction, at most.
    batch_size: int = 1000
    #: Seconds a batch that is not full waits for more deliveries before it is committed.
    batch_wait: float = 0.2
    #: Deliveries each landing zone's consumer holds unacked (per-consumer QoS): what waits
    #: in memory while the store is down; more than a batch, so the next one fills during a
    #: commit.
    prefetch: int = 2000
    #: Seconds between two readings of the claims registry (a newly claimed application's
    #: DLQ is drained from the next one on).
    apps_interval: float = 5.0
    #: Seconds between two readings of the landing zones' depths and the store's size.
    stats_interval: float = 5.0
    #: Seconds between two countings of the entries still parked in each place (a count
    #: per landing zone: slower than the other statistics, for a store of millions).
    parked_interval: float = 30.0
    #: Apply the store's schema migrations at start (serve is the only writer by default).
    upgrade: bool = True
    #: Run replay and purge jobs too (:class:`~router.parked.runner.JobRunner`).
    jobs: bool = True
    #: Seconds a job's runner holds it without renewing (it renews every second while it
    #: runs): how long a job whose keeper died waits before another keeper resumes it.
    job_lease: int = 30
    #: Days an entry is kept after it was replayed or purged (never while it is parked).
    retention_days: int = 30
    #: Seconds between two retention sweeps (:class:`~router.parked.janitor.Janitor`).
    janitor_interval: float = 3600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> KeeperSettings:
        """Settings from the ``ROUTER_KEEPER*`` variables; ``overrides`` win where not None."""
        return config.load(cls, env, VARIABLES, overrides)


#: The variable each field is read from (field → variable).
VARIABLES: Final[Mapping[str, Variable[Any]]] = {
    "enabled": config.boolean("ROUTER_KEEPER"),
    "batch_size": config.integer("ROUTER_KEEPER_BATCH_SIZE", 1, 10_000),
    "batch_wait": config.seconds("ROUTER_KEEPER_BATCH_WAIT", zero=True),
    "prefetch": config.integer("ROUTER_KEEPER_PREFETCH", 1, 65_535),
    "apps_interval": config.seconds("ROUTER_KEEPER_APPS_INTERVAL"),
    "stats_interval": config.seconds("ROUTER_KEEPER_STATS_INTERVAL"),
    "parked_interval": config.seconds("ROUTER_KEEPER_PARKED_INTERVAL"),
    "upgrade": config.boolean("ROUTER_DATABASE_UPGRADE"),
    "jobs": config.boolean("ROUTER_KEEPER_JOBS"),
    "job_lease": config.integer("ROUTER_KEEPER_JOB_LEASE", 3, 3600),
    "retention_days": config.integer("ROUTER_PARKED_RETENTION_DAYS", 1, 36_500),
    "janitor_interval": config.seconds("ROUTER_KEEPER_JANITOR_INTERVAL"),
}


__all__ = ["VARIABLES", "KeeperSettings"]
