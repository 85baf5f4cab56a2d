"""Steps many tests take: wait for a condition, claim events for an application through the
admin API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

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


__all__ = ["claim", "until"]
