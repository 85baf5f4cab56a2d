"""A worker for the replica test: run two processes of it on one shared idempotency store.

Each handling appends the message id to the Redis list ``$REPLICA_RECORD_KEY`` (duplicates
included), then lingers a little so that two copies of one id really overlap. The store is
``$REPLICA_STORE_URL`` (Redis or PostgreSQL) at ``$REPLICA_STORE_PLACE`` (a key prefix or a
table of the test's own). The delay tiers are short, so a deferred copy comes back quickly.
"""

from __future__ import annotations

import asyncio
import os

import redis.asyncio

from consumers import Event, RetryPolicy, Worker
from consumers.runtime.shared_stores import idempotency_store_from_url

APP = "replicas"
#: Where the handler records, whatever the idempotency store is.
RECORD_URL_VARIABLE = "REPLICA_RECORD_URL"
#: How long a handler lingers (seconds): long enough for the other copy to arrive meanwhile.
LINGER = 0.02


def build_worker() -> Worker:
    url = os.environ["REPLICA_STORE_URL"]
    place = os.environ["REPLICA_STORE_PLACE"]
    where = {"table": place} if url.startswith("postgresql") else {"key_prefix": place}
    worker = Worker(
        APP,
        prefetch=32,
        retry=RetryPolicy(delays=(0.2, 1.0), max_attempts=3),
        idempotency=idempotency_store_from_url(url, **where),
    )
    record = redis.asyncio.Redis.from_url(os.environ[RECORD_URL_VARIABLE])
    record_key = os.environ["REPLICA_RECORD_KEY"]

    @worker.on("sms.sent")
    async def handle(event: Event) -> None:
        await record.rpush(record_key, event.message_id)
        await asyncio.sleep(LINGER)

    async def close() -> None:
        await record.aclose()

    worker.on_shutdown.append(close)
    return worker
