"""sms-audit: an append-only SQLite audit log of subscribers' SMS activity.

Every ``sms.*`` event becomes one row (subscribed, unsubscribed, sent, clicked, inbound, or
other for types Attentive adds later); a redelivered webhook never doubles a row. Beside the
log, each subscriber's status (subscribed or unsubscribed) from the newest subscribe or
unsubscribe, whatever order they arrive in (``store.status_of``). Run it
with ``attentive-router worker consumers.sms_audit:worker`` (``SMS_AUDIT_DB`` is the database
file, default ``sms-audit.db``) and read it with ``python -m consumers.sms_audit query``,
which masks phone numbers.
"""

from consumers.sms_audit.worker import build_worker

#: Built from the environment at import: no file is opened until the worker starts.
worker = build_worker()

__all__ = ["build_worker", "worker"]
