"""Parsing a webhook body into a :class:`Routable` event, or an :class:`Unusable` and why."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from router.contract.events import EVENT_TYPES, Routable, Unusable, parse
from router.contract.examples import DEFAULT_COMPANY_ID, example_body, example_payload

TIMESTAMP_MS = 1_732_650_000_000  # 2024-11-26T19:40:00Z
#: 9999-12-31T23:59:59.999Z, the latest timestamp the router keeps.
LATEST_TIMESTAMP_MS = 253_402_300_799_999
_DROP = object()


def _webhook(**fields: object) -> bytes:
    """An ``sms.sent`` example body with some top-level fields replaced (or dropped: ``_DROP``)."""
    payload: dict[str, Any] = example_payload("sms.sent", timestamp_ms=TIMESTAMP_MS)
    for name, value in fields.items():
        if value is _DROP:
            del payload[name]
        else:
            payload[name] = value
    return orjson.dumps(payload)


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _event(body: bytes) -> Routable:
    result = parse(body)
    assert isinstance(result, Routable), result
    return result


def test_attentive_documents_eleven_distinct_event_types() -> None:
    assert len(EVENT_TYPES) == 11
    assert len(set(EVENT_TYPES)) == 11


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_example_webhook_parses_into_its_event(event_type: str) -> None:
    """Given the example Attentive sends for a type, parse() reads type, company and time."""
    body = example_body(event_type, timestamp_ms=TIMESTAMP_MS)

    event = _event(body)

    assert event.type == event_type
    assert event.company_id == DEFAULT_COMPANY_ID
    assert event.timestamp_ms == TIMESTAMP_MS
    assert event.routing_key == f"{event_type}.{DEFAULT_COMPANY_ID}"
    assert event.message_id == _sha256(body)
    assert event.known


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_the_example_of_another_company_routes_to_that_company(event_type: str) -> None:
    body = example_body(event_type, "acme-42", timestamp_ms=TIMESTAMP_MS)

    event = _event(body)

    assert event.company_id == "acme-42"
    assert event.routing_key == f"{event_type}.acme-42"


def test_message_id_is_the_same_for_a_retry_and_differs_for_another_body() -> None:
    """A retried delivery (same bytes) keeps its id; any other body gets another one."""
    body = _webhook()
    retry = bytes(body)
    other = _webhook(timestamp=TIMESTAMP_MS + 1)

    assert _event(body).message_id == _event(retry).message_id == _sha256(body)
    assert _event(other).message_id != _event(body).message_id


def test_a_dot_in_the_company_id_becomes_an_underscore_in_the_routing_key() -> None:
    """The company must stay the last word of the routing key, so its dots are replaced."""
    # Given a company id with dots
    body = _webhook(company={"company_id": "acme.co.uk"})

    # When it is parsed
    event = _event(body)

    # Then the routing key has the company as one word; the event keeps the real id
    assert event.routing_key == "sms.sent.acme_co_uk"
    assert event.company_id == "acme.co.uk"


def test_an_unknown_but_well_formed_type_is_still_routed() -> None:
    """A type Attentive has not documented (yet) is routed, just marked unknown."""
    body = _webhook(type="sms.delivered_receipt")

    event = _event(body)

    assert event.type == "sms.delivered_receipt"
    assert event.routing_key == f"sms.delivered_receipt.{DEFAULT_COMPANY_ID}"
    assert event.known is False
    assert event.message_id == _sha256(body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"type=sms.sent", "body is not valid JSON", id="not-json"),
        pytest.param(b"", "body is not valid JSON", id="empty"),
        pytest.param(
            b'{"type": "sms.sent", "company": {"company_id": "\xff\xfe"}}',
            "body is not valid JSON",
            id="not-utf8",
        ),
        pytest.param(b'[{"type": "sms.sent"}]', "body is not a JSON object", id="json-array"),
        pytest.param(b'"sms.sent"', "body is not a JSON object", id="json-string"),
        pytest.param(_webhook(type=_DROP), "no 'type'", id="missing-type"),
        pytest.param(_webhook(type=None), "no 'type'", id="null-type"),
        pytest.param(
            _webhook(type="SMS.Sent"),
            "'type' is not dot-separated lowercase words",
            id="uppercase-type",
        ),
        pytest.param(
            _webhook(type="sms"),
            "'type' is not dot-separated lowercase words",
            id="single-word-type",
        ),
        pytest.param(
            _webhook(type="sms..sent"),
            "'type' is not dot-separated lowercase words",
            id="empty-word-type",
        ),
        pytest.param(
            _webhook(type="sms.sent."),
            "'type' is not dot-separated lowercase words",
            id="trailing-dot-type",
        ),
        pytest.param(
            _webhook(type="sms.sent#"),
            "'type' is not dot-separated lowercase words",
            id="wildcard-in-type",
        ),
        pytest.param(
            _webhook(type=42), "'type' is not dot-separated lowercase words", id="number-type"
        ),
        pytest.param(
            _webhook(type=["sms", "sent"]),
            "'type' is not dot-separated lowercase words",
            id="list-type",
        ),
        pytest.param(_webhook(company=_DROP), "no 'company.company_id'", id="missing-company"),
        pytest.param(
            _webhook(company="MDc6Q29tcGFueTU"),
            "no 'company.company_id'",
            id="company-is-a-string",
        ),
        pytest.param(
            _webhook(company=[{"company_id": "MDc6Q29tcGFueTU"}]),
            "no 'company.company_id'",
            id="company-is-a-list",
        ),
        pytest.param(
            _webhook(company={"display_name": "Hudson & Ivy"}),
            "no 'company.company_id'",
            id="company-without-id",
        ),
        pytest.param(
            _webhook(company={"company_id": ""}), "no 'company.company_id'", id="empty-company-id"
        ),
        pytest.param(
            _webhook(company={"company_id": 12345}),
            "no 'company.company_id'",
            id="number-company-id",
        ),
        pytest.param(
            _webhook(company={"company_id": None}), "no 'company.company_id'", id="null-company-id"
        ),
        pytest.param(
            _webhook(company={"company_id": "x" * 247}),
            "type and company id are too long for a routing key",
            id="routing-key-256-bytes",
        ),
        pytest.param(
            _webhook(company={"company_id": "é" * 124}),
            "type and company id are too long for a routing key",
            id="routing-key-257-utf8-bytes-in-133-chars",
        ),
    ],
)
def test_an_unusable_body_says_why(body: bytes, reason: str) -> None:
    """An authentic body that cannot be routed is Unusable, with the reason and its message id."""
    assert parse(body) == Unusable(reason, _sha256(body))


@pytest.mark.parametrize(
    ("company_id", "key_bytes"),
    [
        pytest.param("x" * 246, 255, id="ascii"),
        pytest.param("é" * 123, 255, id="two-byte-utf8"),
    ],
)
def test_a_routing_key_of_exactly_255_bytes_is_still_routed(
    company_id: str, key_bytes: int
) -> None:
    """255 bytes is the longest AMQP routing key, so it is the longest the router accepts."""
    event = _event(_webhook(company={"company_id": company_id}))

    assert len(event.routing_key.encode("utf-8")) == key_bytes


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        pytest.param(TIMESTAMP_MS, TIMESTAMP_MS, id="now"),
        pytest.param(0, 0, id="epoch"),
        pytest.param(LATEST_TIMESTAMP_MS, LATEST_TIMESTAMP_MS, id="year-9999"),
        pytest.param(_DROP, None, id="missing"),
        pytest.param(None, None, id="null"),
        pytest.param(-1, None, id="negative"),
        pytest.param(True, None, id="bool"),
        pytest.param(float(TIMESTAMP_MS), None, id="float-with-integral-value"),
        pytest.param(TIMESTAMP_MS + 0.5, None, id="fractional-float"),
        pytest.param(str(TIMESTAMP_MS), None, id="string"),
        pytest.param(LATEST_TIMESTAMP_MS + 1, None, id="after-year-9999"),
        pytest.param(2**63 - 1, None, id="int64-max"),
    ],
)
def test_only_a_plausible_integer_timestamp_is_kept(
    timestamp: object, expected: int | None
) -> None:
    """A timestamp that is not Unix milliseconds is dropped, but the event is still routed."""
    event = _event(_webhook(timestamp=timestamp))

    assert event.timestamp_ms == expected
    assert event.routing_key == f"sms.sent.{DEFAULT_COMPANY_ID}"


@pytest.mark.parametrize(
    "raw_timestamp",
    [b"18446744073709551616", b"1e300", b"-9223372036854775809"],
    ids=["beyond-uint64", "huge-exponent", "beyond-int64-min"],
)
def test_an_absurd_timestamp_does_not_make_the_body_unusable(raw_timestamp: bytes) -> None:
    """Numbers no JSON library keeps as integers only lose the timestamp, not the event."""
    body = (
        b'{"type": "sms.sent", "company": {"company_id": "acme"}, "timestamp": '
        + raw_timestamp
        + b"}"
    )

    event = _event(body)

    assert event.timestamp_ms is None
    assert event.routing_key == "sms.sent.acme"
