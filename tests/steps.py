"""Steps many tests take: wait for a condition, claim events for an application through the
admin API, park a dead letter as the keeper does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage

from router.parked.model import parked_event
from router.parked.store import ParkedStore
from tests.conftest import AUTH, Client


async def until(predicate: Callable[[], bool], timeout: float = 15) -> None:
    """Return once ``predicate()`` holds; ``TimeoutError`` after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def claim(admin: Client, app: str, *events: str) -> None:
    """Claim ``events`` (of every company) for ``app`` through the admin API ``admin`` serves,
    failing the test unless the claim is made."""
    response = await admin.post(
        "/admin/claims", json={"app": app, "events": list(events)}, headers=AUTH
    )
    assert response.status == 201, await response.text()


async def park(store: ParkedStore, dead: AbstractIncomingMessage, app: str) -> None:
    """Store ``dead``, a message taken from ``app``'s DLQ, in ``store`` as the keeper does."""
    entry = parked_event(
        dead.body,
        dead.properties,
        place="dlq",
        app=app,
        routing_key=dead.routing_key or "",
        seen_at=datetime.now(UTC),
    )
    assert await store.add_many([entry]) == 1


__all__ = ["claim", "park", "until"]
