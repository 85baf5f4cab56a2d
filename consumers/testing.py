"""Run a worker's handlers on events in-process, without a broker: for worker authors' tests.

::

    from consumers.testing import WorkerHarness

    async def test_it_records_a_subscribe():
        harness = WorkerHarness(worker)
        outcome = await harness.deliver("sms.subscribed")
        assert outcome == Handled()

The harness runs the worker's whole pipeline (retries, idempotency, its middleware), so the
outcome is what the runtime would do with the delivery: ``Handled``, ``Skipped``,
``Deferred`` (the same message id is being handled by a delivery still running: two
``deliver`` calls at once), ``RetryLater`` or ``DeadLetter``. Nothing is published: settle it
yourself if you need to.
"""

from __future__ import annotations

from typing import Any

import orjson

from consumers.runtime.errors import Reject
from consumers.runtime.event import Event
from consumers.runtime.outcomes import DeadLetter, Deferred, Handled, Outcome, RetryLater, Skipped
from consumers.runtime.worker import Worker
from router.contract.events import is_event_type
from router.contract.examples import DEFAULT_COMPANY_ID, example_payload
from router.contract.names import routing_key


class WorkerHarness:
    """Deliver events to a worker as the runtime would, minus the broker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.outcomes: list[Outcome] = []

    async def deliver(
        self,
        event: str | dict[str, Any] | bytes | Event,
        *,
        company_id: str = DEFAULT_COMPANY_ID,
        attempt: int = 1,
    ) -> Outcome:
        """An example of a type (``"sms.sent"``, for ``company_id``), a payload, a raw body or
        an :class:`Event`. A body that is no event is dead-lettered, as the runtime does."""
        try:
            parsed = self._event(event, company_id, attempt)
        except Reject as error:
            outcome: Outcome = DeadLetter("rejected", error)
        else:
            outcome = await self.worker.handle(parsed)
        self.outcomes.append(outcome)
        return outcome

    async def __aenter__(self) -> WorkerHarness:
        """Run the worker's start-up hooks (``async with WorkerHarness(worker) as h:``)."""
        for hook in self.worker.on_startup:
            await hook()
        return self

    async def __aexit__(self, *_: object) -> None:
        for hook in self.worker.on_shutdown:
            await hook()

    async def deliver_until_settled(
        self, event: str | dict[str, Any] | bytes, **kwargs: Any
    ) -> list[Outcome]:
        """Deliver, then keep redelivering while the outcome is a retry (no waiting): the
        sequence of outcomes the event would go through, ending handled, skipped,
        dead-lettered or deferred (another delivery of it is still running)."""
        attempt = kwargs.pop("attempt", 1)
        if isinstance(event, str):  # one example body, redelivered: the same message id
            event = orjson.dumps(
                example_payload(event, kwargs.pop("company_id", DEFAULT_COMPANY_ID))
            )
        outcomes = [await self.deliver(event, attempt=attempt, **kwargs)]
        while isinstance(outcomes[-1], RetryLater):
            attempt += 1
            outcomes.append(await self.deliver(event, attempt=attempt, **kwargs))
        return outcomes

    def _event(
        self, event: str | dict[str, Any] | bytes | Event, company_id: str, attempt: int
    ) -> Event:
        if isinstance(event, Event):
            return event
        if isinstance(event, str):
            if not is_event_type(event):
                raise ValueError(f"{event!r} is not an event type")
            event = example_payload(event, company_id)
        body = orjson.dumps(event) if isinstance(event, dict) else event
        parsed = Event.from_body(body, attempt=attempt)
        return Event.from_body(
            body, attempt=attempt, routing_key=routing_key(parsed.type, parsed.company_id)
        )


__all__ = [
    "DeadLetter",
    "Deferred",
    "Handled",
    "Reject",
    "RetryLater",
    "Skipped",
    "WorkerHarness",
]
