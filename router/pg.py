"""What the router's PostgreSQL tables share: table names, advisory-lock keys, the pool, and
how a driver error becomes a store's one-line error."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

_TABLE_RE = re.compile(r"[a-z_][a-z0-9_]{0,39}")
TABLE_NAME_RULE = "lowercase letters, digits and '_' (not starting with a digit, at most 40)"


def valid_table_name(table: str) -> bool:
    """Whether ``table`` can be spelled into SQL as it is (it cannot be a bind parameter)."""
    return _TABLE_RE.fullmatch(table) is not None


def advisory_lock_key(purpose: str, table: str) -> int:
    """The advisory-lock key (a signed 64-bit integer) serializing ``purpose`` on ``table``."""
    digest = hashlib.sha256(f"attentive-router {purpose} {table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


#: Connections a store's pool keeps open, and opens at most: a store's statements are short,
#: and a router's or a worker's tasks share a few connections well.
POOL_MIN_SIZE, POOL_MAX_SIZE = 1, 4


async def create_pool(url: str, *, timeout: float) -> Any:
    """A small asyncpg pool whose connects and commands are bounded by ``timeout``."""
    return await asyncpg.create_pool(
        url,
        min_size=POOL_MIN_SIZE,
        max_size=POOL_MAX_SIZE,
        timeout=timeout,
        command_timeout=timeout,
    )


#: What the driver raises when the server, the network or the URL is wrong; its internal
#: errors too, which is what a pooled connection whose server died mid-operation can raise
#: next ("cannot switch to state 12; another operation (2) is in progress").
DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)


def one_line(exc: BaseException) -> str:
    """An error's text on one line (its type's name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


@asynccontextmanager
async def translated(
    error: Callable[[str], Exception],
    doing: str,
    table: str,
    *,
    keep: tuple[type[BaseException], ...] = (),
) -> AsyncIterator[None]:
    """Driver and network errors raised inside become ``error("<doing> (<table>): <text>")``
    with the driver's text on one line; those of a ``keep`` type pass as they are."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        if isinstance(exc, keep):
            raise
        raise error(f"{doing} ({table}): {one_line(exc)}") from exc


__all__ = [
    "DRIVER_ERRORS",
    "POOL_MAX_SIZE",
    "POOL_MIN_SIZE",
    "TABLE_NAME_RULE",
    "advisory_lock_key",
    "create_pool",
    "one_line",
    "translated",
    "valid_table_name",
]
