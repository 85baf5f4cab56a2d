"""The ordering keys of an event: whose state it changes (the subject key) and when it
happened (the event time), as the ingress puts them in headers, so that a consumer can keep
the newest state per subject and run one handler per subject at a time without reading
contact details. Pure: no I/O.

**The subject** is the company, the channel the event is about, the subscriber's identity on
that channel, and for an attribute the attribute's name:

* ``sms.*``: channel ``sms``, identity the first present of phone, email, ``external_id``;
* ``email.*``: channel ``email``, identity email, else phone, else ``external_id``;
* ``custom_attribute.*``: channel ``attribute``, identity ``external_id``, else phone, else
  email; and the attribute's name;
* any other type: no subject key (the contract does not say whose state it is).

A subscription is held by an address (an SMS opt-out is the phone's), so a channel's own
address comes first; an attribute is held by the subscriber whatever their addresses, and
``external_id`` is Attentive's id of the subscriber (the attribute forwarder sends it as the
subscriber), so it comes first there. Every event of a channel (subscriptions and messages
alike) has its subscriber's key: which of them a consumer orders against each other is the
consumer's choice. A phone is normalised to E.164 (``+`` and digits: spaces, dashes, dots and
brackets dropped; a number sent without ``+`` is read as already holding its country code), an
email is trimmed and lower-cased, an ``external_id`` (a number or a string) is taken as text.
The kind of identity is part of the subject, so a phone never meets an ``external_id`` of the
same digits.

**An attribute event names one attribute** (``user_property.name``, as Attentive documents
it): its key is per attribute, so that newest-wins keeps each attribute's newest value and a
newer event about another attribute never makes this one stale. An event that names none, or
several (a list), has no subject key: one key over several names would be a subject of its
own, so an older event setting ``a`` and ``b`` would not be stale behind a newer one setting
``a`` alone; and a key per subscriber would make an older ``a`` stale behind a newer ``b`` and
lose it. Such an event is for its consumer to handle unordered.

**The key** is a keyed hash of the subject: BLAKE2b with a 16-byte digest (32 lowercase hex
characters), keyed by a secret the consumers never see. A plain hash of a phone number can be
reversed by hashing every phone number; without the secret, the key cannot: it says only that
two events are about the same subject. Changing the secret changes every key. (Keyed BLAKE2b
is a MAC by design, with no HMAC nesting; CPython has it in its own C, so a key costs the
ingress a third of what HMAC-SHA256 through OpenSSL does, per event.)

**The event time** is the payload's ``timestamp``: Unix milliseconds, as Attentive documents
it (:attr:`~router.contract.events.Routable.timestamp_ms`, read by the parse); absent when the
payload has none or not a whole number in range.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal

import orjson

from router.contract.events import EVENT_TYPES
from router.secret import Secret

Channel = Literal["sms", "email", "attribute"]
#: Bytes of the keyed hash a key is: 128 bits, no collision in any plausible number of
#: subjects; a key is their 32 lowercase hex characters.
SUBJECT_KEY_BYTES: Final = 16
#: What the secret is derived with from the first signing key when none is configured.
DERIVATION_LABEL: Final = b"attentive-router subject key v1"

#: The channel of each first word of an event type that has one.
_CHANNELS: Final[Mapping[str, Channel]] = {
    "sms": "sms",
    "email": "email",
    "custom_attribute": "attribute",
}
#: Written between the digits of a phone number, dropped when it is normalised.
_PHONE_FORMATTING = str.maketrans("", "", " -.()\t")
#: E.164 allows 15 digits.
_MAX_PHONE_DIGITS = 15
#: A phone number already in E.164.
_E164 = re.compile(rf"\+[0-9]{{1,{_MAX_PHONE_DIGITS}}}").fullmatch


class SubjectKeys:
    """The subject keys under one secret: keyed BLAKE2b, its keyed state made once and
    copied per event."""

    __slots__ = ("_keyed",)

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("a subject key needs a secret")
        # (BLAKE2b takes a key of up to 64 bytes: a secret of any length is hashed to 32)
        key = hashlib.blake2b(secret, digest_size=32).digest()
        self._keyed = hashlib.blake2b(key=key, digest_size=SUBJECT_KEY_BYTES)

    def key(self, event_type: str, company_id: str, payload: Mapping[str, Any]) -> str | None:
        """The subject key of an event of ``event_type`` for ``company_id`` whose parsed body
        is ``payload``; None when the payload lacks a part of its subject."""
        subject = subject_of(event_type, company_id, payload)
        if subject is None:
            return None
        keyed = self._keyed.copy()
        keyed.update(orjson.dumps(subject))
        return keyed.hexdigest()

    def __repr__(self) -> str:
        return "SubjectKeys(***)"


def subject_key(
    secret: bytes, event_type: str, company_id: str, payload: Mapping[str, Any]
) -> str | None:
    """The subject key of an event under ``secret`` (:meth:`SubjectKeys.key`, for one event)."""
    return SubjectKeys(secret).key(event_type, company_id, payload)


def channel_of(event_type: str) -> Channel | None:
    """The channel whose state an event of ``event_type`` is about, if the contract says."""
    return _CHANNELS.get(event_type.partition(".")[0])


def subject_of(
    event_type: str, company_id: str, payload: Mapping[str, Any]
) -> tuple[str, ...] | None:
    """What the subject key is the keyed hash of: company, channel, kind of identity, identity
    (and the attribute's name); None when a part is missing. Contact details in clear: never
    to be published or logged."""
    plan = _PLANS.get(event_type) or _plan(channel_of(event_type))
    if plan is None:
        return None
    channel, identities = plan
    subscriber = payload.get("subscriber")
    if type(subscriber) is not dict:
        return None
    for kind, read in identities:
        identity = read(subscriber.get(kind))
        if identity is not None:
            break
    else:
        return None
    if channel != "attribute":
        return (company_id, channel, kind, identity)
    name = _attribute_name(payload.get("user_property"))
    return None if name is None else (company_id, channel, kind, identity, name)


def subject_secret(configured: Secret, signing_keys: Sequence[Secret]) -> bytes:
    """The secret subject keys are made with: ``configured`` when set; else derived from the
    first signing key (HMAC-SHA256 of :data:`DERIVATION_LABEL`), so that an ingress works
    without one more secret to provision.

    Derived, it changes when the first signing key does, and so does every subject key:
    set ``ROUTER_SUBJECT_KEY_SECRET`` to keep keys through signing-key rotations. (No subject
    key at all when unset was the alternative: but then a consumer's newest-wins guard, asked
    for, would silently order nothing.) ValueError when neither is there."""
    if configured:
        return configured.reveal().encode("utf-8")
    if not signing_keys:
        raise ValueError("no subject key secret and no signing key to derive one from")
    first = signing_keys[0].reveal().encode("utf-8")
    return hmac.digest(first, DERIVATION_LABEL, "sha256")


def normal_phone(value: object) -> str | None:
    """``value`` as E.164 (``+`` then 1 to 15 digits), or None when it is not a phone number."""
    if type(value) is str:
        if _E164(value):  # (as Attentive sends it, the common case: kept as it is)
            return value
        digits = value.translate(_PHONE_FORMATTING).removeprefix("+")
    elif type(value) is int:
        digits = str(value) if value > 0 else ""
    else:
        return None
    if not (digits.isascii() and digits.isdigit() and len(digits) <= _MAX_PHONE_DIGITS):
        return None
    return f"+{digits}"


def normal_email(value: object) -> str | None:
    """``value`` trimmed and lower-cased, or None when it is no text or blank."""
    email = value.strip().lower() if isinstance(value, str) else ""
    return email or None


def _external_id(value: object) -> str | None:
    if type(value) is int:
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


_Read = Callable[[object], str | None]
_PHONE: tuple[str, _Read] = ("phone", normal_phone)
_EMAIL: tuple[str, _Read] = ("email", normal_email)
_EXTERNAL_ID: tuple[str, _Read] = ("external_id", _external_id)
#: The identities tried in turn, per channel, and how each is read.
_IDENTITIES: Final[Mapping[Channel, tuple[tuple[str, _Read], ...]]] = {
    "sms": (_PHONE, _EMAIL, _EXTERNAL_ID),
    "email": (_EMAIL, _PHONE, _EXTERNAL_ID),
    "attribute": (_EXTERNAL_ID, _PHONE, _EMAIL),
}
_Plan = tuple[Channel, tuple[tuple[str, _Read], ...]]


def _plan(channel: Channel | None) -> _Plan | None:
    return None if channel is None else (channel, _IDENTITIES[channel])


#: The plan of each documented type, looked up once per event instead of worked out.
_PLANS: Final[Mapping[str, _Plan | None]] = {t: _plan(channel_of(t)) for t in EVENT_TYPES}


def _attribute_name(user_property: object) -> str | None:
    """The one attribute an event names (names are case-sensitive, as in Attentive)."""
    if not isinstance(user_property, dict):
        return None
    name = user_property.get("name")
    return name if isinstance(name, str) and name else None


__all__ = [
    "DERIVATION_LABEL",
    "SUBJECT_KEY_BYTES",
    "Channel",
    "SubjectKeys",
    "channel_of",
    "normal_email",
    "normal_phone",
    "subject_key",
    "subject_of",
    "subject_secret",
]
