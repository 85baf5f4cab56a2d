"""Contact details are masked wherever ops look at events; dates and ids stay readable."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from router.contract.masking import (
    contact_kind,
    mask_email,
    mask_excerpt,
    mask_payload,
    mask_phone,
    mask_text,
)
from router.parked import views
from router.parked.model import Properties, parked_event


def test_phones_keep_their_prefix_and_last_four_digits() -> None:
    assert mask_phone("+15555555555") == "+1******5555"
    assert mask_phone("5555555555") == "5*****5555"
    assert mask_phone("+1 (555) 123-4567") == "+1***********4567"
    assert mask_phone("tel:+15555555555") == "****+1******5555"


def test_a_phone_of_fewer_than_ten_digits_is_hidden_whole() -> None:
    assert mask_phone("555-0123") == "********"
    assert mask_phone("12345") == "*****"


def test_emails_keep_their_first_letter_and_domain() -> None:
    assert mask_email("test@gmail.com") == "t***@gmail.com"
    assert mask_email("nonsense") == "********"


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        ("crm refused +1 (555) 555-5555", "555-5555", "crm refused +1"),
        ("no such user jane.doe@example.com", "jane.doe@", "@example.com"),
        ("no such user Jöhn@exämple.de.", "Jöhn", "J***@exämple.de."),
        ("bounced: o'brien@xn--exmple-cua.de", "brien", "@xn--exmple-cua.de"),
        ("用户 小明@例え.jp 不存在", "小明", "***@例え.jp"),
        ("crm refused 555.123.4567 twice", "555.123", "crm refused 5"),
        ("crm refused +44 7700 900123", "7700 900", "+4"),
        ("failed at 2026-11-26 on item 1234567", "", "2026-11-26"),
    ],
)
def test_free_text_is_masked_but_dates_stay(text: str, hidden: str, kept: str) -> None:
    masked = mask_text(text)
    if hidden:
        assert hidden not in masked
    assert kept in masked


def test_a_cut_excerpt_never_shows_a_part_of_what_it_cut_unmasked() -> None:
    text = "ValueError: subscriber +15555555555 / jane@example.com unknown"
    cut_in_the_phone = text.index("+1") + 5  # "+1555": too short to be known as a phone
    cut_in_the_email = text.index("@") + 4  # "jane@exa": no domain, so no address

    assert mask_excerpt(text, cut_in_the_phone) == "ValueError: subscriber +1***"
    assert mask_excerpt(text, cut_in_the_email) == "ValueError: subscriber +1******5555 / j***@exa"
    assert mask_excerpt(text, 12, tail=True) == ".com unknown"
    assert "jane" not in mask_excerpt(text, len(text) - 16, tail=True)


def test_payloads_are_masked_at_any_depth_and_numbers_untouched() -> None:
    payload = {
        "subscriber": {"phone": "+15555555555", "email": "a@b.co", "external_id": 16467358},
        "others": [{"Email": "c@d.io"}],
    }
    assert mask_payload(payload) == {
        "subscriber": {"phone": "+1******5555", "email": "a***@b.co", "external_id": 16467358},
        "others": [{"Email": "c***@d.io"}],
    }


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("phone", "phone"),
        ("phoneNumber", "phone"),
        ("Phone-Number", "phone"),
        ("$phone_number", "phone"),
        ("MOBILE_PHONE", "phone"),
        ("mobilePhone", "phone"),
        ("cell", "phone"),
        ("msisdn", "phone"),
        ("sms", "phone"),
        ("billing_phone", "phone"),
        ("email", "email"),
        ("emailAddress", "email"),
        ("Email Address", "email"),
        ("e-mail", "email"),
        ("guardianEmail", "email"),
        ("external_id", None),
        ("message", None),
        ("display_name", None),
        ("phone_verified_at", None),
    ],
)
def test_contact_keys_are_known_in_any_case_and_spelling(key: str, kind: str | None) -> None:
    assert contact_kind(key) == kind


def test_whatever_sits_under_a_contact_key_is_masked_whole() -> None:
    payload = {
        "subscriber": {
            "phone": 15555555555,
            "mobile": "555-0123",
            "phoneNumber": "+1 (555) 123-4567",
            "emailAddress": "Jöhn@exämple.de",
            "phones": ["+447700900123", 5555555555],
            "sms": {"number": "+15555555555", "opted_in": True},
            "note": "call 555-0123 after 2026-11-26",
        },
        "contacts": [{"Cell": "0044 7700 900123"}, {"+15555555555": "a phone as a key"}],
    }
    assert mask_payload(payload) == {
        "subscriber": {
            "phone": "1******5555",
            "mobile": "********",
            "phoneNumber": "+1***********4567",
            "emailAddress": "J***@exämple.de",
            "phones": ["+4*******0123", "5*****5555"],
            "sms": {"number": "+1******5555", "opted_in": True},
            "note": "call 555-0123 after 2026-11-26",
        },
        "contacts": [{"Cell": "0***********0123"}, {"+1******5555": "a phone as a key"}],
    }


def test_a_parked_entry_shows_its_error_masked_unless_revealed() -> None:
    error = "ValueError: subscriber +15555555555 / jane@example.com unknown"
    entry = parked_event(
        b'{"subscriber": {"phone": "+15555555555"}}',
        Properties(
            message_id="m",
            headers={"x-attentive-error": error, "x-attentive-traceback": f"Traceback...\n{error}"},
        ),
        place="dlq",
        app="crm",
        routing_key="sms.sent.c",
        seen_at=datetime(2026, 11, 26, tzinfo=UTC),
    )
    shown = repr(views.detail(entry))
    assert "+15555555555" not in shown and "jane@example.com" not in shown
    assert "+15555555555" not in repr(views.summary(entry))
    revealed = views.detail(entry, reveal=True)
    assert revealed["headers"]["x-attentive-error"] == error
    assert revealed["error"] == error and error in revealed["traceback"]
    assert revealed["payload"] == {"subscriber": {"phone": "+15555555555"}}


def test_a_body_that_is_not_json_is_masked_as_text() -> None:
    body = b"call me at +15555555555, not JSON"
    assert views.payload(body) == "call me at +1******5555, not JSON"
    assert views.payload(body, reveal=True) == body.decode()
