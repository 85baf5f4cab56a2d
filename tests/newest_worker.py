"""A worker for the newest-wins process tests: run several processes of it on one shared store.

The application is ``$NEWEST_APP``. Its handler keeps each phone's subscription status in the
Redis hash ``$NEWEST_RECORD:state`` (last write wins: the runtime's newest wins must make that
right) and checks, in Redis, that no other handler of the same phone runs anywhere meanwhile:
each overlap seen is pushed onto ``$NEWEST_RECORD:overlaps``. If ``$NEWEST_HANG_PHONE`` is
set, the first handler of that phone says so on ``$NEWEST_RECORD:hung`` and never returns (the
test then kills the process). The shared store is ``WORKER_IDEMPOTENCY_URL``.
"""

from __future__ import annotations

import asyncio
import os

import redis.asyncio

from consumers import Event, RetryPolicy, Worker

#: Where the handlers record, whatever the newest-wins store is.
RECORD_URL_VARIABLE = "NEWEST_RECORD_URL"
#: How long a handler lingers (seconds), so that an overlap would be seen.
LINGER = 0.003
FAMILY = "subscription"


def build_worker() -> Worker:
    worker = Worker(
        os.environ["NEWEST_APP"],
        prefetch=50,
        retry=RetryPolicy(delays=(0.2, 1.0), max_attempts=5),
    )
    client = redis.asyncio.Redis.from_url(os.environ[RECORD_URL_VARIABLE])
    record = os.environ["NEWEST_RECORD"]
    hang = os.environ.get("NEWEST_HANG_PHONE")

    @worker.on("sms.subscribed", newest=FAMILY)
    @worker.on("sms.unsubscribed", newest=FAMILY)
    async def keep(event: Event) -> None:
        phone = str(event.subscriber["phone"])
        running = f"{record}:running:{phone}"
        if await client.incr(running) > 1:
            await client.rpush(f"{record}:overlaps", phone)
        try:
            if phone == hang and await client.setnx(f"{record}:hung", event.message_id):
                await asyncio.Event().wait()  # held until the process is killed
            await asyncio.sleep(LINGER)
            await client.hset(f"{record}:state", phone, event.type.removeprefix("sms."))
            await client.rpush(f"{record}:handled", event.message_id)
        finally:
            await client.decr(running)

    async def close() -> None:
        await client.aclose()

    worker.on_shutdown.append(close)
    return worker
