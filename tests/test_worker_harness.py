"""The worker runtime without a broker: WorkerHarness runs a worker's whole pipeline
in-process, so each delivery ends as the outcome the runner would settle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any

import orjson
import pytest
import structlog

from consumers import Event, Reject, Retry, RetryPolicy, Worker
from consumers.runtime import middleware
from consumers.runtime.errors import NoHandler, WorkerConfigError
from consumers.testing import DeadLetter, Handled, RetryLater, Skipped, WorkerHarness
from router.contract.examples import DEFAULT_COMPANY_ID, example_payload

SMS_SENT = example_payload("sms.sent", timestamp_ms=1_700_000_000_000)


def recording_worker(pattern: str = "sms.*", **kwargs: Any) -> tuple[Worker, list[Event]]:
    """A worker whose one handler records what it receives."""
    seen: list[Event] = []
    worker = Worker("recorder", **kwargs)

    @worker.on(pattern)
    async def record(event: Event) -> None:
        seen.append(event)

    return worker, seen


def failing_worker(error: Exception, **kwargs: Any) -> tuple[Worker, list[int]]:
    """A worker whose handler raises ``error`` on every attempt, recording the attempts."""
    attempts: list[int] = []
    worker = Worker("failing", **kwargs)

    @worker.on("sms.*")
    async def fail(event: Event) -> None:
        attempts.append(event.attempt)
        raise error

    return worker, attempts


# --- outcomes -------------------------------------------------------------------------------


async def test_a_matching_event_is_handled_and_the_handler_gets_it_parsed() -> None:
    worker, seen = recording_worker()

    outcome = await WorkerHarness(worker).deliver(SMS_SENT)

    assert outcome == Handled()
    (event,) = seen
    assert (event.type, event.company_id, event.attempt) == ("sms.sent", DEFAULT_COMPANY_ID, 1)
    assert event.routing_key == f"sms.sent.{DEFAULT_COMPANY_ID}"
    assert event.raw == orjson.dumps(SMS_SENT)
    assert event.timestamp is not None and event.timestamp.year == 2023


async def test_an_event_no_handler_matches_is_dead_lettered_as_no_handler() -> None:
    worker, seen = recording_worker("sms.*")

    outcome = await WorkerHarness(worker).deliver("email.opened")

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "no-handler"
    assert isinstance(outcome.error, NoHandler)
    assert seen == []


async def test_a_reject_dead_letters_at_once_whatever_attempts_are_left() -> None:
    worker, attempts = failing_worker(Reject("no phone number"))

    outcomes = await WorkerHarness(worker).deliver_until_settled(SMS_SENT)

    assert [type(o) for o in outcomes] == [DeadLetter]
    assert isinstance(outcomes[0], DeadLetter) and outcomes[0].reason == "rejected"
    assert str(outcomes[0].error) == "no phone number"
    assert attempts == [1]


async def test_an_exception_retries_after_the_first_delay() -> None:
    worker, _ = failing_worker(ConnectionError("the CRM is down"))

    outcome = await WorkerHarness(worker).deliver(SMS_SENT)

    assert isinstance(outcome, RetryLater)
    assert outcome.delay_ms == 5_000  # the default policy's first tier
    assert isinstance(outcome.error, ConnectionError)


async def test_an_event_that_keeps_failing_walks_every_tier_then_is_dead_lettered() -> None:
    worker, attempts = failing_worker(ConnectionError("the CRM is down"))

    outcomes = await WorkerHarness(worker).deliver_until_settled(SMS_SENT)

    delays = [o.delay_ms for o in outcomes if isinstance(o, RetryLater)]
    assert delays == [5_000, 30_000, 300_000, 1_800_000]
    assert isinstance(outcomes[-1], DeadLetter) and outcomes[-1].reason == "exhausted"
    assert attempts == [1, 2, 3, 4, 5]  # max_attempts of the default policy


async def test_a_short_policy_dead_letters_after_its_own_max_attempts() -> None:
    policy = RetryPolicy(delays=(1.0,), max_attempts=3)
    worker, attempts = failing_worker(ValueError("bad mapping"), retry=policy)

    outcomes = await WorkerHarness(worker).deliver_until_settled(SMS_SENT)

    assert [getattr(o, "delay_ms", None) for o in outcomes[:-1]] == [1_000, 1_000]
    assert isinstance(outcomes[-1], DeadLetter) and outcomes[-1].reason == "exhausted"
    assert attempts == [1, 2, 3]


@pytest.mark.parametrize(
    ("asked_s", "expected_ms"),
    [(1, 5_000), (60, 300_000), (300, 300_000), (86_400, 1_800_000)],
)
async def test_retry_with_a_delay_waits_in_the_first_tier_long_enough(
    asked_s: float, expected_ms: int
) -> None:
    worker, _ = failing_worker(Retry("rate limited", delay=asked_s))

    outcome = await WorkerHarness(worker).deliver(SMS_SENT)

    assert isinstance(outcome, RetryLater)
    assert outcome.delay_ms == expected_ms


async def test_a_redelivered_message_is_skipped_once_handled() -> None:
    worker, seen = recording_worker()
    harness = WorkerHarness(worker)

    first = await harness.deliver(SMS_SENT)
    again = await harness.deliver(SMS_SENT)  # the same body: the same message id

    assert (first, again) == (Handled(), Skipped("duplicate"))
    assert len(seen) == 1


async def test_a_failed_attempt_is_not_remembered_so_its_retry_runs() -> None:
    calls: list[int] = []
    worker = Worker("flaky")

    @worker.on("sms.sent")
    async def flaky(event: Event) -> None:
        calls.append(event.attempt)
        if event.attempt == 1:
            raise ConnectionError("timeout")

    outcomes = await WorkerHarness(worker).deliver_until_settled(SMS_SENT)

    assert [type(o) for o in outcomes] == [RetryLater, Handled]
    assert calls == [1, 2]


async def test_companies_restrict_a_handler_to_those_companies() -> None:
    worker = Worker("vip")
    seen: list[str] = []

    @worker.on("sms.sent", companies=["acme"])
    async def vip(event: Event) -> None:
        seen.append(event.company_id)

    harness = WorkerHarness(worker)
    for_acme = await harness.deliver("sms.sent", company_id="acme")
    for_other = await harness.deliver("sms.sent", company_id="globex")

    assert for_acme == Handled()
    assert isinstance(for_other, DeadLetter) and for_other.reason == "no-handler"
    assert seen == ["acme"]


async def test_the_first_registered_matching_handler_wins() -> None:
    worker = Worker("ordered")
    calls: list[str] = []

    @worker.on("sms.*")
    async def every_sms(event: Event) -> None:
        calls.append("sms.*")

    @worker.on("sms.sent")
    async def only_sent(event: Event) -> None:
        calls.append("sms.sent")

    @worker.on("email.opened")
    async def opened(event: Event) -> None:
        calls.append("email.opened")

    harness = WorkerHarness(worker)
    await harness.deliver("sms.sent")
    await harness.deliver("email.opened")

    assert calls == ["sms.*", "email.opened"]


async def test_outcomes_are_counted_in_the_worker_registry() -> None:
    worker, _ = recording_worker()
    harness = WorkerHarness(worker)

    await harness.deliver(SMS_SENT)
    await harness.deliver(SMS_SENT)

    def count(outcome: str) -> float | None:
        labels = {"app": "recorder", "type": "sms.sent", "outcome": outcome}
        return worker.registry.get_sample_value("attentive_worker_events_total", labels)

    assert (count("handled"), count("skipped")) == (1.0, 1.0)
    assert harness.outcomes == [Handled(), Skipped("duplicate")]


@pytest.fixture
def pipeline_logs(monkeypatch: pytest.MonkeyPatch) -> list[MutableMapping[str, Any]]:
    """What the pipeline's logger writes, at every level, with the bound context merged."""
    capture = structlog.testing.LogCapture()
    logger = structlog.wrap_logger(
        None,
        processors=[structlog.contextvars.merge_contextvars, capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    monkeypatch.setattr(middleware, "log", logger)
    return capture.entries


async def test_a_handled_delivery_is_logged_at_debug_and_failures_louder(
    pipeline_logs: list[MutableMapping[str, Any]],
) -> None:
    # Given a worker that handles sms.sent and fails on anything else
    worker = Worker("logger", retry=RetryPolicy(delays=(1.0,), max_attempts=2))

    @worker.on("sms.sent")
    async def handle(event: Event) -> None:
        pass

    @worker.on("sms.*")
    async def fail(event: Event) -> None:
        raise ConnectionError("down")

    # When one event is handled, one skipped, and one retried then dead-lettered
    harness = WorkerHarness(worker)
    await harness.deliver(SMS_SENT)
    await harness.deliver(SMS_SENT)
    await harness.deliver_until_settled("sms.subscribed")

    # Then success is a debug line (thousands a second), the rest info, warning, error
    assert [(e["event"], e["log_level"]) for e in pipeline_logs] == [
        ("event_handled", "debug"),
        ("event_skipped", "info"),
        ("event_retry", "warning"),
        ("event_dead_lettered", "error"),
    ]
    assert all(e["app"] == "logger" and len(e["message_id"]) == 64 for e in pipeline_logs)


async def test_a_handler_logs_with_the_message_id_bound_and_nothing_is_left_bound(
    pipeline_logs: list[MutableMapping[str, Any]],
) -> None:
    worker = Worker("narrator")

    @worker.on("sms.sent")
    async def narrate(event: Event) -> None:
        middleware.log.info("narrating")

    structlog.contextvars.bind_contextvars(attempt="outer")
    try:
        await WorkerHarness(worker).deliver(SMS_SENT)
        left = structlog.contextvars.get_contextvars()
    finally:
        structlog.contextvars.clear_contextvars()

    narrated = next(e for e in pipeline_logs if e["event"] == "narrating")
    handled = next(e for e in pipeline_logs if e["event"] == "event_handled")
    assert (narrated["message_id"], narrated["attempt"]) == (handled["message_id"], 1)
    assert left == {"attempt": "outer"}


async def test_the_harness_refuses_a_string_that_is_not_an_event_type() -> None:
    worker, _ = recording_worker()

    with pytest.raises(ValueError, match="not an event type"):
        await WorkerHarness(worker).deliver("sms")


async def test_a_body_that_is_not_an_event_is_dead_lettered_as_rejected() -> None:
    worker, seen = recording_worker()

    outcome = await WorkerHarness(worker).deliver(b"not json")

    assert isinstance(outcome, DeadLetter) and outcome.reason == "rejected"
    assert seen == []


async def test_the_retries_of_an_example_type_are_the_same_message() -> None:
    ids: list[str] = []
    worker = Worker("ids", retry=RetryPolicy(delays=(1.0,), max_attempts=3))

    @worker.on("sms.sent")
    async def fail(event: Event) -> None:
        ids.append(event.message_id)
        await asyncio.sleep(0.002)  # let the clock move on a millisecond
        raise ConnectionError("down")

    await WorkerHarness(worker).deliver_until_settled("sms.sent")

    assert len(ids) == 3
    assert len(set(ids)) == 1


# --- RetryPolicy ----------------------------------------------------------------------------


def test_tiers_are_the_delays_in_milliseconds() -> None:
    assert RetryPolicy(delays=(0.2, 1.5, 60.0)).tiers_ms == (200, 1_500, 60_000)
    assert RetryPolicy().tiers_ms == (5_000, 30_000, 300_000, 1_800_000)


def test_delay_after_follows_the_tiers_then_repeats_the_last_then_gives_up() -> None:
    policy = RetryPolicy(delays=(1.0, 10.0), max_attempts=5)

    schedule = [policy.delay_after(attempt) for attempt in range(1, 6)]

    assert schedule == [1_000, 10_000, 10_000, 10_000, None]


def test_delay_after_at_least_picks_the_first_long_enough_tier_or_the_longest() -> None:
    policy = RetryPolicy(delays=(1.0, 10.0, 100.0), max_attempts=5)

    assert policy.delay_after(1, at_least=5) == 10_000
    assert policy.delay_after(1, at_least=0.5) == 1_000  # never shorter than scheduled
    assert policy.delay_after(3, at_least=5) == 100_000  # nor than a later attempt's tier
    assert policy.delay_after(1, at_least=1_000) == 100_000
    assert policy.delay_after(5, at_least=5) is None


def test_a_single_attempt_policy_needs_no_tiers() -> None:
    policy = RetryPolicy(delays=(), max_attempts=1)

    assert policy.tiers_ms == ()
    assert policy.delay_after(1) is None


@pytest.mark.parametrize(
    ("delays", "max_attempts", "message"),
    [
        ((5.0,), 0, "max_attempts must be at least 1"),
        ((), 2, "at least one delay tier"),
        ((0.0, 5.0), 3, "positive and ascending"),
        ((-1.0,), 3, "positive and ascending"),
        ((30.0, 5.0), 3, "positive and ascending"),
    ],
)
def test_a_policy_that_makes_no_sense_is_refused(
    delays: tuple[float, ...], max_attempts: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(delays=delays, max_attempts=max_attempts)


def test_a_repeated_delay_is_waited_as_often_as_it_is_listed() -> None:
    policy = RetryPolicy(delays=(5.0, 5.0, 30.0), max_attempts=4)

    assert [policy.delay_after(attempt) for attempt in (1, 2, 3)] == [5_000, 5_000, 30_000]


# --- Worker validation and claims -----------------------------------------------------------


@pytest.mark.parametrize("app", ["SMS Audit", "", "-leading-dash", "x" * 65])
def test_a_worker_with_a_bad_application_name_is_refused(app: str) -> None:
    with pytest.raises(WorkerConfigError, match="invalid application name"):
        Worker(app)


def test_a_worker_needs_a_positive_prefetch() -> None:
    with pytest.raises(WorkerConfigError, match="prefetch"):
        Worker("ok", prefetch=0)


@pytest.mark.parametrize("pattern", ["sms", "sms.#", "SMS.sent", "*.sent", ""])
def test_a_handler_with_a_bad_pattern_is_refused(pattern: str) -> None:
    worker = Worker("ok")

    with pytest.raises(WorkerConfigError, match="invalid event pattern"):
        worker.on(pattern)


@pytest.mark.parametrize(
    ("companies", "message"), [([], "at least one company"), (["a b"], "invalid company id")]
)
def test_a_handler_with_bad_companies_is_refused(companies: list[str], message: str) -> None:
    worker = Worker("ok")

    with pytest.raises(WorkerConfigError, match=message):
        worker.on("sms.*", companies=companies)


def test_a_worker_claims_what_its_handlers_are_for() -> None:
    worker = Worker("growth")

    async def handler(event: Event) -> None:
        return None

    worker.on("sms.*")(handler)
    worker.on("email.opened", companies=["acme", "globex"])(handler)
    worker.on("sms.*")(handler)  # the same claim again: claimed once

    claims = [(str(c.app), str(c.pattern), c.company) for c in worker.claims]

    assert claims == [
        ("growth", "sms.*", None),
        ("growth", "email.opened", "acme"),
        ("growth", "email.opened", "globex"),
    ]


def test_a_worker_without_handlers_claims_nothing() -> None:
    assert Worker("idle").claims == []


def test_companies_given_as_one_string_is_refused_not_split_into_letters() -> None:
    worker = Worker("careful")
    with pytest.raises(WorkerConfigError, match="list of ids"):
        worker.on("sms.*", companies="acme")
