"""One handler per key at a time: per-key lanes in a process, a lease per key across replicas.

:class:`Lanes`: the deliveries a process holds (its prefetch) start their handlers in
arrival order per key and in parallel across keys. A lane is the queue of handler starts
waiting for one key; a delivery takes its place with :meth:`Lanes.turn` as it arrives, and an
empty lane is dropped, so the lanes cost nothing for keys at rest. Lanes add no capacity: a
delivery waiting in a lane holds its prefetch slot.

:class:`Leases`: across replicas, the key's lease in a shared
:class:`~consumers.runtime.newest_stores.NewestStore`. A replica that cannot acquire it (another
replica is handling the key) returns the delivery for later
(:class:`~consumers.runtime.outcomes.Deferred`). A held lease is renewed every third of its
length while the handler runs, so a slow handler keeps it and a replica killed mid-handler
blocks its key for at most one lease. Taking a lease reads the key's newest event in the same
round trip, and releasing it can record the handled event's time in the same round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Hashable
from types import TracebackType

import structlog

from consumers.runtime.newest import Recorded
from consumers.runtime.newest_stores import (
    DEFAULT_KEY_LEASE,
    Leased,
    NewestStore,
    check_seconds,
    new_owner,
)

log = structlog.get_logger("consumers")


class Lanes:
    """Per-key lanes of one process: ``async with lanes.turn(key):`` runs its body after every
    earlier turn of ``key`` ended, and alongside the turns of other keys."""

    def __init__(self) -> None:
        #: Per key, the waiting turns; the first one is running (its future is done).
        self._lanes: dict[Hashable, deque[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        """How many keys have a turn running or waiting."""
        return len(self._lanes)

    def turn(self, key: Hashable) -> Turn:
        """A place at the end of ``key``'s lane, taken now (call it before the delivery's
        first ``await``, so the lane keeps the order deliveries arrived in)."""
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = deque()
            ready.set_result(None)
        lane.append(ready)
        return Turn(self, key, ready)

    def _leave(self, key: Hashable, ready: asyncio.Future[None]) -> None:
        """Take ``ready`` out of ``key``'s lane; if it was running, start the next turn."""
        lane = self._lanes[key]
        if lane[0] is not ready:
            lane.remove(ready)  # cancelled while waiting
            return
        lane.popleft()
        if not lane:
            del self._lanes[key]
        elif not lane[0].done():  # a cancelled next turn leaves by itself, and passes it on
            lane[0].set_result(None)


class Turn:
    """A place in a key's lane (:meth:`Lanes.turn`): entering waits for it, leaving passes
    the lane on."""

    __slots__ = ("_key", "_lanes", "_ready")

    def __init__(self, lanes: Lanes, key: Hashable, ready: asyncio.Future[None]) -> None:
        self._lanes = lanes
        self._key = key
        self._ready = ready

    async def __aenter__(self) -> None:
        try:
            await self._ready
        except BaseException:
            self._lanes._leave(self._key, self._ready)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lanes._leave(self._key, self._ready)


class Leases:
    """Leases on keys for this process (one ``owner``) in a shared store, ``lease`` seconds
    each, renewed while held."""

    def __init__(
        self,
        store: NewestStore,
        app: str,
        *,
        lease: float = DEFAULT_KEY_LEASE,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.app = app
        self.lease = check_seconds("key lease", lease)
        self.owner = owner or new_owner()

    def of(self, family: str, key: str) -> Lease:
        """The lease on ``key`` of ``family`` (not yet acquired)."""
        return Lease(self, family, key)


class Lease:
    """One key's lease: :meth:`take` (or :meth:`acquire`) it, then :meth:`release` it once the
    handler ended.

    While held, it is renewed every third of its length in the background."""

    __slots__ = ("_family", "_key", "_leases", "_renewal", "_renewing")

    def __init__(self, leases: Leases, family: str, key: str) -> None:
        self._leases = leases
        self._family = family
        self._key = key
        self._renewal: asyncio.TimerHandle | None = None
        self._renewing: asyncio.Task[None] | None = None

    async def take(self) -> Leased | None:
        """Take the lease and read the key's newest event, in one step; None if another owner
        holds it (the delivery should come back later). A store error raises."""
        leases = self._leases
        taken = await leases.store.acquire_and_read(
            leases.app, self._family, self._key, leases.owner, leases.lease
        )
        if taken is not None:
            self._schedule()
        return taken

    async def acquire(self) -> bool:
        """Take the lease (or extend it); False if another owner holds it. A store error
        raises."""
        leases = self._leases
        held = await leases.store.acquire(
            leases.app, self._family, self._key, leases.owner, leases.lease
        )
        if held:
            self._schedule()
        return held

    async def release(self, record: Recorded | None = None) -> None:
        """Stop renewing and give the lease up, recording ``record`` as the key's newest event
        in the same step when given.

        A store error while recording raises (after a plain release is tried), so the delivery
        is retried; one while only releasing is logged (the lease then lapses by itself)."""
        await self._stop_renewing()
        if record is None:
            await self._release()
            return
        leases = self._leases
        try:
            held = await leases.store.record_and_release(
                leases.app, self._family, self._key, leases.owner, record
            )
        except BaseException:
            await self._release()
            raise
        if not held:
            log.warning("key_lease_lost", family=self._family, key=self._key)

    async def _stop_renewing(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
            self._renewing = None

    async def _release(self) -> None:
        leases = self._leases
        try:
            if not await leases.store.release(leases.app, self._family, self._key, leases.owner):
                log.warning("key_lease_lost", family=self._family, key=self._key)
        except Exception as error:
            log.warning("key_lease_release_failed", family=self._family, error=str(error))

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._renewal = loop.call_later(self._leases.lease / 3, self._start_renewal)

    def _start_renewal(self) -> None:
        self._renewal = None
        self._renewing = asyncio.create_task(self._renew(), name=f"renew lease {self._key}")

    async def _renew(self) -> None:
        """Extend the lease and schedule the next renewal; if it was lost or the store
        failed, log it and stop (the handler runs to its end regardless)."""
        try:
            if await self.acquire():
                return
            log.warning("key_lease_lost", family=self._family, key=self._key)
        except Exception as error:
            log.warning("key_lease_renewal_failed", family=self._family, error=str(error))


__all__ = ["Lanes", "Lease", "Leases", "Turn"]
