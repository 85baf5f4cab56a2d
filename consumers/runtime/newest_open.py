"""The newest-wins store a URL names: the same URLs, and the same rule, as the idempotency
store (:func:`~consumers.runtime.shared_stores.idempotency_store_from_url`), so a worker keeps
both in one Redis or one PostgreSQL database (its own keys, its own table)."""

from __future__ import annotations

from typing import Any

from consumers.runtime.idempotency_postgres import PostgresStore
from consumers.runtime.idempotency_redis import RedisStore
from consumers.runtime.newest_postgres import PostgresNewestStore
from consumers.runtime.newest_redis import RedisNewestStore
from consumers.runtime.newest_stores import MemoryNewestStore, NewestStore
from consumers.runtime.shared_stores import idempotency_store_from_url


def newest_store_from_url(url: str | None, **kwargs: Any) -> NewestStore:
    """The (not yet opened) store ``url`` names; ``kwargs`` go to its constructor.

    ``None`` or ``memory``: a :class:`MemoryNewestStore` (this process only); a Redis URL: a
    :class:`RedisNewestStore`; a PostgreSQL URL: a :class:`PostgresNewestStore`. Anything
    else is the idempotency store's :class:`~consumers.runtime.errors.WorkerConfigError`.
    """
    idempotency = idempotency_store_from_url(url)  # parses the URL; connects to nothing
    if isinstance(idempotency, RedisStore):
        return RedisNewestStore(idempotency.url, **kwargs)
    if isinstance(idempotency, PostgresStore):
        return PostgresNewestStore(idempotency.url, **kwargs)
    return MemoryNewestStore(**kwargs)


__all__ = ["newest_store_from_url"]
