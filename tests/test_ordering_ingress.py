"""The ingress against the real RabbitMQ puts the ordering keys on what it publishes: the
subject key and the event time, both absent when the payload lacks them, and never a
subscriber's phone number or email in any header."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage

from router.contract.events import EVENT_TYPES
from router.contract.examples import example_payload
from router.contract.names import EVENT_TIME_HEADER, SUBJECT_KEY_HEADER, WEBHOOK_PATH
from router.contract.ordering import SubjectKeys, subject_secret
from router.errors import ConfigError
from router.secret import Secret
from router.settings import Settings
from tests.conftest import Client, MakeIngress, Tap, TapFactory, signed

pytestmark = pytest.mark.broker

SECRET = "a-subject-key-secret-of-32-characters-for-this-test"
PHONE, EMAIL = "+14155550123", "Jane.Doe@Example.com"
#: The subscriber as any header could show them: the number with or without its +, its
#: digits as a number, the address in any case, its local part, and their base64 and hex.
CONTACT = tuple(
    spelling
    for detail in (PHONE, PHONE[1:], EMAIL, EMAIL.lower(), "jane.doe")
    for spelling in (
        detail,
        detail.lower(),
        base64.b64encode(detail.encode()).decode().rstrip("="),
        base64.urlsafe_b64encode(detail.encode()).decode().rstrip("="),
        detail.encode().hex(),
    )
)


def body_of(event_type: str, company: str = "acme", **changes: Any) -> bytes:
    payload = example_payload(event_type, company, timestamp_ms=1_700_000_000_123)
    payload["subscriber"] = {"phone": PHONE, "email": EMAIL, "external_id": 4242}
    payload.update(changes)
    return orjson.dumps({k: v for k, v in payload.items() if v is not None})


async def post(ingress: Client, body: bytes) -> None:
    response = await ingress.post(WEBHOOK_PATH, data=body, headers=signed(body))
    assert response.status == 200, await response.text()


def held_contact(message: AbstractIncomingMessage) -> list[str]:
    """The spellings of the subscriber's contact details found in any header's value."""
    values = " ".join(str(value) for value in (message.headers or {}).values())
    return [spelling for spelling in CONTACT if spelling in values]


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    return dataclasses.replace(settings, subject_key_secret=SECRET)


async def test_every_event_carries_its_subject_key_and_its_time_and_no_contact_detail(
    make_ingress: MakeIngress, keyed: Settings, tap: Tap
) -> None:
    # Given an ingress with a subject key secret of its own
    ingress = await make_ingress(keyed)

    # When one event of each documented type arrives for one subscriber
    for event_type in EVENT_TYPES:
        await post(ingress, body_of(event_type))

    # Then each is published with the subject key of its payload and the payload's time
    keys = SubjectKeys(SECRET.encode())
    messages = await tap.take(len(EVENT_TYPES))
    for message in messages:
        payload = orjson.loads(message.body)
        headers = message.headers or {}
        assert headers[SUBJECT_KEY_HEADER] == keys.key(payload["type"], "acme", payload)
        assert headers[EVENT_TIME_HEADER] == 1_700_000_000_123
        # And no header holds the phone number or the email, in any spelling
        assert held_contact(message) == [], payload["type"]

    # And the subscriber's SMS events share one key, their email events another
    by_type = {orjson.loads(m.body)["type"]: (m.headers or {}) for m in messages}
    sms = {by_type[t][SUBJECT_KEY_HEADER] for t in EVENT_TYPES if t.startswith("sms.")}
    email = {by_type[t][SUBJECT_KEY_HEADER] for t in EVENT_TYPES if t.startswith("email.")}
    assert len(sms) == 1 and len(email) == 1 and sms != email


async def test_an_event_without_subscriber_or_timestamp_goes_without_the_headers(
    make_ingress: MakeIngress, keyed: Settings, tap: Tap
) -> None:
    # Given an ingress with a subject key secret
    ingress = await make_ingress(keyed)

    # When an event without a subscriber or a timestamp, an attribute event naming no
    # attribute and an event of a type on no known channel arrive
    await post(ingress, body_of("sms.unsubscribed", subscriber=None, timestamp=None))
    await post(ingress, body_of("custom_attribute.set", user_property=None))
    await post(ingress, body_of("sms.subscribed", type="push.subscribed"))

    # Then all three are published, none with a subject key; the two with a time carry it
    messages = {orjson.loads(m.body)["type"]: m.headers or {} for m in await tap.take(3)}
    assert all(SUBJECT_KEY_HEADER not in headers for headers in messages.values())
    assert EVENT_TIME_HEADER not in messages["sms.unsubscribed"]
    assert messages["custom_attribute.set"][EVENT_TIME_HEADER] == 1_700_000_000_123
    assert messages["push.subscribed"][EVENT_TIME_HEADER] == 1_700_000_000_123


async def test_without_a_secret_the_key_is_made_with_one_derived_from_the_signing_key(
    make_ingress: MakeIngress, settings: Settings, tap_factory: TapFactory
) -> None:
    # Given an ingress without ROUTER_SUBJECT_KEY_SECRET, and one with it
    derived = await make_ingress(settings)
    tap = await tap_factory("#")

    # When the same event arrives at each
    body = body_of("sms.subscribed")
    await post(derived, body)
    keyed = await make_ingress(dataclasses.replace(settings, subject_key_secret=SECRET))
    await post(keyed, body_of("sms.subscribed", note="the same subscriber"))

    # Then the first key is made with the secret derived from the first signing key
    first, second = [(m.headers or {})[SUBJECT_KEY_HEADER] for m in await tap.take(2)]
    expected = SubjectKeys(subject_secret(Secret(""), settings.signing_keys))
    assert first == expected.key("sms.subscribed", "acme", orjson.loads(body))
    # And the configured secret gives another key for the same subscriber
    assert second != first


def test_the_secret_is_read_hidden_and_refused_when_short() -> None:
    # Given the secret in the environment
    settings = Settings.from_env({"ROUTER_SUBJECT_KEY_SECRET": SECRET})

    # Then the settings hold it, and never show it
    assert settings.subject_key_secret.reveal() == SECRET
    assert SECRET not in repr(settings) and SECRET not in str(settings)

    # And a secret too short to resist guessing is refused without being quoted
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"ROUTER_SUBJECT_KEY_SECRET": "short-secret"})
    assert "ROUTER_SUBJECT_KEY_SECRET" in str(refused.value)
    assert "short-secret" not in str(refused.value)
