"""An idempotency store in Redis, shared by every replica of a worker.

One key per id, ``<prefix>:<app>:<message id>``, holding the claim's token while claimed
(``SET ... NX PX <lease>``) and ``1`` once done (``PX <window>``), so Redis drops an abandoned
claim or an old id by itself. Errors (the server down, a command timing out) are
:class:`IdempotencyStoreError`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio
from redis.asyncio.connection import parse_url
from redis.exceptions import RedisError

from consumers.runtime import idempotency
from consumers.runtime.errors import WorkerConfigError

DEFAULT_KEY_PREFIX = "attentive:handled"

#: What redis-py raises when the server or the network is wrong.
_REDIS_ERRORS = (RedisError, OSError)
#: The value of a done id's Redis key (the previous release's ``remember`` wrote it too).
_DONE = b"1"
#: KEYS[1] done for ARGV[2] ms, unless another token holds it or it is done already.
_REDIS_COMPLETE = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
return 1
"""
#: Delete KEYS[1] only while it holds the token ARGV[1].
_REDIS_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    """An :class:`~consumers.runtime.idempotency.IdempotencyStore` in Redis.

    ``begin`` is ``SET <prefix>:<app>:<message id> <token> NX PX <lease>``; when the key is
    there already, its value says done (``1``) or claimed (a token). ``complete`` sets it to
    ``1`` for ``window`` seconds and ``release`` deletes it, each in a small Lua script that
    first checks the key still holds the claim's token.
    """

    def __init__(
        self,
        url: str,
        *,
        window: float = idempotency.DEFAULT_WINDOW,
        lease: float = idempotency.DEFAULT_LEASE,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        timeout: float = 10.0,
    ) -> None:
        idempotency.check_duration("window", window)
        idempotency.check_duration("lease", lease)
        try:
            parse_url(url)
        except ValueError as exc:
            raise WorkerConfigError(
                f"invalid Redis URL {idempotency.without_password(url)!r}: {exc}"
            ) from None
        if not key_prefix:
            raise WorkerConfigError("the Redis key prefix of the idempotency store is empty")
        self.url = url
        self.window = window
        self.key_prefix = key_prefix
        self.timeout = timeout
        self.lease = lease
        self._window_ms = max(1, math.ceil(window * 1000))
        self._lease_ms = max(1, math.ceil(lease * 1000))
        self._client: redis.asyncio.Redis | None = None

    def __repr__(self) -> str:
        url = idempotency.without_password(self.url)
        return f"RedisStore({url!r}, key_prefix={self.key_prefix!r})"

    async def open(self) -> None:
        """Connect and ping: :class:`IdempotencyStoreError` if Redis does not answer."""
        if self._client is not None:
            return
        client = redis.asyncio.Redis.from_url(
            self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )
        try:
            async with self._translated("cannot connect to Redis"):
                await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._client = client

    async def close(self) -> None:
        """Close the client's connections."""
        client, self._client = self._client, None
        if client is not None:
            async with self._translated("closing the Redis connection"):
                await client.aclose()

    async def begin(self, app: str, message_id: str) -> idempotency.Claim:
        """Set the id's key to a new token if it is absent; else read what holds it."""
        client, key = self._require_open(), self._key(app, message_id)
        async with self._translated("claiming a message id"):
            for _ in range(idempotency.BEGIN_TRIES):
                token = idempotency.new_token()
                if await client.set(key, token, nx=True, px=self._lease_ms):
                    return idempotency.Acquired(app, message_id, token)
                held = await client.get(key)
                if held is not None:
                    return (
                        idempotency.AlreadyDone()
                        if held == _DONE
                        else idempotency.InProgressElsewhere()
                    )
                # released or expired between the two commands: claim again
        return idempotency.InProgressElsewhere()  # it keeps changing hands: come back later

    async def complete(self, claim: idempotency.Acquired) -> bool:
        """Set the id's key to ``1`` for the window, unless another claim or done holds it."""
        client = self._require_open()
        async with self._translated("completing a message id"):
            done = await client.eval(
                _REDIS_COMPLETE,
                1,
                self._key(claim.app, claim.message_id),
                claim.token,
                self._window_ms,
            )
        return bool(done)

    async def release(self, claim: idempotency.Acquired) -> bool:
        """Delete the id's key if it still holds this claim's token."""
        client = self._require_open()
        async with self._translated("releasing a message id"):
            released = await client.eval(
                _REDIS_RELEASE, 1, self._key(claim.app, claim.message_id), claim.token
            )
        return bool(released)

    def _key(self, app: str, message_id: str) -> str:
        return f"{self.key_prefix}:{app}:{message_id}"

    def keys_of(self, app: str) -> str:
        """The pattern (``SCAN MATCH``) of every key this store keeps for ``app``."""
        return self._key(app, "*")

    def _require_open(self) -> redis.asyncio.Redis:
        if self._client is None:
            raise idempotency.IdempotencyStoreError(f"{self!r} is not open: call open() first")
        return self._client

    @asynccontextmanager
    async def _translated(self, doing: str) -> AsyncIterator[None]:
        """Client and network errors become one-line :class:`IdempotencyStoreError`."""
        try:
            yield
        except _REDIS_ERRORS as exc:
            raise idempotency.IdempotencyStoreError(
                f"{doing} ({idempotency.without_password(self.url)}): {idempotency.one_line(exc)}"
            ) from exc


__all__ = ["DEFAULT_KEY_PREFIX", "RedisStore"]
