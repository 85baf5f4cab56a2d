"""The sms-audit worker: every SMS event becomes one row of an append-only SQLite log."""

from __future__ import annotations

import os
from collections.abc import Mapping

from consumers.runtime.event import Event
from consumers.runtime.worker import Worker
from consumers.sms_audit.store import DEFAULT_DB, AuditEntry, AuditLog

APP = "sms-audit"


def build_worker(env: Mapping[str, str] = os.environ) -> Worker:
    """The worker, configured from ``SMS_AUDIT_DB`` (read now; the file is opened at start-up)."""
    log = AuditLog(env.get("SMS_AUDIT_DB", "").strip() or DEFAULT_DB)
    worker = Worker(APP)
    worker.on_startup.append(log.open)
    worker.on_shutdown.append(log.close)

    @worker.on("sms.*")
    async def record(event: Event) -> None:
        await log.append(AuditEntry.from_event(event))

    return worker


__all__ = ["APP", "build_worker"]
