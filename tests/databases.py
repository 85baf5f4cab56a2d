"""The test databases on this machine (Redis and PostgreSQL), and how a test leaves them clean."""

from __future__ import annotations

import os

import asyncpg
import redis.asyncio

REDIS_URL = os.environ.get("ROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "ROUTER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


async def forget_redis_keys(prefix: str) -> None:
    """Delete every Redis key under ``prefix:``."""
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def drop_table(table: str) -> None:
    """Drop a test's PostgreSQL table, if it made one."""
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
    finally:
        await conn.close()
