"""Searching the archive: a window of time and filters, read from the stream's timestamp
offset (:mod:`router.history.reader`), never consuming, never disturbing consumers.

The filters (type pattern, company, message id) are applied here, to each event read: a
stream has no index, so a search costs the window it reads, whatever the archive's size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from aio_pika.abc import AbstractConnection

from router.claims.model import EventPattern
from router.contract.names import Names
from router.durations import parse_moment
from router.errors import InvalidClaim, InvalidInput, NotFound
from router.history.reader import Archived, read_window

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Search:
    """Which archived events: those written from ``since`` to ``until`` (else now) that match
    every filter given."""

    since: datetime
    until: datetime | None = None
    event_type: EventPattern | None = None
    company: str | None = None
    message_id: str | None = None
    limit: int = DEFAULT_LIMIT

    def matches(self, event: Archived) -> bool:
        """Whether ``event`` passes every filter (the window is the reader's)."""
        if self.message_id is not None and event.message_id != self.message_id:
            return False
        if self.company is not None and event.company != self.company:
            return False
        return self.event_type is None or self.event_type.matches(event.event_type)

    def filters(self) -> dict[str, str]:
        """The search as the fields it was given (an audit record, a job's filter)."""
        shown = {"since": self.since.isoformat()}
        if self.until is not None:
            shown["until"] = self.until.isoformat()
        if self.event_type is not None:
            shown["type"] = str(self.event_type)
        if self.company is not None:
            shown["company"] = self.company
        if self.message_id is not None:
            shown["message_id"] = self.message_id
        return shown

    @classmethod
    def parse(cls, fields: Mapping[str, str | None], *, now: datetime | None = None) -> Search:
        """A search from text fields (``since``, ``until``, ``type``, ``company``,
        ``message_id``, ``limit``: flags or query parameters); :class:`InvalidInput` naming the
        field that is wrong."""
        since = _moment(fields, "since", now)
        if since is None:
            raise InvalidInput("is needed (ISO 8601, or a span ago such as 1h)", field="since")
        until = _moment(fields, "until", now)
        if until is not None and until <= since:
            raise InvalidInput("must be after since", field="until")
        pattern = None
        if raw := fields.get("type"):
            try:
                pattern = EventPattern.parse(raw)
            except InvalidClaim as error:
                raise InvalidInput(str(error), field="type") from None
        return cls(
            since=since,
            until=until,
            event_type=pattern,
            company=fields.get("company") or None,
            message_id=fields.get("message_id") or None,
            limit=_limit(fields.get("limit")),
        )


@dataclass(frozen=True, slots=True)
class Found:
    """What a search found: the first ``limit`` matching events, oldest first; ``more`` when
    the window holds further matches."""

    events: list[Archived]
    more: bool
    #: Events read in the window (matching or not): what the search cost.
    scanned: int


async def matching(
    connection: AbstractConnection, names: Names, search: Search, start: int | None = None
) -> AsyncIterator[Archived]:
    """Every archived event of ``search``'s window that matches it, oldest first (from offset
    ``start`` instead of ``since`` when given: resuming)."""
    origin: datetime | int = search.since if start is None else start
    async for event in read_window(connection, names, origin, search.until):
        if search.matches(event):
            yield event


async def search_archive(connection: AbstractConnection, names: Names, search: Search) -> Found:
    """The first :attr:`Search.limit` events of the archive that match ``search``."""
    events: list[Archived] = []
    scanned = 0
    async for event in read_window(connection, names, search.since, search.until):
        scanned += 1
        if not search.matches(event):
            continue
        if len(events) == search.limit:
            return Found(events, more=True, scanned=scanned)
        events.append(event)
    return Found(events, more=False, scanned=scanned)


async def find_event(connection: AbstractConnection, names: Names, search: Search) -> Archived:
    """The first archived event of ``search``'s window with its message id; :class:`NotFound`
    when there is none."""
    async for event in matching(connection, names, search):
        return event
    raise NotFound(f"no event {search.message_id} in the archive from {search.since.isoformat()}")


def _moment(fields: Mapping[str, str | None], name: str, now: datetime | None) -> datetime | None:
    raw = fields.get(name)
    if not raw:
        return None
    try:
        return parse_moment(raw, now)
    except ValueError as error:
        raise InvalidInput(str(error), field=name) from None


def _limit(raw: str | None) -> int:
    if not raw:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise InvalidInput(f"must be a whole number, not {raw!r}", field="limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"must be between 1 and {MAX_LIMIT}", field="limit")
    return limit


__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "Found",
    "Search",
    "find_event",
    "matching",
    "search_archive",
]
