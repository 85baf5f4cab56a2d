"""Idempotency stores shared by every replica of a worker, picked from a URL.

A :class:`~consumers.runtime.idempotency.MemoryStore` knows only its own process's claims,
so a copy of an id that lands on another replica runs the handler again. The shared stores
keep the claims and the handled ids where every replica looks:
:class:`~consumers.runtime.idempotency_redis.RedisStore` (a key per id that Redis expires by
itself) and :class:`~consumers.runtime.idempotency_postgres.PostgresStore` (a row per id,
pruned in the background).

:func:`idempotency_store_from_url` picks one from a URL (``WORKER_IDEMPOTENCY_URL``). A
store's errors (the server down, a query timing out) are
:class:`~consumers.runtime.idempotency.IdempotencyStoreError`; inside the pipeline they make
the delivery retry, like any other failure. The stores' names are importable from here too.
"""

from __future__ import annotations

from typing import Any

from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.idempotency import (
    DEFAULT_WINDOW,
    IdempotencyStore,
    IdempotencyStoreError,
    MemoryStore,
    without_password,
)
from consumers.runtime.idempotency_postgres import DEFAULT_TABLE, PostgresStore, lock_key
from consumers.runtime.idempotency_redis import DEFAULT_KEY_PREFIX, RedisStore

_REDIS_SCHEMES = ("redis", "rediss")
_POSTGRES_SCHEMES = ("postgresql", "postgres")
_ACCEPTED = (
    "use memory, redis://host:port/db, rediss://host:port/db "
    "or postgresql://user@host:port/database"
)


def idempotency_store_from_url(url: str | None, **kwargs: Any) -> IdempotencyStore:
    """The (not yet opened) store ``url`` names; ``kwargs`` go to the store's constructor.

    ``None`` or ``memory`` is a :class:`~consumers.runtime.idempotency.MemoryStore` (this
    process only); ``redis://`` and ``rediss://`` a :class:`RedisStore`; ``postgresql://``
    and ``postgres://`` a :class:`PostgresStore`. Anything else is a
    :class:`~consumers.runtime.errors.WorkerConfigError`.
    """
    if url is None or url.strip().lower() == "memory":
        return MemoryStore(**kwargs)
    scheme, separator, _ = url.partition("://")
    if separator and scheme.lower() in _REDIS_SCHEMES:
        return RedisStore(url, **kwargs)
    if separator and scheme.lower() in _POSTGRES_SCHEMES:
        return PostgresStore(url, **kwargs)
    raise WorkerConfigError(
        f"unsupported idempotency store URL {without_password(url)!r}: {_ACCEPTED}"
    )


__all__ = [
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_TABLE",
    "DEFAULT_WINDOW",
    "IdempotencyStoreError",
    "PostgresStore",
    "RedisStore",
    "idempotency_store_from_url",
    "lock_key",
]
