"""What a claim is, when two claims conflict, and the binding keys a claim becomes. Pure.

A claim is (application, event pattern, company scope). Patterns come in three forms: an
exact type (``sms.subscribed``), a channel wildcard (``sms.*``: every type of the channel,
including types Attentive has not published yet) and everything (``*``). A company scope is
one company id, or ``None`` for all companies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from router.contract.events import is_event_type
from router.contract.names import routing_key
from router.errors import InvalidClaim

_APP_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_CHANNEL_RE = re.compile(r"[a-z][a-z0-9_]*")
_BAD_COMPANY_RE = re.compile(r"[*#\s\x00-\x1f\x7f]")
MAX_APP_LENGTH = 64
MAX_COMPANY_LENGTH = 128


class PatternKind(StrEnum):
    EXACT = "exact"
    CHANNEL = "channel"
    EVERYTHING = "everything"


@dataclass(frozen=True, slots=True)
class EventPattern:
    """``sms.subscribed``, ``sms.*`` or ``*``."""

    kind: PatternKind
    #: The exact type, the channel, or "" for everything.
    value: str

    @classmethod
    def parse(cls, text: str) -> EventPattern:
        """Read a pattern; raise :class:`InvalidClaim` saying what forms are allowed."""
        if text == "*":
            return cls(PatternKind.EVERYTHING, "")
        if text.endswith(".*") and _CHANNEL_RE.fullmatch(text[:-2]):
            return cls(PatternKind.CHANNEL, text[:-2])
        if is_event_type(text):
            return cls(PatternKind.EXACT, text)
        raise InvalidClaim(
            f"invalid event pattern {text!r}: use an exact type (sms.subscribed), "
            "a channel wildcard (sms.*) or * for everything"
        )

    def __str__(self) -> str:
        match self.kind:
            case PatternKind.EVERYTHING:
                return "*"
            case PatternKind.CHANNEL:
                return f"{self.value}.*"
            case PatternKind.EXACT:
                return self.value

    @property
    def channel(self) -> str | None:
        """The first word of the types this pattern matches (None: any)."""
        if self.kind is PatternKind.EVERYTHING:
            return None
        return self.value.split(".", 1)[0]

    def matches(self, event_type: str) -> bool:
        """Whether an event of ``event_type`` falls under this pattern."""
        match self.kind:
            case PatternKind.EVERYTHING:
                return True
            case PatternKind.CHANNEL:
                return event_type.startswith(self.value + ".")
            case PatternKind.EXACT:
                return event_type == self.value

    def overlaps(self, other: EventPattern) -> bool:
        """Whether some event type, published yet or not, matches both patterns."""
        if PatternKind.EVERYTHING in (self.kind, other.kind):
            return True
        if self.kind is PatternKind.EXACT and other.kind is PatternKind.EXACT:
            return self.value == other.value
        return self.channel == other.channel


def validate_app(name: str) -> str:
    """An application name: lowercase letters, digits, '-' and '_' (at most 64)."""
    if not isinstance(name, str) or not _APP_RE.fullmatch(name) or len(name) > MAX_APP_LENGTH:
        raise InvalidClaim(
            f"invalid application name {name!r}: use lowercase letters, digits, '-' and '_' "
            f"(starting with a letter or digit, at most {MAX_APP_LENGTH} characters)"
        )
    return name


def validate_company(company: str | None) -> str | None:
    """A company id (or None for all companies), usable as a routing-key word."""
    if company is None:
        return None
    if (
        not isinstance(company, str)
        or not company
        or len(company) > MAX_COMPANY_LENGTH
        or _BAD_COMPANY_RE.search(company)
    ):
        raise InvalidClaim(
            f"invalid company id {company!r}: a non-empty id of at most {MAX_COMPANY_LENGTH} "
            "characters without spaces, '*' or '#' (omit it for all companies)"
        )
    return company


def _company_word(company: str) -> str:
    # The word the routing key carries for this company ('.' becomes '_', see names.py), so
    # "a.b" and "a_b" are one company as far as routing, and so conflicts, are concerned.
    return routing_key("x", company).removeprefix("x.")


def companies_overlap(a: str | None, b: str | None) -> bool:
    """All companies overlap with any; two ids overlap when they route alike."""
    return a is None or b is None or _company_word(a) == _company_word(b)


@dataclass(frozen=True, slots=True)
class ClaimSpec:
    """A claim asked for: validated, not yet granted."""

    app: str
    pattern: EventPattern
    company: str | None = None

    @classmethod
    def parse(cls, app: str, pattern: str, company: str | None = None) -> ClaimSpec:
        return cls(validate_app(app), EventPattern.parse(pattern), validate_company(company))

    def conflicts_with(self, other: ClaimSpec | Claim) -> bool:
        """Claims of different applications whose events can coincide."""
        return (
            self.app != other.app
            and self.pattern.overlaps(other.pattern)
            and companies_overlap(self.company, other.company)
        )

    def same_as(self, other: ClaimSpec | Claim) -> bool:
        return (
            self.app == other.app
            and self.pattern == other.pattern
            and self.company == other.company
        )

    @property
    def binding_key(self) -> str:
        """The binding key of ``attentive.events`` that delivers exactly this claim's events.

        The routing key is ``<type>.<company word>`` and the company is always its last word.
        """
        company = "*" if self.company is None else _company_word(self.company)
        match self.pattern.kind:
            case PatternKind.EXACT:
                return f"{self.pattern.value}.{company}"
            case PatternKind.CHANNEL:
                return (
                    f"{self.pattern.value}.#"
                    if self.company is None
                    else (f"{self.pattern.value}.#.{company}")
                )
            case PatternKind.EVERYTHING:
                return "#" if self.company is None else f"#.{company}"


@dataclass(frozen=True, slots=True)
class Claim(ClaimSpec):
    """A granted claim, as stored."""

    id: int = 0
    created_at: datetime | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "app": self.app,
            "event": str(self.pattern),
            "company": self.company,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


__all__ = [
    "Claim",
    "ClaimSpec",
    "EventPattern",
    "PatternKind",
    "companies_overlap",
    "validate_app",
    "validate_company",
]
