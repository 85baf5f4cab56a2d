"""A worker that does nothing with every event: for the sustained-load test."""

from __future__ import annotations

from consumers import Event, Worker

worker = Worker("soak", prefetch=128)


@worker.on("*")
async def ignore(event: Event) -> None:
    return None
