"""The sms-audit worker: every SMS event becomes one row of an append-only SQLite log, and
each subscribe or unsubscribe sets the subscriber's status, newest wins.

Attentive does not deliver events in the order they happened, and a retried or replayed event
comes back after later ones: the subscription handler opts in to newest wins
(``newest="subscription"``), so an older subscribe never overwrites a newer unsubscribe. A
stale event is still appended to the log (:class:`AuditStale`): the log keeps everything that
arrived, the status only what is newest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from consumers.runtime.event import Event
from consumers.runtime.middleware import Next
from consumers.runtime.outcomes import Outcome, Skipped
from consumers.runtime.worker import Worker
from consumers.sms_audit.store import DEFAULT_DB, AuditEntry, AuditLog, StatusChange

APP = "sms-audit"
#: The key family of the subscription status.
FAMILY = "subscription"


class AuditStale:
    """Middleware (outside newest wins): appends to the log the subscription events newest
    wins skipped as stale, so the log still has every event that arrived."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    async def __call__(self, event: Event, call_next: Next) -> Outcome:
        outcome = await call_next(event)  # first: the guard takes the key's turn at once
        if outcome == Skipped("stale"):
            await self.log.append(AuditEntry.from_event(event))
        return outcome


def build_worker(env: Mapping[str, str] = os.environ) -> Worker:
    """The worker, configured from ``SMS_AUDIT_DB`` (read now; the file is opened at start-up)."""
    log = AuditLog(env.get("SMS_AUDIT_DB", "").strip() or DEFAULT_DB)
    worker = Worker(APP, middleware=[AuditStale(log)])
    worker.on_startup.append(log.open)
    worker.on_shutdown.append(log.close)

    @worker.on("sms.subscribed", newest=FAMILY)
    @worker.on("sms.unsubscribed", newest=FAMILY)
    async def subscription(event: Event) -> None:
        await log.append(AuditEntry.from_event(event))
        change = StatusChange.from_event(event)
        if change is not None:
            await log.set_status(change)

    @worker.on("sms.*")
    async def record(event: Event) -> None:
        await log.append(AuditEntry.from_event(event))

    return worker


__all__ = ["APP", "FAMILY", "AuditStale", "build_worker"]
