"""Contact details are masked wherever ops look at events; dates and ids stay readable."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from router.contract.masking import mask_email, mask_payload, mask_phone, mask_text
from router.deadletters import Entry


def test_phones_keep_their_prefix_and_last_four_digits() -> None:
    assert mask_phone("+15555555555") == "+1******5555"
    assert mask_phone("5555555555") == "5*****5555"
    assert mask_phone("12345") == "*****"


def test_emails_keep_their_first_letter_and_domain() -> None:
    assert mask_email("test@gmail.com") == "t***@gmail.com"
    assert mask_email("nonsense") == "********"


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        ("crm refused +1 (555) 555-5555", "555-5555", "crm refused +1"),
        ("no such user jane.doe@example.com", "jane.doe@", "@example.com"),
        ("failed at 2026-11-26 on item 1234567", "", "2026-11-26"),
    ],
)
def test_free_text_is_masked_but_dates_stay(text: str, hidden: str, kept: str) -> None:
    masked = mask_text(text)
    if hidden:
        assert hidden not in masked
    assert kept in masked


def test_payloads_are_masked_at_any_depth_and_numbers_untouched() -> None:
    payload = {
        "subscriber": {"phone": "+15555555555", "email": "a@b.co", "external_id": 16467358},
        "others": [{"Email": "c@d.io"}],
    }
    assert mask_payload(payload) == {
        "subscriber": {"phone": "+1******5555", "email": "a***@b.co", "external_id": 16467358},
        "others": [{"Email": "c***@d.io"}],
    }


def test_a_dead_letter_shows_its_error_masked_unless_revealed() -> None:
    error = "ValueError: subscriber +15555555555 / jane@example.com unknown"
    entry = Entry(
        position=1,
        message_id="m",
        event_type="sms.sent",
        company_id="c",
        routing_key="sms.sent.c",
        attempts=5,
        error=error,
        reason="exhausted",
        parked_at=datetime(2026, 11, 26, tzinfo=UTC),
        replays=0,
        headers={"x-attentive-error": error, "x-attentive-traceback": f"Traceback...\n{error}"},
        body=b'{"subscriber": {"phone": "+15555555555"}}',
    )
    shown = repr(entry.detail())
    assert "+15555555555" not in shown and "jane@example.com" not in shown
    assert "+15555555555" not in repr(entry.summary())
    revealed = entry.detail(reveal=True)
    assert revealed["headers"]["x-attentive-error"] == error
    assert revealed["payload"] == {"subscriber": {"phone": "+15555555555"}}
