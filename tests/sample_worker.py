"""A worker for the process-level tests: it writes what it does to $SAMPLE_WORKER_LOG and,
with SAMPLE_WORKER_HANG=1, never finishes a handler (so the test can kill it mid-handler)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from consumers import Event, Worker

worker = Worker("killable", prefetch=1)


def _log(line: str) -> None:
    with Path(os.environ["SAMPLE_WORKER_LOG"]).open("a") as log:
        log.write(line + "\n")


@worker.on("sms.sent")
async def handle(event: Event) -> None:
    _log(f"start {event.message_id}")
    if os.environ.get("SAMPLE_WORKER_HANG") == "1":
        await asyncio.sleep(3600)
    _log(f"done {event.message_id}")
