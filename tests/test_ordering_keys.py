"""The ordering keys of an event, without a broker: which events share a subject key, which
have none, how the secret is chosen, and, for generated subscribers, that the key never holds
their phone number or email in any spelling, stays the same for the same subscriber and
changes with the company and with the secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import string
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.contract.events import EVENT_TYPES, Routable, parse
from router.contract.examples import example_body, example_payload
from router.contract.ordering import (
    DERIVATION_LABEL,
    SubjectKeys,
    channel_of,
    normal_phone,
    subject_key,
    subject_of,
    subject_secret,
)
from router.secret import Secret

SECRET = b"a-subject-key-secret-of-32-characters-at-least"
KEYS = SubjectKeys(SECRET)
COMPANY = "MDc6Q29tcGFueTU"
KEY_ALPHABET = frozenset("0123456789abcdef")


def key_of(event_type: str, payload: dict[str, Any], company: str = COMPANY) -> str | None:
    return KEYS.key(event_type, company, payload)


def with_subscriber(event_type: str, **subscriber: object) -> dict[str, Any]:
    payload = example_payload(event_type)
    payload["subscriber"] = subscriber
    return payload


# -- which events share a key ---------------------------------------------------------------


def test_every_documented_type_has_a_key_of_32_hex_characters() -> None:
    # Given the example payload of each of the 11 types Attentive documents
    keys = {t: key_of(t, example_payload(t)) for t in EVENT_TYPES}

    # Then each has a subject key, compact and safe in any header or URL
    for event_type, key in keys.items():
        assert key is not None, event_type
        assert len(key) == 32 and set(key) <= KEY_ALPHABET, event_type


def test_a_subscribers_events_on_one_channel_share_a_key_and_channels_do_not() -> None:
    # Given one subscriber's examples of every type
    keys = {t: key_of(t, example_payload(t)) for t in EVENT_TYPES}

    # Then every SMS event has one key, every email event another, the attribute a third
    sms = {keys[t] for t in EVENT_TYPES if t.startswith("sms.")}
    email = {keys[t] for t in EVENT_TYPES if t.startswith("email.")}
    assert len(sms) == 1 and len(email) == 1
    assert len(sms | email | {keys["custom_attribute.set"]}) == 3


def test_an_attribute_key_is_per_attribute_name_not_per_value() -> None:
    def attribute(name: str, value: str) -> dict[str, Any]:
        payload = example_payload("custom_attribute.set")
        payload["user_property"] = {"name": name, "value": value}
        return payload

    green = key_of("custom_attribute.set", attribute("favorite_color", "green"))
    blue = key_of("custom_attribute.set", attribute("favorite_color", "blue"))
    size = key_of("custom_attribute.set", attribute("shoe_size", "9"))
    upper = key_of("custom_attribute.set", attribute("Favorite_Color", "green"))

    assert green == blue
    assert len({green, size, upper}) == 3  # (Attentive's names are case-sensitive)


def test_the_same_phone_and_email_written_differently_give_one_key() -> None:
    # Given one phone number as Attentive writes it and as other systems would
    phones = ("+15555555555", "+1 (555) 555-5555", "1.555.555.5555", 15555555555, "15555555555")
    # Then the SMS key is the same for all
    sms = {key_of("sms.subscribed", with_subscriber("sms.subscribed", phone=p)) for p in phones}
    assert len(sms) == 1

    # And so for an email address in any case, with stray blanks
    emails = ("test@gmail.com", "Test@Gmail.COM", " test@gmail.com\n")
    email = {key_of("email.opened", with_subscriber("email.opened", email=e)) for e in emails}
    assert len(email) == 1


def test_each_channel_keys_by_its_own_address_first() -> None:
    both = {"phone": "+15555555555", "email": "test@gmail.com", "external_id": 16467358}
    sms = subject_of("sms.subscribed", COMPANY, {"subscriber": both})
    email = subject_of("email.subscribed", COMPANY, {"subscriber": both})
    attribute = subject_of(
        "custom_attribute.set", COMPANY, {"subscriber": both, "user_property": {"name": "size"}}
    )

    assert sms == (COMPANY, "sms", "phone", "+15555555555")
    assert email == (COMPANY, "email", "email", "test@gmail.com")
    assert attribute == (COMPANY, "attribute", "external_id", "16467358", "size")


def test_a_missing_address_falls_back_and_the_kind_keeps_identities_apart() -> None:
    # Given SMS events whose subscriber has no phone: the email, else the external id
    by_email = subject_of("sms.sent", COMPANY, {"subscriber": {"email": "A@b.example"}})
    by_id = subject_of("sms.sent", COMPANY, {"subscriber": {"phone": "n/a", "external_id": 42}})
    assert by_email == (COMPANY, "sms", "email", "a@b.example")
    assert by_id == (COMPANY, "sms", "external_id", "42")

    # And an external id of the same digits as a phone number is another subject
    phone = key_of("sms.sent", {"subscriber": {"phone": "+15555555555"}})
    same_digits = key_of("sms.sent", {"subscriber": {"external_id": "+15555555555"}})
    assert phone != same_digits


@pytest.mark.parametrize(
    ("event_type", "payload", "why"),
    [
        ("push.subscribed", example_payload("sms.subscribed"), "a channel the contract lacks"),
        ("sms.subscribed", {"type": "sms.subscribed"}, "no subscriber"),
        ("sms.subscribed", {"subscriber": "+15555555555"}, "a subscriber that is no object"),
        ("sms.subscribed", {"subscriber": {}}, "no identity"),
        ("email.sent", {"subscriber": {"email": "  ", "external_id": None}}, "blank identity"),
        ("sms.sent", {"subscriber": {"phone": True}}, "a phone that is no number"),
        (
            "custom_attribute.set",
            {"subscriber": {"external_id": 1}},
            "an attribute event naming no attribute",
        ),
        (
            "custom_attribute.set",
            {"subscriber": {"external_id": 1}, "user_property": {"value": "green"}},
            "an attribute without a name",
        ),
        (
            "custom_attribute.set",
            {
                "subscriber": {"external_id": 1},
                "user_property": [{"name": "a", "value": 1}, {"name": "b", "value": 2}],
            },
            "several attributes in one event",
        ),
    ],
)
def test_no_key_when_the_payload_lacks_a_part(
    event_type: str, payload: dict[str, Any], why: str
) -> None:
    assert key_of(event_type, payload) is None, why


def test_phone_numbers_are_read_as_e164_or_not_at_all() -> None:
    assert normal_phone("+44 20 7946 0958") == "+442079460958"
    assert normal_phone(442079460958) == "+442079460958"
    for not_a_phone in ("", "+", "call me", "+1555555555555555", "١٢٣٤٥٦٧", -1, 0, 1.5, None):
        assert normal_phone(not_a_phone) is None, not_a_phone


def test_only_known_channels_are_keyed() -> None:
    assert channel_of("sms.delivered") == "sms"  # a type Attentive may add, on a known channel
    assert channel_of("email.bounced") == "email"
    assert channel_of("custom_attribute.deleted") == "attribute"
    assert channel_of("push.sent") is None


# -- the event time: the parse's reading of ``timestamp`` -----------------------------------


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (1632945178104, 1632945178104),
        (0, 0),
        ("1632945178104", None),
        ("2021-09-29T19:52:58.104Z", None),
        (1632945178104.5, None),
        (-1, None),
        (True, None),
        (None, None),
    ],
)
def test_the_event_time_is_the_timestamp_in_unix_milliseconds(
    timestamp: object, expected: int | None
) -> None:
    payload = example_payload("sms.subscribed")
    payload["timestamp"] = timestamp
    event = parse(orjson.dumps(payload))
    assert isinstance(event, Routable)
    assert event.timestamp_ms == expected


def test_the_parsed_payload_is_kept_but_never_shown() -> None:
    event = parse(example_body("sms.subscribed"))
    assert isinstance(event, Routable)
    assert event.payload["subscriber"]["phone"] == "+15555555555"
    assert "5555" not in repr(event) and "gmail" not in repr(event)


# -- the secret -----------------------------------------------------------------------------


def test_a_configured_secret_is_used_as_it_is() -> None:
    configured = Secret("s" * 32)
    assert subject_secret(configured, (Secret("signing-key"),)) == b"s" * 32


def test_without_one_the_secret_is_derived_from_the_first_signing_key() -> None:
    # Given no configured secret and two signing keys
    first, second = Secret("first-signing-key"), Secret("second-signing-key")
    derived = subject_secret(Secret(""), (first, second))

    # Then the secret is HMAC-SHA256 of a fixed label under the first key, not the key itself
    assert derived == hmac.new(b"first-signing-key", DERIVATION_LABEL, hashlib.sha256).digest()
    assert b"first-signing-key" not in derived
    # And a change of the first key changes it (the reason to set one explicitly)
    assert subject_secret(Secret(""), (second, first)) != derived
    with pytest.raises(ValueError, match="no subject key secret"):
        subject_secret(Secret(""), ())


def test_the_keys_never_show_their_secret() -> None:
    assert SECRET.decode() not in repr(KEYS) and SECRET.decode() not in str(KEYS)
    with pytest.raises(ValueError, match="needs a secret"):
        SubjectKeys(b"")


def test_a_secret_of_any_length_makes_keys() -> None:
    payload = example_payload("sms.sent")
    long_ones = {
        SubjectKeys(b"s" * size).key("sms.sent", COMPANY, payload) for size in (1, 64, 500)
    }
    assert len(long_ones) == 3


def test_the_one_event_function_agrees_with_the_keys() -> None:
    payload = example_payload("sms.unsubscribed")
    assert subject_key(SECRET, "sms.unsubscribed", COMPANY, payload) == key_of(
        "sms.unsubscribed", payload
    )


# -- properties, over generated subscribers ---------------------------------------------------


phones = st.builds(
    lambda country, rest: f"+{country}{rest}",
    st.integers(1, 999),
    st.text("0123456789", min_size=6, max_size=11),
)
emails = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text(string.ascii_letters + string.digits + "._+-", min_size=1, max_size=20),
    st.sampled_from(("gmail.com", "example.co.uk", "hudsonandivy.example")),
)
companies = st.text(string.ascii_letters + string.digits + "_.-", min_size=1, max_size=30)
secrets = st.binary(min_size=16, max_size=64)
types = st.sampled_from(EVENT_TYPES)


def payload_for(event_type: str, phone: str, email: str, external_id: int) -> dict[str, Any]:
    payload = example_payload(event_type, external_id=external_id)
    payload["subscriber"] = {"phone": phone, "email": email, "external_id": external_id}
    return payload


def spellings(value: str) -> set[str]:
    """``value`` in the encodings a header could carry it in."""
    raw = value.encode()
    found = {
        value,
        value.lower(),
        value.lstrip("+"),
        raw.hex(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    plain = (hashlib.sha256(raw), hashlib.md5(raw), hashlib.blake2b(raw, digest_size=16))
    for digest in (hash_.digest() for hash_ in plain):
        found |= {
            digest.hex()[:32],
            base64.urlsafe_b64encode(digest[:16]).decode().rstrip("="),
        }
    return found


@settings(max_examples=300)
@given(types, companies, phones, emails, st.integers(1, 2**53), secrets)
def test_the_key_never_holds_the_phone_or_email_in_any_encoding(
    event_type: str, company: str, phone: str, email: str, external_id: int, secret: bytes
) -> None:
    payload = payload_for(event_type, phone, email, external_id)
    key = SubjectKeys(secret).key(event_type, company, payload)
    assert key is not None

    # Neither the detail, nor its hex or base64, nor a plain (unkeyed) hash of it is in the key
    for detail in (phone, email):
        for spelling in spellings(detail):
            if len(spelling) >= 6:
                assert spelling not in key
    # Nor a plain hash of the whole subject
    subject = subject_of(event_type, company, payload)
    assert subject is not None
    material = orjson.dumps(subject)
    assert hashlib.blake2b(material, digest_size=16).hexdigest() != key
    assert hashlib.sha256(material).hexdigest()[:32] != key


@given(types, companies, phones, emails, st.integers(1, 2**53), st.text(max_size=20))
def test_the_same_subscriber_always_has_the_same_key(
    event_type: str, company: str, phone: str, email: str, external_id: int, noise: str
) -> None:
    # Given two events of one channel for one subscriber, differing in everything else
    first = payload_for(event_type, phone, email, external_id)
    second = payload_for(event_type, phone, email.upper(), external_id)
    second["timestamp"] = 0
    second["company"] = {"display_name": noise, "company_id": company}
    second["note"] = noise
    if event_type == "custom_attribute.set":
        second["user_property"] = {**first["user_property"], "value": noise}
    channel_mate = event_type.replace(".subscribed", ".unsubscribed")

    # Then they have one subject key, made again the same
    key = KEYS.key(event_type, company, first)
    assert key == KEYS.key(channel_mate, company, second)
    assert key == SubjectKeys(SECRET).key(event_type, company, first)


@given(types, companies, companies, phones, emails, st.integers(1, 2**53))
def test_another_company_is_another_key(
    event_type: str, company: str, other: str, phone: str, email: str, external_id: int
) -> None:
    payload = payload_for(event_type, phone, email, external_id)
    if company != other:
        assert KEYS.key(event_type, company, payload) != KEYS.key(event_type, other, payload)


@given(types, companies, phones, emails, st.integers(1, 2**53), secrets, secrets)
def test_another_secret_changes_every_key(
    event_type: str,
    company: str,
    phone: str,
    email: str,
    external_id: int,
    secret: bytes,
    other: bytes,
) -> None:
    payload = payload_for(event_type, phone, email, external_id)
    if secret != other:
        mine = SubjectKeys(secret).key(event_type, company, payload)
        theirs = SubjectKeys(other).key(event_type, company, payload)
        assert mine != theirs
