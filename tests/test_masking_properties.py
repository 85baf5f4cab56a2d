"""Whatever shape a payload or an error takes, what masking lets through of a phone number is
its first digit and its last four, and of an email address the first character of its local
part: generated payloads and error texts, checked for every generated contact detail."""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.runtime.middleware import error_summary, traceback_summary
from router.contract.masking import EMAIL_KEYS, PHONE_KEYS, mask_payload, mask_text

DOMAINS = (
    "example.com",
    "mail.example.co.uk",
    "exämple.de",
    "xn--exmple-cua.de",
    "münchen.example",
    "例え.jp",
    "пример.рф",
)
#: Keys of no contact detail, words of the text around the details: no digits in either, so
#: every digit in a masked output comes from a generated phone number or address.
PLAIN_KEYS = ("subscriber", "items", "data", "note", "message", "attributes")
WORDS = ("crm refused", "no subscriber", "conflict with", "cannot sync", "retry later for")
JOINS = (" for ", " and ", "; ", ", ", " / ", " or ")
ENDS = ("", ".", " (gave up)")


def spellings(key: str) -> list[str]:
    """The ways payloads write ``key`` (``phone_number``): as is, camelCase, PascalCase,
    kebab-case, UPPER_CASE, with spaces, with a ``$`` (Klaviyo's own properties)."""
    words = key.split("_")
    camel = words[0] + "".join(w.title() for w in words[1:])
    return [
        key,
        camel,
        camel[0].upper() + camel[1:],
        "-".join(words),
        key.upper(),
        " ".join(w.title() for w in words),
        "$" + key,
    ]


def prefixed(keys: tuple[str, ...], ends: tuple[str, ...]) -> list[str]:
    """Other fields' names ending in a contact key (``billing_phone``, ``guardianEmail``)."""
    return [f"{owner}_{key}" for owner in ("billing", "guardian") for key in keys if key in ends]


#: The names Attentive and common CRMs give contact fields, whatever the module lists.
CRM_PHONE_KEYS = ("phone", "phone_number", "mobile", "mobile_phone", "cell", "msisdn", "sms")
CRM_EMAIL_KEYS = ("email", "email_address")
PHONE_NAMES = sorted(
    {*CRM_PHONE_KEYS, *PHONE_KEYS, *prefixed(CRM_PHONE_KEYS, ("phone", "phone_number"))}
)
EMAIL_NAMES = sorted(
    {*CRM_EMAIL_KEYS, *EMAIL_KEYS, *prefixed(CRM_EMAIL_KEYS, ("email", "email_address"))}
)
#: Every fixed string a payload or a text is made of: a local part found in one of them would
#: be found whether it was masked or not.
VOCABULARY = "\n".join(
    [
        *DOMAINS,
        *PLAIN_KEYS,
        *WORDS,
        *JOINS,
        *ENDS,
        *(s for name in [*PHONE_NAMES, *EMAIL_NAMES] for s in spellings(name)),
        "ValueError: ",
    ]
)


@st.composite
def phone_numbers(draw: st.DrawFn, min_digits: int = 10) -> str:
    """E.164 (``+15555551234``, ``+44 7700 900123``) or national (``(555) 123-4567``,
    ``07700.900.123``): up to 15 digits, grouped with spaces, dashes, dots or not at all."""
    international = draw(st.booleans())
    digits = draw(st.text("0123456789", min_size=min_digits, max_size=15))
    if international:
        digits = draw(st.sampled_from("123456789")) + digits[1:]  # a country code has no 0
    groups = [digits[-4:]]
    rest = digits[:-4]
    while len(rest) > 3:
        groups.insert(0, rest[-3:])
        rest = rest[:-3]
    groups.insert(0, rest)
    sep = draw(st.sampled_from(["", " ", "-", ".", "\u00a0"]))
    if international:
        return "+" + sep.join(groups)
    if draw(st.booleans()):
        return f"({groups[0]}) " + sep.join(groups[1:])
    return sep.join(groups)


#: ASCII as often as any script's letters and digits.
_LOCAL_CHARS = st.sampled_from(string.ascii_letters + string.digits + "._+-") | st.characters(
    categories=("L", "Nd")
)
#: A local part holds a letter that none of the fixed strings has, so it is found in a masked
#: output only if masking let it through.
_MARKS = st.sampled_from(sorted(set(string.ascii_letters) - set(VOCABULARY))) | st.characters(
    categories=["L"], exclude_characters=set(VOCABULARY)
)
LOCAL_PARTS = st.builds(
    lambda head, mark, tail: head + mark + tail,
    st.text(_LOCAL_CHARS, min_size=1, max_size=8),  # a first character, which masking keeps
    _MARKS,
    st.text(_LOCAL_CHARS, max_size=8),
)
EMAILS = st.builds(lambda local, domain: f"{local}@{domain}", LOCAL_PARTS, st.sampled_from(DOMAINS))


@dataclass
class Quoted:
    """The contact details a generated payload or text holds, each time it holds one."""

    phones: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    #: Phone numbers of fewer than 10 digits, under contact keys: nothing of them is left.
    short_phones: list[str] = field(default_factory=list)

    def add_phone(self, phone: str) -> None:
        short = sum(c.isdigit() for c in phone) < 10
        (self.short_phones if short else self.phones).append(phone)

    def most_digits_left(self) -> int:
        """A phone keeps its first digit and last four; an address its first character."""
        return 5 * len(self.phones) + len(self.emails)


def draw_text(draw: st.DrawFn, quoted: Quoted) -> str:
    """An error text quoting one to four contact details."""
    parts = [draw(st.sampled_from(WORDS)) + " "]
    for i in range(draw(st.integers(1, 4))):
        if i:
            parts.append(draw(st.sampled_from(JOINS)))
        if draw(st.booleans()):
            quoted.add_phone(draw(phone_numbers()))
            parts.append(quoted.phones[-1])
        else:
            quoted.emails.append(draw(EMAILS))
            parts.append(quoted.emails[-1])
    return "".join(parts) + draw(st.sampled_from(ENDS))


def draw_key(draw: st.DrawFn, names: list[str]) -> str:
    """A contact field's name, in one of the ways payloads write it."""
    return draw(st.sampled_from(spellings(draw(st.sampled_from(names)))))


def draw_contact(draw: st.DrawFn, quoted: Quoted) -> dict[str, Any]:
    """A contact key and its value: a phone (text or number) or an address, or a list."""
    if draw(st.booleans()):
        key = draw_key(draw, PHONE_NAMES)
        values: list[Any] = []
        for _ in range(draw(st.integers(1, 3))):
            phone = draw(phone_numbers(min_digits=7))  # however short: under a contact key
            if draw(st.booleans()):
                number = int(re.sub(r"\D", "", phone))
                quoted.add_phone(str(number))
                values.append(number)
            else:
                quoted.add_phone(phone)
                values.append(phone)
    else:
        key = draw_key(draw, EMAIL_NAMES)
        values = draw(st.lists(EMAILS, min_size=1, max_size=3))
        quoted.emails += values
    return {key: values if len(values) > 1 or draw(st.booleans()) else values[0]}


def draw_value(draw: st.DrawFn, quoted: Quoted, depth: int) -> Any:
    """A JSON value holding contact details at any depth: under contact keys, in lists, in
    texts under other keys."""
    shapes = ["contact", "text", "word"] + (["list", "object"] if depth < 3 else [])
    match draw(st.sampled_from(shapes)):
        case "contact":
            return draw_contact(draw, quoted)
        case "text":
            return draw_text(draw, quoted)
        case "word":
            return draw(st.sampled_from(WORDS))
        case "list":
            return [draw_value(draw, quoted, depth + 1) for _ in range(draw(st.integers(1, 3)))]
        case _:
            keys = draw(st.lists(st.sampled_from(PLAIN_KEYS), min_size=1, max_size=3, unique=True))
            return {key: draw_value(draw, quoted, depth + 1) for key in keys}


@st.composite
def payloads(draw: st.DrawFn) -> tuple[Any, Quoted]:
    quoted = Quoted()
    return {"subscriber": draw_value(draw, quoted, 0)}, quoted


@st.composite
def error_texts(draw: st.DrawFn) -> tuple[str, Quoted]:
    quoted = Quoted()
    return draw_text(draw, quoted), quoted


def strings(value: Any) -> Iterator[str]:
    """Every string of a JSON value, keys too, and every number written out."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)


def assert_nothing_left(masked: list[str], quoted: Quoted, *, count_digits: bool = True) -> None:
    for phone in quoted.phones:
        digits = re.sub(r"\D", "", phone)
        # the digits between the first and the last four, however they are grouped
        hidden = re.compile(r"[\s().-]*".join(digits[1:-4]))
        assert not any(hidden.search(text) for text in masked), (phone, masked)
    for email in quoted.emails:
        local = email.rpartition("@")[0]
        assert not any(local in text for text in masked), (email, masked)
    if count_digits:
        left = sum(c in "0123456789" for text in masked for c in text)
        assert left <= quoted.most_digits_left(), (quoted, masked)


FAST = settings(max_examples=100, deadline=None)


@FAST
@given(payloads())
def test_a_masked_payload_holds_no_contact_detail_it_was_given(
    generated: tuple[Any, Quoted],
) -> None:
    payload, quoted = generated
    masked = mask_payload(payload)
    assert_nothing_left(list(strings(masked)), quoted)
    orjson.dumps(masked)  # still JSON


@FAST
@given(error_texts())
def test_a_masked_error_text_and_a_workers_summaries_of_it_hold_no_contact_detail(
    generated: tuple[str, Quoted],
) -> None:
    text, quoted = generated
    assert_nothing_left([mask_text(text)], quoted)
    try:
        raise ValueError(text)
    except ValueError as error:
        summary, traceback = error_summary(error), traceback_summary(error)
    assert summary.startswith("ValueError: ") and traceback.endswith(f"\n{summary}\n")
    assert_nothing_left([summary], quoted)
    # the rest of a traceback is files, lines and code, with digits and words of its own
    assert_nothing_left([traceback], Quoted(phones=quoted.phones), count_digits=False)
