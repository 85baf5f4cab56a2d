"""Retention: entries replayed or purged longer ago than the retention are deleted.

Every keeper runs one (several at once delete the same rows once). An entry still parked is
never deleted, however old: only ops' replay or purge makes an entry expire. A store that
cannot be reached is logged and tried again at the next sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from router.parked.metrics import KeeperMetrics
from router.parked.store import ParkedStore, ParkedStoreError

log = structlog.get_logger("router.parked.janitor")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Janitor:
    """Deletes expired entries from ``store`` every ``interval`` seconds."""

    store: ParkedStore
    retention: timedelta
    interval: float
    metrics: KeeperMetrics | None = None
    clock: Callable[[], datetime] = _now

    async def sweep(self) -> int:
        """Delete what has expired now; how many entries (0 when the store failed)."""
        try:
            deleted = await self.store.delete_expired(self.retention, now=self.clock())
        except ParkedStoreError as error:
            log.warning("parked_retention_failed", error=str(error), retrying=True)
            return 0
        if deleted:
            log.info("parked_entries_expired", deleted=deleted, retention=str(self.retention))
        if self.metrics is not None:
            self.metrics.expired.inc(deleted)
        return deleted

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep now, then every ``interval`` seconds, until ``stop`` is set."""
        while not stop.is_set():
            await self.sweep()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)


__all__ = ["Janitor"]
