"""What the router's PostgreSQL tables share: table names, advisory-lock keys, the pool."""

from __future__ import annotations

import hashlib
import re
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


async def create_pool(url: str, *, min_size: int, max_size: int, timeout: float) -> Any:
    """A small asyncpg pool whose connects and commands are bounded by ``timeout``."""
    return await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, timeout=timeout, command_timeout=timeout
    )


__all__ = ["TABLE_NAME_RULE", "advisory_lock_key", "create_pool", "valid_table_name"]
