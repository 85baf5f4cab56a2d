"""Where newest wins keeps, per key, the newest event applied and who is handling the key.

A :class:`NewestStore` answers two questions per ``(app, family, key)``:

* the newest event applied (:meth:`~NewestStore.newest`), moved forward only by
  :meth:`~NewestStore.record`, an atomic compare-and-set that keeps the greater
  :class:`~consumers.runtime.newest.Recorded` (a later time, or an unsubscribe on a tie), so
  two replicas recording at once cannot move it back; it is forgotten ``retention`` seconds
  after it was last moved;
* who handles the key now: :meth:`~NewestStore.acquire` takes a lease for an owner (or
  extends the owner's own), :meth:`~NewestStore.release` gives it up, so one replica at a time
  handles a key and a replica killed mid-handler blocks it for at most the lease.

The guard asks both once per event in two round trips, not four:
:meth:`~NewestStore.acquire_and_read` (the lease, and if held the newest event) before the
handler, :meth:`~NewestStore.record_and_release` (the compare-and-set, and the lease given up)
after it; each is one atomic step of the store.

:class:`MemoryNewestStore` is this process only; Redis (:mod:`consumers.runtime.newest_redis`)
and PostgreSQL (:mod:`consumers.runtime.newest_postgres`) share it between replicas, opened from
the idempotency store's URLs by :mod:`consumers.runtime.newest_open`.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from consumers.runtime.errors import ConsumerError, WorkerConfigError
from consumers.runtime.newest import Recorded
from router.errors import Unavailable

#: How long a key's newest event is remembered after it was recorded, unless told otherwise:
#: 30 days, past Attentive's three days of retries and the replay of a dead letter parked for
#: weeks. An event of a key forgotten by then is applied.
DEFAULT_RETENTION = 30 * 24 * 3600.0
#: How long a key's lease holds unless renewed: a replica killed mid-handler blocks its key
#: for at most this long. The runtime renews the lease of a handler still running.
DEFAULT_KEY_LEASE = 60.0
#: How many keys a memory store remembers at most (the least recently recorded go first).
DEFAULT_MAX_ENTRIES = 1_000_000


class NewestStoreError(ConsumerError, Unavailable):
    """A shared newest-wins store could not be reached or answered with an error."""


@dataclass(frozen=True, slots=True)
class Leased:
    """The key's lease is held: ``newest`` is its newest event recorded (None: none, or
    forgotten past the retention), read in the same step."""

    newest: Recorded | None


class NewestStore(Protocol):
    """The newest event applied per ``(app, family, key)``, and a lease per key."""

    async def open(self) -> None:
        """Connect (and create what is missing)."""

    async def close(self) -> None:
        """Release connections."""

    async def newest(self, app: str, family: str, key: str) -> Recorded | None:
        """The newest event recorded for the key within the retention, if any."""

    async def record(self, app: str, family: str, key: str, event: Recorded) -> bool:
        """Make ``event`` the key's newest if it is greater than the newest recorded (or none
        is), atomically; False if it was not (nothing is changed then)."""

    async def acquire(self, app: str, family: str, key: str, owner: str, lease: float) -> bool:
        """Hold the key's lease for ``owner`` for ``lease`` seconds, atomically: True if it
        was free, expired, or already ``owner``'s (then extended); False if another owner
        holds it."""

    async def release(self, app: str, family: str, key: str, owner: str) -> bool:
        """Give up ``owner``'s lease on the key; False if ``owner`` did not hold it."""

    async def acquire_and_read(
        self, app: str, family: str, key: str, owner: str, lease: float
    ) -> Leased | None:
        """:meth:`acquire` and, if the lease is held, :meth:`newest`, in one atomic step: None
        if another owner holds the lease (nothing read)."""

    async def record_and_release(
        self, app: str, family: str, key: str, owner: str, event: Recorded
    ) -> bool:
        """:meth:`record` ``event`` and :meth:`release` ``owner``'s lease, in one atomic step;
        the record is made whether or not ``owner`` still held the lease (the compare-and-set
        keeps it safe). False if ``owner`` did not hold the lease."""


def new_owner() -> str:
    """A name for this process as a lease holder: host, pid and a random part (a restarted
    process with the same pid is another owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def check_seconds(what: str, seconds: float) -> float:
    """``seconds`` if it is a positive finite number, else a
    :class:`~consumers.runtime.errors.WorkerConfigError` naming ``what``."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise WorkerConfigError(f"the newest-wins {what} must be a number of seconds")
    if not (math.isfinite(seconds) and seconds > 0):
        raise WorkerConfigError(f"the newest-wins {what} must be positive, not {seconds!r}")
    return float(seconds)


def rank(event: Recorded) -> int:
    """``event`` as one integer that orders as events do (time, then unsubscribe), for a
    store that compares a single number."""
    return event.time_ms * 2 + int(event.unsubscribe)


def from_rank(value: int) -> Recorded:
    """The :class:`Recorded` that :func:`rank` turned into ``value``."""
    return Recorded(value // 2, bool(value % 2))


@dataclass(slots=True)
class _Lease:
    owner: str
    expires: float


class MemoryNewestStore:
    """This process's newest events (forgotten ``retention`` seconds after they were recorded;
    at most ``max_entries``, the least recently recorded forgotten first) and leases."""

    def __init__(
        self,
        *,
        retention: float = DEFAULT_RETENTION,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self.retention = check_seconds("retention", retention)
        if max_entries < 1:
            raise WorkerConfigError("a memory newest-wins store keeps at least one key")
        self.max_entries = max_entries
        #: Per key: the newest event and when it stops counting (time.monotonic()).
        self._newest: OrderedDict[tuple[str, str, str], tuple[Recorded, float]] = OrderedDict()
        self._leases: dict[tuple[str, str, str], _Lease] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def newest(self, app: str, family: str, key: str) -> Recorded | None:
        now = time.monotonic()
        self._expire(now)
        held = self._newest.get((app, family, key))
        return held[0] if held is not None and held[1] > now else None

    async def record(self, app: str, family: str, key: str, event: Recorded) -> bool:
        current = await self.newest(app, family, key)
        if current is not None and event <= current:
            return False
        entry = (app, family, key)
        self._newest.pop(entry, None)
        self._newest[entry] = (event, time.monotonic() + self.retention)
        while len(self._newest) > self.max_entries:
            self._newest.popitem(last=False)
        return True

    async def acquire(self, app: str, family: str, key: str, owner: str, lease: float) -> bool:
        now = time.monotonic()
        held = self._leases.get((app, family, key))
        if held is not None and held.owner != owner and held.expires > now:
            return False
        self._leases[(app, family, key)] = _Lease(owner, now + lease)
        return True

    async def release(self, app: str, family: str, key: str, owner: str) -> bool:
        held = self._leases.get((app, family, key))
        if held is None or held.owner != owner:
            return False
        del self._leases[(app, family, key)]
        return True

    async def acquire_and_read(
        self, app: str, family: str, key: str, owner: str, lease: float
    ) -> Leased | None:
        if not await self.acquire(app, family, key, owner, lease):
            return None
        return Leased(await self.newest(app, family, key))

    async def record_and_release(
        self, app: str, family: str, key: str, owner: str, event: Recorded
    ) -> bool:
        await self.record(app, family, key, event)
        return await self.release(app, family, key, owner)

    def _expire(self, now: float) -> None:
        """Forget the keys recorded longest ago while they are past the retention."""
        while self._newest:
            entry, (_, expires) = next(iter(self._newest.items()))
            if expires > now:
                break
            del self._newest[entry]


__all__ = [
    "DEFAULT_KEY_LEASE",
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_RETENTION",
    "Leased",
    "MemoryNewestStore",
    "NewestStore",
    "NewestStoreError",
    "check_seconds",
    "from_rank",
    "new_owner",
    "rank",
]
