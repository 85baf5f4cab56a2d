"""Claiming a message id before handling it, so one replica at a time handles it, once.

Attentive retries a delivery it saw fail, with the same body, so the same message id can
arrive twice; so can a redelivery after a worker died between handling and acking, and two
replicas can get copies of one id at the same moment. Before the handler runs, the pipeline
asks the store to :meth:`~IdempotencyStore.begin` the id, an atomic claim with three answers:

* :class:`Acquired`: this delivery holds the claim for ``lease`` seconds; the pipeline then
  :meth:`~IdempotencyStore.complete`\\ s it when the handler returned (the id is remembered as
  done for ``window`` seconds) or :meth:`~IdempotencyStore.release`\\ s it when it raised (so
  a retry can claim it again);
* :class:`AlreadyDone`: handled within the window: skip it;
* :class:`InProgressElsewhere`: another delivery holds an unexpired claim: return it later.

A claim whose holder died is taken over once its lease has expired. Each claim carries a
token, and only the holder of the current token can complete or release it: a holder whose
lease expired and was taken over cannot undo the new holder's claim.

Memory is per process; Redis (:mod:`consumers.runtime.idempotency_redis`) or PostgreSQL
(:mod:`consumers.runtime.idempotency_postgres`) share the claims between replicas, picked from
a URL by :mod:`consumers.runtime.shared_stores`.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from consumers.runtime.errors import ConsumerError, WorkerConfigError
from router.errors import Unavailable

#: How long a claim holds unless told otherwise: 5 minutes, far longer than a handler takes.
DEFAULT_LEASE = 300.0
#: How long an id counts as handled unless told otherwise: a day.
DEFAULT_WINDOW = 24 * 3600.0
#: How many times a shared store's ``begin`` tries again when the id's claim vanished between
#: two reads (released or expired); then the id is treated as in progress elsewhere.
BEGIN_TRIES = 3


class IdempotencyStoreError(ConsumerError, Unavailable):
    """A shared idempotency store could not be reached or answered with an error."""


@dataclass(frozen=True, slots=True)
class Acquired:
    """This delivery holds the claim on ``message_id`` until its lease expires."""

    app: str
    message_id: str
    #: Proves the holder to :meth:`IdempotencyStore.complete` and ``release``.
    token: str


@dataclass(frozen=True, slots=True)
class AlreadyDone:
    """The id was handled within the window."""


@dataclass(frozen=True, slots=True)
class InProgressElsewhere:
    """Another delivery holds an unexpired claim on the id."""


Claim = Acquired | AlreadyDone | InProgressElsewhere


class IdempotencyStore(Protocol):
    """Claims on (application, message id) pairs, and which were handled within the window."""

    async def open(self) -> None:
        """Connect (and create what is missing)."""

    async def close(self) -> None:
        """Release connections."""

    async def begin(self, app: str, message_id: str) -> Claim:
        """Claim the id for ``app`` atomically, unless it is done or claimed by another."""

    async def complete(self, claim: Acquired) -> bool:
        """Remember the id as done for the window; False if the claim was taken over (the
        lease expired and another delivery claimed the id): nothing is changed then."""

    async def release(self, claim: Acquired) -> bool:
        """Give up the claim so the id can be claimed again; False if it was taken over."""


def new_token() -> str:
    """A claim's token: 32 random hex digits."""
    return secrets.token_hex(16)


def check_duration(what: str, seconds: float) -> float:
    """``seconds`` if it is a positive finite number, else a
    :class:`~consumers.runtime.errors.WorkerConfigError` naming ``what``."""
    if not (
        isinstance(seconds, int | float)
        and not isinstance(seconds, bool)
        and math.isfinite(seconds)
        and seconds > 0
    ):
        raise WorkerConfigError(
            f"the idempotency {what} must be a positive number of seconds, not {seconds!r}"
        )
    return float(seconds)


def one_line(exc: BaseException) -> str:
    """A store error's text on one line (its type's name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def without_password(url: str) -> str:
    """``url`` without a password, so an error message can be logged."""
    scheme, separator, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not separator or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


@dataclass(slots=True)
class _Entry:
    #: The holder's token; None once done.
    token: str | None
    expires: float


class MemoryStore:
    """An in-process store: claims expire after ``lease`` seconds, done ids after ``window``;
    at most ``max_entries`` (the oldest are forgotten first)."""

    def __init__(
        self,
        window: float = DEFAULT_WINDOW,
        max_entries: int = 1_000_000,
        *,
        lease: float = DEFAULT_LEASE,
    ) -> None:
        self.window = check_duration("window", window)
        self.lease = check_duration("lease", lease)
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def begin(self, app: str, message_id: str) -> Claim:
        now = time.monotonic()
        self._expire(now)
        key = (app, message_id)
        entry = self._entries.get(key)
        if entry is not None and entry.expires > now:
            return AlreadyDone() if entry.token is None else InProgressElsewhere()
        token = new_token()
        self._put(key, _Entry(token, now + self.lease))
        return Acquired(app, message_id, token)

    async def complete(self, claim: Acquired) -> bool:
        key = (claim.app, claim.message_id)
        entry = self._entries.get(key)
        if entry is not None and entry.token != claim.token and entry.expires > time.monotonic():
            return False
        self._put(key, _Entry(None, time.monotonic() + self.window))
        return True

    async def release(self, claim: Acquired) -> bool:
        key = (claim.app, claim.message_id)
        entry = self._entries.get(key)
        if entry is None or entry.token != claim.token:
            return False
        del self._entries[key]
        return True

    def _put(self, key: tuple[str, str], entry: _Entry) -> None:
        self._entries.pop(key, None)
        self._entries[key] = entry
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def _expire(self, now: float) -> None:
        """Forget expired entries at the front (entries expire out of order, so each lookup
        also checks its own entry's expiry)."""
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now:
                break
            del self._entries[key]


__all__ = [
    "BEGIN_TRIES",
    "DEFAULT_LEASE",
    "DEFAULT_WINDOW",
    "Acquired",
    "AlreadyDone",
    "Claim",
    "IdempotencyStore",
    "IdempotencyStoreError",
    "InProgressElsewhere",
    "MemoryStore",
    "check_duration",
    "new_token",
    "one_line",
    "without_password",
]
