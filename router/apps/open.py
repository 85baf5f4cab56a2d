"""The application-state store a database URL names: beside the claims, in the same database
(``ROUTER_DATABASE_URL``), a table of its own.

The URL is read by :func:`router.claims.open.store_from_url`, so both accept exactly the same
forms and refuse the same way.
"""

from __future__ import annotations

from router.apps.postgres import PostgresAppStore
from router.apps.sqlite import SqliteAppStore
from router.apps.store import AppStateStore
from router.claims.open import store_from_url
from router.claims.postgres import PostgresClaimStore
from router.claims.sqlite import SqliteClaimStore


def app_store_from_url(url: str, *, timeout: float = 30.0) -> AppStateStore:
    """The (not yet opened) store for ``url``: a SQLite file or a PostgreSQL database;
    :class:`~router.errors.ConfigError` for a URL the claims do not take."""
    claims = store_from_url(url)
    if isinstance(claims, PostgresClaimStore):
        return PostgresAppStore(url, timeout=timeout)
    assert isinstance(claims, SqliteClaimStore)
    return SqliteAppStore(claims.path, busy_timeout=timeout)


__all__ = ["app_store_from_url"]
