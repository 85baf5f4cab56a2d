"""Masking subscribers' phone numbers and email addresses wherever they are shown or logged. Pure.

What survives of a contact detail:

* a phone number of 10 digits or more keeps its first digit with the character before it
  (``+1``, ``(5``) and its last four characters: ``+1 (555) 123-4567`` → ``+1***********4567``;
  a shorter one is hidden whole (``555-0123`` → ``********``);
* an email address keeps the first character of its local part and its domain:
  ``Jöhn@exämple.de`` → ``J***@exämple.de``.

Where it applies:

* free text (:func:`mask_text`, :func:`mask_excerpt`): every email address, ASCII or not,
  with an internationalised domain or its ``xn--`` form, and every phone number of 10 digits
  or more, written with or without ``+``, spaces, dots, dashes or parentheses. Dates
  (``2026-11-26``), times and numbers of fewer than 10 digits stay readable;
* JSON values (:func:`mask_payload`), at any depth and in lists: every string (keys too) as
  free text, and everything under a contact key masked whole as a phone or an email, however
  short, whether a string or a number, or each item of a list under that key:
  ``{"phone": 15555555555}`` → ``{"phone": "1******5555"}``.

The contact keys (:data:`PHONE_KEYS`, :data:`EMAIL_KEYS`) are the names Attentive and common
CRMs and CDPs give these fields. A key is compared by its letters and digits alone, in any
case: ``phone_number``, ``phoneNumber``, ``Phone-Number`` and ``$phone_number`` are one key.
A key ending in ``phone``, ``phone_number``, ``email`` or ``email_address`` counts too
(``billing_phone``, ``guardianEmail``)::

    phone keys: phone, phones, phone_number, phone_numbers, mobile, mobile_phone,
        mobile_number, cell, cell_phone, cell_number, msisdn, sms, sms_number, telephone,
        tel, home_phone, work_phone, other_phone, whatsapp, whatsapp_number, fax
    email keys: email, emails, email_address, email_addresses, e_mail
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Literal

Kind = Literal["phone", "email"]

#: Keys whose value is a phone number, as written in the module's docstring.
PHONE_KEYS = (
    "phone",
    "phones",
    "phone_number",
    "phone_numbers",
    "mobile",
    "mobile_phone",
    "mobile_number",
    "cell",
    "cell_phone",
    "cell_number",
    "msisdn",
    "sms",
    "sms_number",
    "telephone",
    "tel",
    "home_phone",
    "work_phone",
    "other_phone",
    "whatsapp",
    "whatsapp_number",
    "fax",
)
#: Keys whose value is an email address, as written in the module's docstring.
EMAIL_KEYS = ("email", "emails", "email_address", "email_addresses", "e_mail")
#: Any other key ending in one of these (compared as keys are) names a contact detail too.
_SUFFIXES: tuple[tuple[str, Kind], ...] = (
    ("phone", "phone"),
    ("phonenumber", "phone"),
    ("email", "email"),
    ("emailaddress", "email"),
)

# An address's characters: word characters of any script (with combining accents, should the
# text not be in NFC) and the punctuation real addresses use. Linear: a local part is matched
# only from where a run of its characters starts.
_LOCAL = r"[\w\u0300-\u036f.+%'-]"
_LABEL = r"[\w\u0300-\u036f-]"
_EMAIL_RE = re.compile(
    rf"(?<!{_LOCAL})({_LOCAL}){_LOCAL}*@({_LABEL}+(?:\.{_LABEL}+)*\.[^\W\d_]{_LABEL}+)"
)
_PHONE_RE = re.compile(r"\+?\d[\d \t\u00a0().-]{6,}\d")
#: Fewer digits than E.164's shortest numbers are no phone number in free text.
_PHONE_DIGITS = 10


def mask_phone(phone: str) -> str:
    """``+15555555555`` → ``+1******5555``: the first digit with the character before it, and
    the last four characters; a number of fewer than 10 digits is hidden whole."""
    text = phone.strip()
    if sum(c.isdigit() for c in text) < _PHONE_DIGITS:
        return "*" * len(text)
    first = next(i for i, c in enumerate(text) if c.isdigit())
    start = max(first - 1, 0)
    return "*" * start + text[start : first + 1] + "*" * (len(text) - first - 5) + text[-4:]


def mask_email(email: str) -> str:
    """``test@gmail.com`` → ``t***@gmail.com``; something without ``@`` is hidden whole."""
    text = email.strip()
    local, at, domain = text.partition("@")
    if not at:
        return "*" * len(text)
    return (local[:1] or "*") + "***@" + domain


def mask_text(text: str) -> str:
    """Mask whatever looks like an email address or a phone number in free text."""
    text = _EMAIL_RE.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    return _PHONE_RE.sub(_mask_if_phone, text)


def mask_excerpt(text: str, limit: int, *, tail: bool = False) -> str:
    """The first ``limit`` characters of ``text`` masked (the last ones if ``tail``).

    The whole text is masked before it is cut, so a cut never leaves a part of a phone number
    or an address too short to be recognised, unmasked.
    """
    masked = mask_text(text)
    return masked[-limit:] if tail else masked[:limit]


def _mask_if_phone(match: re.Match[str]) -> str:
    found = match.group(0)
    return mask_phone(found) if sum(c.isdigit() for c in found) >= _PHONE_DIGITS else found


def _normalised(key: str) -> str:
    return "".join(c for c in key.casefold() if c.isalnum())


_CONTACT_KEYS: dict[str, Kind] = {
    **{_normalised(key): "phone" for key in PHONE_KEYS},
    **{_normalised(key): "email" for key in EMAIL_KEYS},
}


@lru_cache(maxsize=4096)
def contact_kind(key: str) -> Kind | None:
    """``"phone"`` or ``"email"`` if ``key`` is a contact key (see the module), else None."""
    name = _normalised(key)
    kind = _CONTACT_KEYS.get(name)
    if kind is None:
        kind = next((k for suffix, k in _SUFFIXES if name.endswith(suffix)), None)
    return kind


def mask_payload(value: Any) -> Any:
    """A copy of a JSON value with its contact details masked, at any depth (see the module)."""
    if isinstance(value, dict):
        masked: dict[Any, Any] = {}
        for key, item in value.items():
            kind = contact_kind(key) if isinstance(key, str) else None
            shown = mask_text(key) if isinstance(key, str) else key
            masked[shown] = mask_payload(item) if kind is None else _mask_contact(kind, item)
        return masked
    if isinstance(value, list):
        return [mask_payload(item) for item in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


def _mask_contact(kind: Kind, value: Any) -> Any:
    """``value`` found under a contact key of ``kind``: masked whole, however it is written."""
    if isinstance(value, list):
        return [_mask_contact(kind, item) for item in value]
    if isinstance(value, dict):
        return mask_payload(value)
    if isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool)):
        text = str(value)
        return mask_phone(text) if kind == "phone" else mask_email(text)
    return value


__all__ = [
    "EMAIL_KEYS",
    "PHONE_KEYS",
    "Kind",
    "contact_kind",
    "mask_email",
    "mask_excerpt",
    "mask_payload",
    "mask_phone",
    "mask_text",
]
