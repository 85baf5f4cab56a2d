"""Which parked entries ops ask about, pages of them newest first, and their counts. Pure.

A :class:`Query` is the filters the CLI and the admin API offer; :meth:`Query.matches` is the
same filter in Python, the reference a backend's SQL is tested against. Pages go newest first
by parked time (then by id), and continue after a :class:`Cursor`: the (parked time, id) of
the last entry shown. Both never change for an entry, so a page never repeats an entry of an
earlier page nor skips one that was there, however many entries are added in between.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from router.claims.model import EventPattern, validate_app
from router.errors import InvalidInput
from router.parked.model import ParkedEvent, Place, State

#: How many entries a page holds unless asked otherwise, and at most.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: How many buckets each facet (but days) shows unless asked otherwise.
DEFAULT_FACET_SIZE = 20
#: How long an entry is kept after it was replayed or purged (parked ones are always kept).
DEFAULT_RETENTION = timedelta(days=30)

_E = TypeVar("_E", Place, State)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_CURSOR_VERSION = "1"


@dataclass(frozen=True, slots=True)
class Query:
    """Which entries: every field set narrows it; ``state=None`` is every state."""

    place: Place | None = None
    #: The application (of DLQ entries; unrouted and invalid ones have none).
    app: str | None = None
    #: An exact type, a channel (``sms.*``) or ``*`` (any entry that has a type).
    pattern: EventPattern | None = None
    company: str | None = None
    #: A piece of the error text, in any case.
    error: str | None = None
    reason: str | None = None
    #: Parked at or after ``since``, at or before ``until``.
    since: datetime | None = None
    until: datetime | None = None
    state: State | None = State.PARKED
    message_ids: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        *,
        place: Place | str | None = None,
        app: str | None = None,
        event: str | None = None,
        company: str | None = None,
        error: str | None = None,
        reason: str | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        state: State | str | None = State.PARKED,
        message_ids: Iterable[str] = (),
    ) -> Query:
        """From user input (blank means unset); :class:`InvalidInput` naming the bad field."""
        return cls(
            place=_member(Place, place, "place"),
            app=validate_app(app) if app else None,
            pattern=EventPattern.parse(event) if event else None,
            company=company or None,
            error=error or None,
            reason=reason or None,
            since=_moment(since, "since"),
            until=_moment(until, "until"),
            state=_member(State, state, "state"),
            message_ids=frozenset(message_ids),
        )

    @property
    def error_folded(self) -> str | None:
        """The error piece as the store compares it (see :func:`fold`)."""
        return None if self.error is None else fold(self.error)

    def matches(self, entry: ParkedEvent) -> bool:
        """Whether ``entry`` is one this query asks about."""
        checks = (
            self.place is None or entry.place is self.place,
            self.app is None or entry.app == self.app,
            self.pattern is None
            or (entry.event_type is not None and self.pattern.matches(entry.event_type)),
            self.company is None or entry.company == self.company,
            self.error is None or fold(self.error) in fold(entry.error or ""),
            self.reason is None or entry.reason == self.reason,
            self.since is None or entry.parked_at >= self.since,
            self.until is None or entry.parked_at <= self.until,
            self.state is None or entry.state is self.state,
            not self.message_ids or entry.message_id in self.message_ids,
        )
        return all(checks)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: after the entry parked at ``parked_at`` with ``id``."""

    parked_at: datetime
    id: int

    @classmethod
    def after(cls, entry: ParkedEvent) -> Cursor:
        if entry.id is None:
            raise InvalidInput("is for stored entries only", field="cursor")
        return cls(entry.parked_at, entry.id)

    def encode(self) -> str:
        """The opaque text a client hands back for the next page."""
        text = f"{_CURSOR_VERSION}.{micros(self.parked_at)}.{self.id}"
        return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """The cursor :meth:`encode` gave; :class:`InvalidInput` for anything else."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
            version, stamp, entry_id = raw.split(".")
            if version != _CURSOR_VERSION:
                raise ValueError(version)
            return cls(from_micros(int(stamp)), int(entry_id))
        except (ValueError, UnicodeError, binascii.Error, OverflowError):
            raise InvalidInput("is not a cursor this store gave", field="cursor") from None


@dataclass(frozen=True, slots=True)
class Page:
    """Entries newest first, and the cursor of the next page (None: this is the last)."""

    entries: tuple[ParkedEvent, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Bucket:
    """One facet value (None: entries without one) and how many entries have it."""

    value: str | None
    count: int


@dataclass(frozen=True, slots=True)
class Facets:
    """Counts of a query's entries by type, company, error kind, reason and day (UTC).

    Each holds the largest buckets first (then by value), at most the size asked for; days
    are every day that has entries, newest first. ``total`` counts every entry of the query.
    """

    total: int
    types: tuple[Bucket, ...]
    companies: tuple[Bucket, ...]
    errors: tuple[Bucket, ...]
    reasons: tuple[Bucket, ...]
    days: tuple[Bucket, ...]


@dataclass(frozen=True, slots=True)
class StoreStats:
    """The store's size (entries of any state), how many are parked, the oldest parked."""

    entries: int
    parked: int
    oldest_parked_at: datetime | None


def fold(text: str) -> str:
    """Text as an error filter compares it: lowercase, so matching ignores case."""
    return text.lower()


def page_size(limit: int) -> int:
    """``limit`` when it is a page size the store serves; else :class:`InvalidInput`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput(f"must be between 1 and {MAX_PAGE_SIZE}, not {limit!r}", field="limit")
    return limit


def micros(stamp: datetime) -> int:
    """Microseconds since the Unix epoch (how SQLite keeps a time, sortable as it is)."""
    return (stamp - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    return _EPOCH + value * _MICROSECOND


def _member(kind: type[_E], value: _E | str | None, name: str) -> _E | None:
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except ValueError:
        accepted = ", ".join(member.value for member in kind)
        raise InvalidInput(f"must be one of {accepted}, not {value!r}", field=name) from None


def _moment(value: str | datetime | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                "must be an ISO 8601 time such as 2026-11-26T09:00Z", field=name
            ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def query_to_json(query: Query) -> dict[str, Any]:
    """A query as a JSON object of the filters it sets; :func:`query_from_json` reads it."""
    data: dict[str, Any] = {
        "place": None if query.place is None else query.place.value,
        "app": query.app,
        "event": None if query.pattern is None else str(query.pattern),
        "company": query.company,
        "error": query.error,
        "reason": query.reason,
        "since": _iso(query.since),
        "until": _iso(query.until),
        "state": None if query.state is None else query.state.value,
        "message_ids": sorted(query.message_ids),
    }
    return {key: value for key, value in data.items() if value not in (None, [])} | {
        "state": data["state"]
    }


def query_from_json(data: Mapping[str, Any]) -> Query:
    """The query :func:`query_to_json` wrote (:class:`InvalidInput` for anything else)."""
    if not isinstance(data, Mapping):
        raise InvalidInput("must be a JSON object", field="query")
    known = {"place", "app", "event", "company", "error", "reason", "since", "until", "state"}
    unknown = set(data) - known - {"message_ids"}
    if unknown:
        raise InvalidInput(f"has unknown filters {sorted(unknown)}", field="query")
    ids = data.get("message_ids") or ()
    if not isinstance(ids, list | tuple) or not all(isinstance(i, str) for i in ids):
        raise InvalidInput("must be a list of message ids", field="message_ids")
    values = {key: data.get(key) for key in known}
    return Query.build(**values, message_ids=ids)


def _iso(stamp: datetime | None) -> str | None:
    return None if stamp is None else stamp.isoformat()


__all__ = [
    "DEFAULT_FACET_SIZE",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_RETENTION",
    "MAX_PAGE_SIZE",
    "Bucket",
    "Cursor",
    "Facets",
    "Page",
    "Query",
    "StoreStats",
    "fold",
    "from_micros",
    "micros",
    "page_size",
    "query_from_json",
    "query_to_json",
]
