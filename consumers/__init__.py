"""Write a consumer of Attentive events: a :class:`Worker`, handlers for event patterns.

::

    from consumers import Event, Reject, Worker

    worker = Worker("sms-audit")

    @worker.on("sms.*")
    async def record(event: Event) -> None:
        ...

Run it with ``attentive-router worker mymodule:worker``.
"""

from consumers.runtime.errors import ClaimRefused, Reject, Retry
from consumers.runtime.event import Event
from consumers.runtime.retry import RetryPolicy
from consumers.runtime.worker import Worker

__all__ = ["ClaimRefused", "Event", "Reject", "Retry", "RetryPolicy", "Worker"]
