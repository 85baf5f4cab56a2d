"""A handler's error often quotes the subscriber's phone number or email address (a CRM's
answer, a failed lookup): the worker masks it before it is logged and before it becomes a
dead letter's headers, which RabbitMQ's management UI shows to whoever can read the queue."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import orjson
import pytest
import structlog
from aio_pika.abc import AbstractRobustConnection

from consumers import Event, Reject, RetryPolicy, Worker
from consumers.runtime.idempotency import Acquired, MemoryStore
from consumers.runtime.middleware import error_summary, traceback_summary
from consumers.testing import DeadLetter, RetryLater, WorkerHarness
from router.contract.examples import example_payload
from router.contract.names import WEBHOOK_PATH, Names
from router.observability import configure_logging
from tests.conftest import Client, StartWorker, signed, take

PHONE, MASKED_PHONE = "+14155550123", "+1******0123"
EMAIL, MASKED_EMAIL = "jane.doe@example.com", "j***@example.com"
#: What must never be seen: the number (with or without its +) and the address's local part.
REVEALING = (PHONE, PHONE[1:], "jane.doe")


def body_of(event_type: str) -> bytes:
    """An event of ``event_type`` about a subscriber with our phone number and address."""
    payload = example_payload(event_type, "acme")
    payload["subscriber"] = {**payload["subscriber"], "phone": PHONE, "email": EMAIL}
    return orjson.dumps(payload)


async def quote_the_subscriber(event: Event) -> None:
    """A handler whose CRM refuses the subscriber, in an answer quoting them."""
    phone, email = event.subscriber["phone"], event.subscriber["email"]
    raise ValueError(f"CRM answered 409: {phone} already belongs to {email}")


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.BytesIO]:
    """Every byte logged while the test runs, as production logs it (JSON lines on stderr)."""
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(raw, write_through=True))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("json", "debug")
    # module-level loggers (the runtime's) would otherwise keep this stream after the test
    structlog.configure(cache_logger_on_first_use=False)
    yield raw
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def events(raw: io.BytesIO) -> dict[str, dict[str, object]]:
    """The JSON lines logged, by event (the last of each)."""
    return {str(line["event"]): line for line in map(orjson.loads, raw.getvalue().splitlines())}


def assert_reveals_nothing(*texts: str | bytes) -> None:
    for text in texts:
        shown = text.decode() if isinstance(text, bytes) else text
        assert not [secret for secret in REVEALING if secret in shown], shown


async def test_a_retried_then_dead_lettered_error_is_logged_and_summarised_masked(
    logged: io.BytesIO,
) -> None:
    # Given a worker whose handler fails quoting the subscriber, retried once
    worker = Worker("crm-sync", retry=RetryPolicy(delays=(0.1,), max_attempts=2))
    worker.on("sms.subscribed")(quote_the_subscriber)

    # When an event goes through its pipeline until it is settled
    outcomes = await WorkerHarness(worker).deliver_until_settled(body_of("sms.subscribed"))

    # Then it was retried, then dead-lettered, and neither log line shows the subscriber
    assert [type(outcome) for outcome in outcomes] == [RetryLater, DeadLetter]
    lines = events(logged)
    for event in ("event_retry", "event_dead_lettered"):
        assert lines[event]["error"] == (
            f"ValueError: CRM answered 409: {MASKED_PHONE} already belongs to {MASKED_EMAIL}"
        )
    assert_reveals_nothing(logged.getvalue())

    # And what the runtime writes into the dead letter's headers shows it masked too
    dead = outcomes[-1]
    assert isinstance(dead, DeadLetter)
    summary, traceback = error_summary(dead.error), traceback_summary(dead.error)
    assert summary == lines["event_dead_lettered"]["error"]
    assert "quote_the_subscriber" in traceback and traceback.endswith(f"{summary}\n")
    assert_reveals_nothing(summary, traceback)


class StoreQuotingOnRelease(MemoryStore):
    """An idempotency store whose release fails with an error quoting the claim's data."""

    async def release(self, claim: Acquired) -> bool:
        raise ConnectionError(f"lost the claim while {PHONE} / {EMAIL} was handled")


async def test_an_idempotency_store_error_is_logged_masked(logged: io.BytesIO) -> None:
    # Given a worker whose store fails to release a claim, quoting the subscriber
    worker = Worker("crm-sync", idempotency=StoreQuotingOnRelease())
    worker.on("sms.subscribed")(quote_the_subscriber)

    # When its handler fails (so the claim is released)
    outcome = await WorkerHarness(worker).deliver(body_of("sms.subscribed"))

    # Then the release's failure is logged, masked
    assert isinstance(outcome, RetryLater)
    release = events(logged)["idempotency_release_failed"]
    assert release["error"] == (
        f"ConnectionError: lost the claim while {MASKED_PHONE} / {MASKED_EMAIL} was handled"
    )
    assert_reveals_nothing(logged.getvalue())


@pytest.mark.broker
async def test_a_dead_letter_on_the_broker_carries_its_error_masked(
    logged: io.BytesIO,
    ingress: Client,
    start_worker: StartWorker,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    # Given a running worker that rejects a subscriber, quoting them
    worker = Worker("crm-sync")

    @worker.on("email.subscribed")
    async def refuse(event: Event) -> None:
        raise Reject(
            f"no CRM contact for {event.subscriber['email']} ({event.subscriber['phone']})"
        )

    await start_worker(worker)

    # When Attentive sends an event about that subscriber
    body = body_of("email.subscribed")
    response = await ingress.post(WEBHOOK_PATH, data=body, headers=signed(body))
    assert response.status == 200

    # Then the dead letter's error and traceback headers show the subscriber masked
    channel = await amqp.channel()
    dlq = await channel.get_queue(names.app_dead_letter_queue("crm-sync"))
    (dead,) = await take(dlq, 1, timeout=20)
    assert dead.body == body  # the event itself is kept whole, for a replay
    error, traceback = (
        str(dead.headers["x-attentive-error"]),
        str(dead.headers["x-attentive-traceback"]),
    )
    assert error == f"Reject: no CRM contact for {MASKED_EMAIL} ({MASKED_PHONE})"
    assert traceback.endswith(f"{error}\n")
    assert_reveals_nothing(error, traceback)

    # And nothing the ingress, the admin API or the worker logged shows them either
    assert b"event_dead_lettered" in logged.getvalue()
    assert_reveals_nothing(logged.getvalue())
