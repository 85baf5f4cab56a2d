"""The parked-event store a database URL names: a SQLite file or a PostgreSQL database.

The URL is the claims' (``ROUTER_DATABASE_URL``): both live in the same database, each in its
own tables.
"""

from __future__ import annotations

from typing import Any

from router.claims.open import DEFAULT_DATABASE_URL
from router.errors import ConfigError
from router.parked.postgres import PostgresParkedStore
from router.parked.sqlite import SqliteParkedStore
from router.parked.store import ParkedStore
from router.secret import redact_url

_FORMS = (
    "use sqlite:///relative/path.db, sqlite:////absolute/path.db "
    "or postgresql://user@host:port/database"
)


def parked_store_from_url(url: str, **kwargs: Any) -> ParkedStore:
    """The (not yet opened) store for ``url``; ``kwargs`` go to the backend's constructor.

    ``sqlite:///a/b.db`` is the relative path ``a/b.db``, ``sqlite:////a/b.db`` the absolute
    path ``/a/b.db``; ``postgresql://`` and ``postgres://`` URLs go to asyncpg as they are.
    """
    scheme, _, rest = url.partition("://")
    match scheme.lower() if rest else "":
        case "postgresql" | "postgres":
            return PostgresParkedStore(url, **kwargs)
        case "sqlite" if rest.startswith("/"):
            path = rest[1:]
            if path and not path.endswith("/") and path != ":memory:" and "?" not in path:
                return SqliteParkedStore(path, **kwargs)
            raise ConfigError(f"invalid database URL {redact_url(url)!r}: {_FORMS}")
    raise ConfigError(f"unsupported database URL {redact_url(url)!r}: {_FORMS}")


__all__ = ["DEFAULT_DATABASE_URL", "parked_store_from_url"]
