"""Typed events: each documented type decodes into its model in one step, and a handler that
declares a model gets it, is checked by mypy, and has what does not fit dead-lettered with a
reason naming the field (in-process, then against the real RabbitMQ)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection

from consumers import Event, Worker
from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.outcomes import DeadLetter, Handled
from consumers.testing import WorkerHarness
from router.contract.events import EVENT_TYPES, is_event_type
from router.contract.examples import example_body, example_payload
from router.contract.models import (
    MODELS,
    AnyEvent,
    AttentiveEvent,
    CustomAttributeSet,
    EmailSent,
    EventDoesNotFit,
    GenericEvent,
    SmsInboundMessage,
    SmsSent,
    SmsSubscribed,
    decode,
)
from router.contract.names import WEBHOOK_PATH, Names
from tests.conftest import Client, StartWorker, signed, take

ROOT = Path(__file__).resolve().parent.parent


def body(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)


# -- decoding --------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_documented_type_decodes_into_its_own_model(event_type: str) -> None:
    event = decode(example_body(event_type, timestamp_ms=1_632_945_178_104))
    assert type(event) is MODELS[event_type]
    assert event.type == event_type
    assert event.company.company_id == "MDc6Q29tcGFueTU"
    assert event.subscriber.phone == "+15555555555"
    assert event.time is not None and event.time.year == 2021


def test_the_parts_of_a_type_are_read_with_their_fields() -> None:
    subscribed = decode(example_body("sms.subscribed"))
    assert isinstance(subscribed, SmsSubscribed)
    assert subscribed.creative is not None and subscribed.creative.type == "TEXT_TO_JOIN"
    assert subscribed.subscription is not None and subscribed.subscription.type == "MARKETING"
    attribute = decode(example_body("custom_attribute.set"))
    assert isinstance(attribute, CustomAttributeSet)
    assert attribute.user_property is not None
    assert (attribute.user_property.name, attribute.user_property.value) == (
        "favorite_color",
        "green",
    )


def test_optional_parts_may_be_missing_and_unknown_fields_are_ignored() -> None:
    # Given a bare sms.sent with a field and a part no model knows
    minimal = {"type": "sms.sent", "company": {"company_id": "c1"}, "carrier": {"name": "x"}}
    event = decode(body(minimal))
    assert isinstance(event, SmsSent)
    assert event.message is None and event.timestamp is None and event.time is None
    assert event.subscriber.phone is None  # an empty subscriber, not an error
    assert not hasattr(event, "carrier")


def test_external_id_is_attentives_number_or_a_string() -> None:
    for external_id in (16467358, "crm-16467358"):
        payload = example_payload("sms.subscribed")
        payload["subscriber"]["external_id"] = external_id
        assert decode(body(payload)).subscriber.external_id == external_id


def test_a_type_attentive_has_not_documented_yet_decodes_to_a_generic_event() -> None:
    payload = {**example_payload("sms.sent"), "type": "sms.delivered", "carrier": "x"}
    event = decode(body(payload))
    assert isinstance(event, GenericEvent)
    assert event.type == "sms.delivered"
    assert event.company.company_id == "MDc6Q29tcGFueTU"


@pytest.mark.parametrize(
    ("payload", "field", "problem"),
    [
        ({"type": "sms.sent", "company": {"company_id": 7}}, "company.company_id", "`str`"),
        ({"type": "sms.sent", "company": {}}, "company.company_id", "missing"),
        ({"type": "sms.sent"}, "company", "missing"),
        ({"company": {"company_id": "c"}}, "type", "missing"),
        ({**example_payload("sms.sent"), "message": {"text": 5}}, "message.text", "`str"),
        ({**example_payload("sms.sent"), "timestamp": -1}, "timestamp", ">= 0"),
        ({"type": "sms.new", "company": {}}, "company.company_id", "missing"),
    ],
)
def test_a_body_that_does_not_fit_is_refused_naming_the_field(
    payload: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(EventDoesNotFit) as refused:
        decode(body(payload))
    assert refused.value.field == field
    assert problem in str(refused.value) and str(refused.value).startswith(field)


def test_a_body_that_is_no_json_object_is_refused_without_a_field() -> None:
    for raw in (b"[1, 2]", b"not json"):
        with pytest.raises(EventDoesNotFit) as refused:
            decode(raw)
        assert refused.value.field is None


# -- handlers that declare a model -----------------------------------------------------------


async def test_a_handler_gets_the_model_it_declares_and_the_event_when_it_asks() -> None:
    # Given a worker with a typed handler, and one that also takes the delivered Event
    worker = Worker("typed")
    subscribed_seen: list[SmsSubscribed] = []
    sent_seen: list[tuple[SmsSent, str, int]] = []

    @worker.on("sms.subscribed")
    async def subscribed(event: SmsSubscribed) -> None:
        subscribed_seen.append(event)

    @worker.on("sms.sent")
    async def sent(event: SmsSent, delivery: Event) -> None:
        sent_seen.append((event, delivery.payload["message"]["name"], delivery.attempt))

    # When both types are delivered
    harness = WorkerHarness(worker)
    assert await harness.deliver("sms.subscribed") == Handled()
    assert await harness.deliver("sms.sent", attempt=2) == Handled()

    # Then each handler got its model; the second also the raw payload and the attempt
    (first,) = subscribed_seen
    assert isinstance(first, SmsSubscribed) and first.subscriber.email == "test@gmail.com"
    ((second, name, attempt),) = sent_seen
    assert isinstance(second, SmsSent) and second.message is not None
    assert (name, attempt) == ("Black Friday early access", 2)


async def test_a_body_that_does_not_fit_the_handlers_model_is_rejected_naming_the_field() -> None:
    worker = Worker("typed")
    called: list[SmsSent] = []

    @worker.on("sms.sent")
    async def sent(event: SmsSent) -> None:
        called.append(event)

    payload = {**example_payload("sms.sent"), "message": {"text": 42}}
    outcome = await WorkerHarness(worker).deliver(payload)
    assert isinstance(outcome, DeadLetter) and outcome.reason == "rejected"
    assert "does not fit SmsSent" in str(outcome.error)
    assert "message.text" in str(outcome.error)
    assert called == []


async def test_a_union_of_models_and_the_generic_event_take_a_channels_future_types() -> None:
    worker = Worker("wide")
    types: list[str] = []

    @worker.on("email.*")
    async def any_email(event: AnyEvent) -> None:
        types.append(event.type)

    harness = WorkerHarness(worker)
    for event_type in ("email.sent", "email.opened"):
        await harness.deliver(event_type)
    await harness.deliver({**example_payload("email.sent"), "type": "email.bounced"})
    assert types == ["email.sent", "email.opened", "email.bounced"]


async def test_a_handler_of_the_base_model_takes_every_documented_type_and_no_other() -> None:
    worker = Worker("base")
    seen: list[str] = []

    @worker.on("*")
    async def documented(event: AttentiveEvent) -> None:
        seen.append(event.type)

    harness = WorkerHarness(worker)
    for event_type in EVENT_TYPES:
        assert await harness.deliver(event_type) == Handled()
    refused = await harness.deliver({**example_payload("sms.sent"), "type": "sms.delivered"})
    assert seen == list(EVENT_TYPES)
    assert isinstance(refused, DeadLetter) and "type" in str(refused.error)


async def test_handlers_of_an_event_keep_working_as_before() -> None:
    worker = Worker("plain")
    seen: list[Event] = []

    @worker.on("sms.*")
    async def record(event: Event) -> None:
        seen.append(event)

    await WorkerHarness(worker).deliver("sms.inbound_message")
    assert seen[0].payload["message"]["text"] == "STOP"


async def test_handlers_of_anything_an_event_is_or_of_no_annotation_get_the_event() -> None:
    worker = Worker("loose")
    seen: list[object] = []

    async def of_object(event: object) -> None:
        seen.append(event)

    async def unannotated(event, *, extra=1):  # type: ignore[no-untyped-def]
        seen.append(event)

    worker.on("sms.sent")(of_object)
    worker.on("email.sent")(unannotated)
    harness = WorkerHarness(worker)
    await harness.deliver("sms.sent")
    await harness.deliver("email.sent")
    assert [type(e) for e in seen] == [Event, Event]


def test_a_handler_taking_more_than_its_model_and_the_event_is_refused() -> None:
    worker = Worker("greedy")

    async def three(event: SmsSent, delivery: Event, more: int) -> None: ...

    async def second_not_the_event(event: SmsSent, other: str) -> None: ...

    for handler in (three, second_not_the_event):
        with pytest.raises(WorkerConfigError, match="its model, then the Event at most"):
            worker.on("sms.sent")(handler)  # type: ignore[arg-type]
    assert worker.routes == []


def test_a_pattern_wider_than_the_declared_model_is_refused_at_registration() -> None:
    worker = Worker("narrow")
    with pytest.raises(WorkerConfigError, match=r"sms\.\* also matches sms\.subscribed"):

        @worker.on("sms.*")
        async def inbound(event: SmsInboundMessage) -> None: ...

    with pytest.raises(WorkerConfigError, match="annotate it with Event or a model"):

        @worker.on("email.sent")  # type: ignore[type-var]
        async def wrong(event: dict[str, Any]) -> None: ...

    assert worker.routes == []


# -- against the real broker -----------------------------------------------------------------


@pytest.mark.broker
async def test_the_runtime_dead_letters_a_body_that_does_not_fit_with_the_reason(
    ingress: Client, start_worker: StartWorker, amqp: AbstractRobustConnection, names: Names
) -> None:
    # Given a worker whose handler takes EmailSent
    worker = Worker("typed-mail")
    handled: list[EmailSent] = []

    @worker.on("email.sent")
    async def sent(event: EmailSent) -> None:
        handled.append(event)

    await start_worker(worker)

    # When a fitting email.sent arrives, then one whose subscriber's email is a number
    good = example_body("email.sent")
    bad = body({**example_payload("email.sent"), "subscriber": {"email": 12}})
    for raw in (good, bad):
        response = await ingress.post(WEBHOOK_PATH, data=raw, headers=signed(raw))
        assert response.status == 200

    # Then the first is handled, and the second is dead-lettered at once with the field named
    channel = await amqp.channel()
    (dead,) = await take(await channel.get_queue(names.app_dead_letter_queue("typed-mail")), 1)
    assert dead.body == bad
    assert dead.headers["x-attentive-dead-letter-reason"] == "rejected"
    assert dead.headers["x-attentive-attempt"] == 1
    assert "subscriber.email" in str(dead.headers["x-attentive-error"])
    assert [e.subscriber.email for e in handled] == ["test@gmail.com"]


# -- mypy --strict -------------------------------------------------------------------------------

_CHECKED = """
from consumers import Event, Worker
from router.contract.models import SmsSubscribed

worker = Worker("checked")


@worker.on("sms.subscribed")
async def fine(event: SmsSubscribed, delivery: Event) -> None:
    print(event.subscriber.phone, delivery.message_id)


@worker.on("sms.subscribed")
async def unchecked_none(event: SmsSubscribed) -> None:
    print(event.subscriber.phone.upper())


@worker.on("sms.subscribed")
async def not_a_model(event: int) -> None: ...
"""


def test_mypy_strict_checks_a_handler_against_the_model_it_declares(tmp_path: Path) -> None:
    handlers = tmp_path / "handlers.py"
    handlers.write_text(_CHECKED)
    checked = subprocess.run(
        [
            *(sys.executable, "-m", "mypy", "--strict", "--no-error-summary"),
            *("--cache-dir", str(ROOT / ".mypy_cache"), str(handlers)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MYPYPATH": str(ROOT)},
    )
    errors = [line for line in checked.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 2, checked.stdout + checked.stderr
    lines = _CHECKED.splitlines()
    upper = next(i for i, line in enumerate(lines, 1) if ".upper()" in line)
    registered = next(i for i, line in enumerate(lines, 1) if "not_a_model" in line) - 1
    assert f':{upper}: error: Item "None" of "str | None" has no attribute "upper"' in errors[0]
    assert f':{registered}: error: Value of type variable "E"' in errors[1]
    assert 'cannot be "int"' in errors[1]


@pytest.mark.parametrize(
    "event_type", ["sms.delivered", "a.b.c", "x_1.y", "Sms.sent", "sms", "sms.", ".sms", "sms..x"]
)
def test_a_generic_event_takes_exactly_the_types_the_router_routes(event_type: str) -> None:
    payload = {"type": event_type, "company": {"company_id": "c1"}}
    try:
        decoded: object = decode(body(payload))
    except EventDoesNotFit as error:
        decoded = error
    assert isinstance(decoded, GenericEvent) == is_event_type(event_type)
