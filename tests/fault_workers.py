"""Workers for the fault test: each appends the message id of what it handles to
``$FAULT_LOG_DIR/<app>.handled`` (one line per handling, duplicates included)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from consumers import Event, Worker
from consumers.runtime.worker import HandlerFn

APPS = {"faults-sms": "sms.*", "faults-email": "email.*", "faults-attrs": "custom_attribute.*"}


def _recorder(app: str) -> HandlerFn:
    async def record(event: Event) -> None:
        await asyncio.sleep(0.002)  # long enough for a SIGKILL to land mid-handler
        path = Path(os.environ["FAULT_LOG_DIR"]) / f"{app}.handled"
        with path.open("a") as log:
            log.write(event.message_id + "\n")

    return record


def _worker(app: str) -> Worker:
    worker = Worker(app, prefetch=32)
    worker.on(APPS[app])(_recorder(app))
    return worker


def sms() -> Worker:
    return _worker("faults-sms")


def email() -> Worker:
    return _worker("faults-email")


def attrs() -> Worker:
    return _worker("faults-attrs")
