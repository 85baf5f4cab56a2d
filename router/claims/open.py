"""The claim store a database URL names: a SQLite file or a PostgreSQL database."""

from __future__ import annotations

from typing import Any

from router.claims.postgres import PostgresClaimStore
from router.claims.sqlite import SqliteClaimStore
from router.claims.store import ClaimStore
from router.errors import ConfigError
from router.secret import redact_url

#: A SQLite file in the working directory.
DEFAULT_DATABASE_URL = "sqlite:///attentive-router.db"

_ACCEPTED = (
    "use sqlite:///relative/path.db, sqlite:////absolute/path.db "
    "or postgresql://user@host:port/database"
)
_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_SCHEMES = ("postgresql", "postgres")


def store_from_url(url: str, **kwargs: Any) -> ClaimStore:
    """The (not yet opened) store for ``url``; ``kwargs`` go to the backend's constructor.

    ``sqlite:///a/b.db`` is the relative path ``a/b.db``, ``sqlite:////a/b.db`` the absolute
    path ``/a/b.db``; ``postgresql://`` and ``postgres://`` URLs go to asyncpg as they are.
    """
    scheme, separator, _ = url.partition("://")
    if separator and scheme.lower() in _POSTGRES_SCHEMES:
        return PostgresClaimStore(url, **kwargs)
    if url[: len(_SQLITE_PREFIX)].lower() == _SQLITE_PREFIX:
        path = url[len(_SQLITE_PREFIX) :]
        if not path or path.endswith("/") or path == ":memory:" or "?" in path:
            raise ConfigError(f"invalid database URL {redact_url(url)!r}: {_ACCEPTED}")
        return SqliteClaimStore(path, **kwargs)
    raise ConfigError(f"unsupported database URL {redact_url(url)!r}: {_ACCEPTED}")


__all__ = ["DEFAULT_DATABASE_URL", "store_from_url"]
