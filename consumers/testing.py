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

Each event carries the ordering headers the ingress puts on it (its subject key, under a
secret of the harness's own, and its time), so a handler with a newest family
(``@worker.on("sms.*", newest="subscription")``) is guarded as in production. To test that
guard, :meth:`WorkerHarness.deliver_history` delivers a history as Attentive and the runtime
may: shuffled, some events twice, several at once, a failed one coming back after later ones::

    history = [subscribed(at=1), unsubscribed(at=2), subscribed(at=3)]
    await WorkerHarness(worker).deliver_history(history, seed=seed)
    assert status_of(subscriber) == "subscribed"  # whatever the order was
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from consumers.runtime.errors import Reject
from consumers.runtime.event import Event
from consumers.runtime.outcomes import DeadLetter, Deferred, Handled, Outcome, RetryLater, Skipped
from consumers.runtime.worker import Worker
from router.contract.events import is_event_type
from router.contract.examples import DEFAULT_COMPANY_ID, example_payload
from router.contract.names import EVENT_TIME_HEADER, SUBJECT_KEY_HEADER, routing_key
from router.contract.ordering import SubjectKeys

#: What the harness's subject keys are made with (the ingress's secret is not the tests').
HARNESS_SUBJECT_SECRET = b"consumers.testing subject keys"
#: An event of a history is delivered at most this many times (retries and deferrals
#: included) before :meth:`WorkerHarness.deliver_history` gives up.
HISTORY_MAX_DELIVERIES = 50

Deliverable = str | dict[str, Any] | bytes | Event


class WorkerHarness:
    """Deliver events to a worker as the runtime would, minus the broker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.outcomes: list[Outcome] = []
        self._keys = SubjectKeys(HARNESS_SUBJECT_SECRET)

    async def deliver(
        self,
        event: Deliverable,
        *,
        company_id: str = DEFAULT_COMPANY_ID,
        attempt: int = 1,
    ) -> Outcome:
        """An example of a type (``"sms.sent"``, for ``company_id``), a payload, a raw body or
        an :class:`Event` (delivered as it is). A body that is no event is dead-lettered, as
        the runtime does."""
        try:
            parsed = self._event(event, company_id, attempt)
        except Reject as error:
            outcome: Outcome = DeadLetter("rejected", error)
        else:
            outcome = await self.worker.handle(parsed)
        self.outcomes.append(outcome)
        return outcome

    async def deliver_history(
        self,
        history: Sequence[Deliverable],
        *,
        seed: int = 0,
        duplicates: float = 0.5,
        concurrency: int = 8,
        company_id: str = DEFAULT_COMPANY_ID,
    ) -> list[Outcome]:
        """Deliver every event of ``history`` until settled, as reordered as production may:
        shuffled (by ``seed``, so a failure replays), each event delivered a second time with
        the chance ``duplicates`` (Attentive's retries, a redelivery, a replay), ``concurrency``
        deliveries at once, and a delivery retried coming back at the end of the line (a retry
        tier) as its next attempt, one deferred (its message id busy) as the same attempt once
        another delivery ended. The outcomes, in the order they settled.

        Nothing waits for a retry's delay. ``RuntimeError`` if an event is still not settled
        after :data:`HISTORY_MAX_DELIVERIES` deliveries."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        rng = random.Random(seed)
        bodies = [self._body(item, company_id) for item in history]
        line: deque[tuple[Deliverable, int, int]] = deque(
            (body, 1, 0) for body in bodies + [b for b in bodies if rng.random() < duplicates]
        )
        rng.shuffle(line)
        settled: list[Outcome] = []
        #: Set (and replaced) whenever a delivery ends other than deferred.
        moved = [asyncio.Event()]

        async def deliver_next() -> None:
            while line:
                body, attempt, times = line.popleft()
                if times >= HISTORY_MAX_DELIVERIES:
                    raise RuntimeError(f"an event of the history was delivered {times} times")
                before = moved[0]
                outcome = await self.deliver(body, attempt=attempt)
                if isinstance(outcome, Deferred):  # back once the delivery it waits for ended
                    line.append((body, attempt, times + 1))
                    await before.wait()
                    continue
                if isinstance(outcome, RetryLater):
                    line.append((body, attempt + 1, times + 1))
                else:
                    settled.append(outcome)
                ended, moved[0] = moved[0], asyncio.Event()
                ended.set()

        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(deliver_next())
        return settled

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
            event = orjson.dumps(self._payload(event, kwargs.pop("company_id", DEFAULT_COMPANY_ID)))
        outcomes = [await self.deliver(event, attempt=attempt, **kwargs)]
        while isinstance(outcomes[-1], RetryLater):
            attempt += 1
            outcomes.append(await self.deliver(event, attempt=attempt, **kwargs))
        return outcomes

    def _body(self, event: Deliverable, company_id: str) -> Deliverable:
        """``event`` as what is delivered again and again: an example's body made once (so
        every delivery of it has one message id), else ``event`` itself."""
        if isinstance(event, str):
            return orjson.dumps(self._payload(event, company_id))
        return event

    @staticmethod
    def _payload(event_type: str, company_id: str) -> dict[str, Any]:
        if not is_event_type(event_type):
            raise ValueError(f"{event_type!r} is not an event type")
        return example_payload(event_type, company_id)

    def _event(self, event: Deliverable, company_id: str, attempt: int) -> Event:
        if isinstance(event, Event):
            return event
        if isinstance(event, str):
            event = self._payload(event, company_id)
        body = orjson.dumps(event) if isinstance(event, dict) else event
        parsed = Event.from_body(body, attempt=attempt)
        return Event.from_body(
            body,
            attempt=attempt,
            routing_key=routing_key(parsed.type, parsed.company_id),
            headers=self._ordering_headers(parsed),
        )

    def _ordering_headers(self, event: Event) -> Mapping[str, Any]:
        """The subject key and event time the ingress would put on ``event``, where it has
        them."""
        headers: dict[str, Any] = {}
        key = self._keys.key(event.type, event.company_id, event.payload)
        if key is not None:
            headers[SUBJECT_KEY_HEADER] = key
        stamp = event.payload.get("timestamp")
        if event.timestamp is not None and type(stamp) is int:
            headers[EVENT_TIME_HEADER] = stamp
        return headers


__all__ = [
    "HARNESS_SUBJECT_SECRET",
    "HISTORY_MAX_DELIVERIES",
    "DeadLetter",
    "Deferred",
    "Handled",
    "Reject",
    "RetryLater",
    "Skipped",
    "WorkerHarness",
]
