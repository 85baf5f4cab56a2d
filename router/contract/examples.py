"""Realistic example webhooks for every event type, as Attentive's "Send test event" makes.

Used by ``attentive-router send-test``, by the tests and by the benchmarks.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from router.contract.events import EVENT_TYPES

DEFAULT_COMPANY_ID = "MDc6Q29tcGFueTU"
_DISPLAY_NAME = "Hudson & Ivy"
_SUBSCRIBER: dict[str, Any] = {
    "external_id": 16467358,
    "phone": "+15555555555",
    "email": "test@gmail.com",
}
_SMS_MESSAGE: dict[str, Any] = {
    "id": "MDc6TWVzc2FnZTEyMzQ1",
    "name": "Black Friday early access",
    "type": "CAMPAIGN",
    "channel": "TEXT",
    "text": "Hudson & Ivy: early access starts now, 30% off everything: https://attn.tv/x1y2",
}
_EMAIL_MESSAGE: dict[str, Any] = {
    "id": "MDc6TWVzc2FnZTY3ODkw",
    "name": "Black Friday early access",
    "type": "CAMPAIGN",
    "channel": "EMAIL",
    "subject": "Early access: 30% off everything",
}
_LINK: dict[str, Any] = {"url": "https://hudsonandivy.example/sale?utm_source=attentive"}
_CREATIVE: dict[str, Any] = {"name": "Text to Join", "type": "TEXT_TO_JOIN", "subtype": "CODE"}
_MARKETING: dict[str, Any] = {"type": "MARKETING"}

#: The objects each type carries besides type, timestamp, company and subscriber.
_EXTRAS: dict[str, dict[str, Any]] = {
    "sms.subscribed": {"creative": _CREATIVE, "subscription": _MARKETING},
    "sms.unsubscribed": {"subscription": _MARKETING},
    "sms.sent": {"message": _SMS_MESSAGE},
    "sms.message_link_click": {"message": _SMS_MESSAGE, "link": _LINK},
    "sms.inbound_message": {"message": {"type": "INBOUND", "channel": "TEXT", "text": "STOP"}},
    "email.subscribed": {
        "creative": {"name": "Footer sign-up", "type": "EMAIL_SIGNUP", "subtype": "FORM"},
        "subscription": _MARKETING,
    },
    "email.unsubscribed": {"subscription": _MARKETING},
    "email.sent": {"message": _EMAIL_MESSAGE},
    "email.opened": {"message": _EMAIL_MESSAGE},
    "email.message_link_click": {"message": _EMAIL_MESSAGE, "link": _LINK},
    "custom_attribute.set": {"user_property": {"name": "favorite_color", "value": "green"}},
}
assert set(_EXTRAS) == set(EVENT_TYPES)


def example_payload(
    event_type: str,
    company_id: str = DEFAULT_COMPANY_ID,
    *,
    timestamp_ms: int | None = None,
    external_id: int | None = None,
) -> dict[str, Any]:
    """An example webhook body of ``event_type`` (one of
    :data:`~router.contract.events.EVENT_TYPES`)."""
    subscriber = dict(_SUBSCRIBER)
    if external_id is not None:
        subscriber["external_id"] = external_id
    return {
        "type": event_type,
        "timestamp": int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
        "company": {"display_name": _DISPLAY_NAME, "company_id": company_id},
        "subscriber": subscriber,
        **_EXTRAS[event_type],
    }


def example_body(event_type: str, company_id: str = DEFAULT_COMPANY_ID, **kwargs: Any) -> bytes:
    """:func:`example_payload` serialized as Attentive sends it."""
    return orjson.dumps(example_payload(event_type, company_id, **kwargs))


__all__ = ["DEFAULT_COMPANY_ID", "example_body", "example_payload"]
