"""Committing the keeper's batches to the parked-event store, through outages.

A batch is retried until the store takes it: while the database is down the keeper acks
nothing, so its deliveries stay unacked at the broker (the consumers' prefetch bounds them)
and the rest wait in their queues. An outage is logged once when it begins and once when it
ends (with how long it lasted and how many attempts failed); each failed attempt is counted.
The store's errors name its database, never a password (the URL is a
:class:`~router.secret.SecretUrl`), and only their text is logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog

from router.parked.metrics import KeeperMetrics
from router.parked.model import ParkedEvent
from router.parked.store import ParkedStore, ParkedStoreError

log = structlog.get_logger("router.parked.keeper")

T = TypeVar("T")

#: Seconds before the first retry after a failure; doubled after each one, up to the most.
FIRST_BACKOFF = 0.25
MOST_BACKOFF = 10.0


class Committer:
    """The store as the keeper uses it: opened (and upgraded) and written to, with retries."""

    def __init__(
        self,
        store: ParkedStore,
        metrics: KeeperMetrics | None = None,
        *,
        database: str = "",
        first_backoff: float = FIRST_BACKOFF,
        most_backoff: float = MOST_BACKOFF,
    ) -> None:
        self.store = store
        self.metrics = metrics
        #: The database as logs name it (its URL with the password hidden).
        self.database = database
        self._first_backoff = first_backoff
        self._most_backoff = most_backoff
        self._down_since: float | None = None
        self._failures = 0

    @property
    def available(self) -> bool:
        """False from a failure until the next success."""
        return self._down_since is None

    async def prepare(self, *, upgrade: bool) -> None:
        """Open the store, and apply its migrations when ``upgrade``, retrying until done."""

        async def opened() -> None:
            await self.store.open()
            if upgrade:
                version = await self.store.upgrade()
                log.info("parked_store_ready", database=self.database, schema_version=version)

        await self._until_done("opening", opened)

    async def commit(self, entries: Sequence[ParkedEvent]) -> int:
        """Store ``entries`` in one transaction, retrying until it is done; how many were new.

        Cancelling it (the keeper stopping) leaves the batch unacked: the broker redelivers it.
        """
        new = await self._until_done("committing", lambda: self.store.add_many(entries))
        if self.metrics is not None:
            self.metrics.count_batch(len(entries), new)
        return new

    async def _until_done(self, doing: str, attempt: Callable[[], Awaitable[T]]) -> T:
        backoff = self._first_backoff
        while True:
            try:
                done = await attempt()
            except ParkedStoreError as error:
                self._failed(doing, error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._most_backoff)
                continue
            self._succeeded()
            return done

    def _failed(self, doing: str, error: ParkedStoreError) -> None:
        self._failures += 1
        if self.metrics is not None:
            self.metrics.store_failures.inc()
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "parked_store_unavailable",
                doing=doing,
                database=self.database,
                error=str(error),
                retrying=True,
            )

    def _succeeded(self) -> None:
        if self._down_since is not None:
            log.info(
                "parked_store_available",
                database=self.database,
                down_seconds=round(time.monotonic() - self._down_since, 1),
                failed_attempts=self._failures,
            )
            self._down_since = None
            self._failures = 0


__all__ = ["MOST_BACKOFF", "Committer"]
