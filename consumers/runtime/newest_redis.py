"""A newest-wins store in Redis, shared by every replica of a worker.

Two keys per ``(app, family, key)``: ``<prefix>:newest:...`` holds the newest event as one
integer (:func:`~consumers.runtime.newest_stores.rank`: time and unsubscribe, ordered as
events are), expiring ``retention`` after it was last moved; ``<prefix>:lease:...`` holds the
lease's owner, expiring with the lease. Each change is a small Lua script, so it is atomic;
the guard's two steps per event (the lease and the newest read; the newest recorded and the
lease released) are one script each, and the calls of one turn of the event loop share one
pipeline (:class:`~consumers.runtime.store_connections.RedisScripts`).
Errors (the server down, a command timing out) are
:class:`~consumers.runtime.newest_stores.NewestStoreError`.
"""

from __future__ import annotations

import math
from contextlib import AbstractAsyncContextManager
from typing import Any

from redis.asyncio.connection import parse_url

from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.idempotency import without_password
from consumers.runtime.newest import Recorded
from consumers.runtime.newest_stores import (
    DEFAULT_RETENTION,
    Leased,
    NewestStoreError,
    check_seconds,
    from_rank,
    rank,
)
from consumers.runtime.store_connections import RedisScripts, connected_scripts, redis_errors

DEFAULT_KEY_PREFIX = "attentive:order"

#: KEYS[1] becomes ARGV[1] for ARGV[2] ms if it is absent or smaller.
_RECORD = """
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
#: KEYS[1] holds the owner ARGV[1] for ARGV[2] ms, unless another owner holds it.
_ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
#: Delete KEYS[1] only while the owner ARGV[1] holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""
#: _ACQUIRE on the lease KEYS[1]; if held, the newest KEYS[2] (false: none), else -1.
_ACQUIRE_AND_READ = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('GET', KEYS[2])
"""
#: _RECORD of ARGV[1] for ARGV[2] ms on the newest KEYS[1], then _RELEASE of the lease KEYS[2]
#: by the owner ARGV[3]: 1 if it held the lease, else 0.
_RECORD_AND_RELEASE = """
local current = redis.call('GET', KEYS[1])
if not current or tonumber(current) < tonumber(ARGV[1]) then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return 0 end
return redis.call('DEL', KEYS[2])
"""
_SCRIPTS = {
    "record": _RECORD,
    "acquire": _ACQUIRE,
    "release": _RELEASE,
    "acquire_and_read": _ACQUIRE_AND_READ,
    "record_and_release": _RECORD_AND_RELEASE,
}


class RedisNewestStore:
    """A :class:`~consumers.runtime.newest_stores.NewestStore` in Redis."""

    def __init__(
        self,
        url: str,
        *,
        retention: float = DEFAULT_RETENTION,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        timeout: float = 10.0,
    ) -> None:
        self.retention = check_seconds("retention", retention)
        try:
            parse_url(url)
        except ValueError as exc:
            raise WorkerConfigError(f"invalid Redis URL {without_password(url)!r}: {exc}") from None
        if not key_prefix:
            raise WorkerConfigError("the Redis key prefix of the newest-wins store is empty")
        self.url = url
        self.key_prefix = key_prefix
        self.timeout = timeout
        self._retention_ms = max(1, math.ceil(self.retention * 1000))
        self._scripts: RedisScripts | None = None

    def __repr__(self) -> str:
        return f"RedisNewestStore({without_password(self.url)!r}, key_prefix={self.key_prefix!r})"

    async def open(self) -> None:
        """Connect and load the scripts: :class:`NewestStoreError` if Redis does not answer."""
        if self._scripts is not None:
            return
        self._scripts = await connected_scripts(
            self.url, _SCRIPTS, timeout=self.timeout, error=NewestStoreError
        )

    async def close(self) -> None:
        """Stop the calls in flight and close the client's connections."""
        scripts, self._scripts = self._scripts, None
        if scripts is not None:
            await scripts.close()
            async with self._translated("closing the Redis connection"):
                await scripts.client.aclose()

    async def newest(self, app: str, family: str, key: str) -> Recorded | None:
        """The newest key's value, decoded."""
        client = self._require_open().client
        async with self._translated("reading the newest event"):
            value = await client.get(self._key("newest", app, family, key))
        return None if value is None else from_rank(int(value))

    async def record(self, app: str, family: str, key: str, event: Recorded) -> bool:
        """Set the newest key to ``event`` if it is absent or smaller, for the retention."""
        args = (rank(event), self._retention_ms)
        return await self._run("record", "recording the newest event", app, family, key, args)

    async def acquire(self, app: str, family: str, key: str, owner: str, lease: float) -> bool:
        """Set the lease key to ``owner`` for ``lease`` seconds unless another owner holds it."""
        args = (owner, max(1, math.ceil(lease * 1000)))
        return await self._run("acquire", "acquiring a key's lease", app, family, key, args)

    async def release(self, app: str, family: str, key: str, owner: str) -> bool:
        """Delete the lease key if ``owner`` holds it."""
        return await self._run("release", "releasing a key's lease", app, family, key, (owner,))

    async def acquire_and_read(
        self, app: str, family: str, key: str, owner: str, lease: float
    ) -> Leased | None:
        """The lease key set to ``owner`` unless another owner holds it, and if so the newest
        key read, in one script."""
        keys = [self._key("lease", app, family, key), self._key("newest", app, family, key)]
        args = (owner, max(1, math.ceil(lease * 1000)))
        value = await self._call("acquire_and_read", "acquiring a key's lease", keys, args)
        if value == -1:
            return None
        return Leased(None if value is None else from_rank(int(value)))

    async def record_and_release(
        self, app: str, family: str, key: str, owner: str, event: Recorded
    ) -> bool:
        """The newest key set to ``event`` if absent or smaller, and the lease key deleted if
        ``owner`` holds it, in one script."""
        keys = [self._key("newest", app, family, key), self._key("lease", app, family, key)]
        args = (rank(event), self._retention_ms, owner)
        doing = "recording the newest event and releasing its lease"
        return bool(await self._call("record_and_release", doing, keys, args))

    async def _run(
        self,
        script: str,
        doing: str,
        app: str,
        family: str,
        key: str,
        args: tuple[str | int, ...],
    ) -> bool:
        kind = "newest" if script == "record" else "lease"
        return bool(await self._call(script, doing, [self._key(kind, app, family, key)], args))

    async def _call(
        self, script: str, doing: str, keys: list[str], args: tuple[str | int, ...]
    ) -> Any:
        scripts = self._require_open()
        async with self._translated(doing):
            return await scripts.call(script, keys, args)

    def _key(self, kind: str, app: str, family: str, key: str) -> str:
        return f"{self.key_prefix}:{kind}:{app}:{family}:{key}"

    def keys_of(self, app: str) -> str:
        """The pattern (``SCAN MATCH``) of every key this store keeps for ``app``."""
        return self._key("*", app, "*", "*")

    def _require_open(self) -> RedisScripts:
        if self._scripts is None:
            raise NewestStoreError(f"{self!r} is not open: call open() first")
        return self._scripts

    def _translated(self, doing: str) -> AbstractAsyncContextManager[None]:
        """Client and network errors become one-line :class:`NewestStoreError`."""
        return redis_errors(self.url, doing, NewestStoreError)


__all__ = ["DEFAULT_KEY_PREFIX", "RedisNewestStore"]
