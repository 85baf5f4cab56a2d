"""Masking subscribers' phone numbers and email addresses for display. Pure."""

from __future__ import annotations

import re
from typing import Any

_EMAIL_RE = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_PHONE_RE = re.compile(r"\+?\d[\d\s().-]{6,}\d")
_CONTACT_KEYS = {"phone": "phone", "phone_number": "phone", "email": "email"}


def mask_phone(phone: str) -> str:
    """``+15555555555`` → ``+1******5555``: the country prefix and the last four digits."""
    digits = phone.strip()
    if len(digits) <= 6:
        return "*" * len(digits)
    head = 2 if digits.startswith("+") else 1
    return digits[:head] + "*" * (len(digits) - head - 4) + digits[-4:]


def mask_email(email: str) -> str:
    """``test@gmail.com`` → ``t***@gmail.com``."""
    local, at, domain = email.partition("@")
    if not at:
        return "*" * len(email)
    return (local[:1] or "*") + "***@" + domain


def mask_text(text: str) -> str:
    """Mask whatever looks like an email address or a phone number in free text."""
    text = _EMAIL_RE.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    return _PHONE_RE.sub(_mask_if_phone, text)


def _mask_if_phone(match: re.Match[str]) -> str:
    found = match.group(0)
    # ten digits at least (E.164 numbers have 10-15): dates such as 2026-11-26 stay readable
    return mask_phone(found) if sum(c.isdigit() for c in found) >= 10 else found


def mask_payload(value: Any) -> Any:
    """A copy of a JSON value with every ``phone``/``email`` field masked, at any depth."""
    if isinstance(value, dict):
        masked: dict[str, Any] = {}
        for key, item in value.items():
            kind = _CONTACT_KEYS.get(key.lower()) if isinstance(key, str) else None
            if kind == "phone" and isinstance(item, str):
                masked[key] = mask_phone(item)
            elif kind == "email" and isinstance(item, str):
                masked[key] = mask_email(item)
            else:
                masked[key] = mask_payload(item)
        return masked
    if isinstance(value, list):
        return [mask_payload(item) for item in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


__all__ = ["mask_email", "mask_payload", "mask_phone", "mask_text"]
