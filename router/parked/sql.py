"""The SQL both backends run, built once: filters, pages, facets, rows to entries. Pure.

The backends differ in how a parameter is written (``?`` or ``$1``), how a time is kept
(microseconds or ``TIMESTAMPTZ``), and a few functions; a :class:`Statement` hides that, so a
query reads the same in both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from router.claims.model import PatternKind
from router.parked.model import ParkedEvent, Place, Properties, State
from router.parked.query import (
    Bucket,
    Cursor,
    Facets,
    Page,
    Query,
    fold,
    from_micros,
    micros,
    page_size,
)

#: What a page and ``get`` read of an entry, in this order (see :func:`entry`).
COLUMNS = (
    "id, place, app, body, properties, routing_key, message_id, event_type, company, reason, "
    "error, attempts, first_failed_at, parked_at, stored_at, replays, previous_id, "
    "state, state_at, state_by"
)
#: What an insert writes, in this order (see :func:`insert_values`).
INSERT_COLUMNS = (
    "fingerprint",
    "place",
    "app",
    "message_id",
    "routing_key",
    "event_type",
    "channel",
    "company",
    "reason",
    "error",
    "error_kind",
    "error_folded",
    "attempts",
    "replays",
    "first_failed_at",
    "parked_at",
    "stored_at",
    "state",
    "properties",
    "body",
)
#: Newest first; the page's cursor follows the same order.
ORDER = "ORDER BY parked_at DESC, id DESC"
#: A facet's name -> the expression it groups by (``day`` differs by backend).
FACET_COLUMNS = {
    "types": "event_type",
    "companies": "company",
    "errors": "error_kind",
    "reasons": "reason",
}
#: Places where no entry has an application.
_APPLESS = (Place.UNROUTED, Place.INVALID)


@dataclass(slots=True)
class Statement:
    """Parameters collected while a statement is written, in the backend's spelling."""

    #: PostgreSQL's ``$1``, ``$2`` (and native times), or SQLite's ``?`` (and microseconds).
    numbered: bool
    params: list[Any] = field(default_factory=list)

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}" if self.numbered else "?"

    def bind_time(self, stamp: datetime) -> str:
        return self.bind(stamp if self.numbered else micros(stamp))

    def one_of(self, column: str, values: Iterable[Any]) -> str:
        ordered = sorted(values)
        if self.numbered:
            return f"{column} = ANY({self.bind(ordered)})"
        return f"{column} IN ({', '.join(self.bind(value) for value in ordered)})"

    def contains(self, column: str, piece: str) -> str:
        function = "strpos" if self.numbered else "instr"
        return f"{function}({column}, {self.bind(piece)}) > 0"


def where(query: Query, statement: Statement, cursor: Cursor | None = None) -> str:
    """``WHERE ...`` picking ``query``'s entries (after ``cursor``), or ``""`` for all."""
    bind = statement.bind
    conditions: list[str] = []
    if query.place is not None:
        conditions.append(f"place = {bind(query.place.value)}")
    if query.app is not None:
        conditions.append(f"app = {bind(query.app)}")
    elif query.place in _APPLESS:  # always true there; lets the scoped indexes serve
        conditions.append(f"app = {bind('')}")
    if query.state is not None:
        conditions.append(f"state = {bind(query.state.value)}")
    pattern = query.pattern
    if pattern is not None:
        if pattern.kind is PatternKind.EXACT:
            conditions.append(f"event_type = {bind(pattern.value)}")
        elif pattern.kind is PatternKind.CHANNEL:
            conditions.append(f"channel = {bind(pattern.value)}")
        else:
            conditions.append("event_type IS NOT NULL")
    if query.company is not None:
        conditions.append(f"company = {bind(query.company)}")
    if query.reason is not None:
        conditions.append(f"reason = {bind(query.reason)}")
    if query.error is not None:
        conditions.append(statement.contains("error_folded", fold(query.error)))
    if query.since is not None:
        conditions.append(f"parked_at >= {statement.bind_time(query.since)}")
    if query.until is not None:
        conditions.append(f"parked_at <= {statement.bind_time(query.until)}")
    if query.message_ids:
        conditions.append(statement.one_of("message_id", query.message_ids))
    if cursor is not None:
        stamp = statement.bind_time(cursor.parked_at)
        conditions.append(f"(parked_at, id) < ({stamp}, {bind(cursor.id)})")
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


@dataclass(frozen=True, slots=True)
class Read:
    """A statement and its parameters, ready for the backend's driver."""

    text: str
    params: list[Any]


def page_read(table: str, query: Query, limit: int, cursor: str | None, *, numbered: bool) -> Read:
    """One more entry than a page of ``limit`` holds (so whether there is a next page),
    newest first, after ``cursor``; :class:`InvalidInput` for a limit or cursor not served."""
    after = None if cursor is None else Cursor.decode(cursor)
    statement = Statement(numbered)
    text = (
        f"SELECT {COLUMNS} FROM {table} {where(query, statement, after)} {ORDER} "
        f"LIMIT {statement.bind(page_size(limit) + 1)}"
    )
    return Read(text, statement.params)


def page_of(rows: Sequence[Sequence[Any]], limit: int, *, native_times: bool) -> Page:
    """The page the rows of a :func:`page_read` of ``limit`` make."""
    size = page_size(limit)
    entries = tuple(entry(row, native_times=native_times) for row in rows[:size])
    more = len(rows) > size
    return Page(entries, Cursor.after(entries[-1]).encode() if more else None)


def count_read(table: str, query: Query, *, numbered: bool) -> Read:
    statement = Statement(numbered)
    return Read(f"SELECT count(*) FROM {table} {where(query, statement)}", statement.params)


def facets_read(table: str, query: Query, *, numbered: bool, day: str) -> Read:
    """Every facet's counts in one statement: rows of (facet's number, value, count).

    The query's entries are picked once (from an index that carries the facet columns,
    unless a filter needs the rows) and counted five ways: by grouping sets in PostgreSQL,
    from a materialized pick in SQLite, which has none. ``day`` is how the backend spells an
    entry's day (UTC) as ``YYYY-MM-DD``.
    """
    statement = Statement(numbered)
    columns = [*FACET_COLUMNS.values(), "day"]
    picked = (
        f"SELECT {', '.join(FACET_COLUMNS.values())}, {day} AS day FROM {table} "
        f"{where(query, statement)}"
    )
    if numbered:
        every = ", ".join(columns)
        # GROUPING(...) has a bit set for each column the row's set does not group by
        masks = [(1 << len(columns)) - 1 - (1 << (len(columns) - 1 - n)) for n in range(5)]
        number = " ".join(f"WHEN {mask} THEN {n}" for n, mask in enumerate(masks))
        value = " ".join(f"WHEN {mask} THEN {c}" for c, mask in zip(columns, masks, strict=True))
        sets = ", ".join(f"({column})" for column in columns)
        text = (
            f"SELECT CASE GROUPING({every}) {number} END, CASE GROUPING({every}) {value} END, "
            f"count(*) FROM ({picked}) picked GROUP BY GROUPING SETS ({sets})"
        )
    else:
        counted = " UNION ALL ".join(
            f"SELECT {number}, {column}, count(*) FROM picked GROUP BY {column}"
            for number, column in enumerate(columns)
        )
        text = f"WITH picked AS MATERIALIZED ({picked}) {counted}"
    return Read(text, statement.params)


def facets_of(rows: Iterable[Sequence[Any]], size: int) -> Facets:
    """The facets the rows of :func:`facets_read` make (each cut at ``size``, days whole)."""
    names = [*FACET_COLUMNS, "days"]
    grouped: dict[str, list[tuple[Any, int]]] = {name: [] for name in names}
    for number, value, count in rows:
        grouped[names[number]].append((value, count))
    counts = {name: buckets(grouped[name], size) for name in FACET_COLUMNS}
    total = sum(count for _, count in grouped["types"])
    return Facets(total=total, days=buckets(grouped["days"], None), **counts)


def mark_write(
    table: str, ids: Sequence[int], change: tuple[State, datetime, str], *, numbered: bool
) -> Read:
    """Mark the parked ones of ``ids`` with (state, when, by).

    SQLite is told to find the rows by id alone (``NOT INDEXED`` still looks up the integer
    primary key): left to itself it picks the index on (state, state_at) for ``state = ?``
    and walks every parked entry for each statement.
    """
    state, when, by = change
    statement = Statement(numbered)
    target = table if numbered else f"{table} NOT INDEXED"
    text = (
        f"UPDATE {target} SET state = {statement.bind(state.value)}, "
        f"state_at = {statement.bind_time(when)}, state_by = {statement.bind(by)} "
        f"WHERE {statement.one_of('id', ids)} AND state = {statement.bind(State.PARKED.value)}"
    )
    return Read(text, statement.params)


def mark_writes(
    table: str,
    ids: Iterable[int],
    change: tuple[State, datetime, str],
    *,
    numbered: bool,
    per_statement: int | None = None,
) -> list[Read]:
    """:func:`mark_write` of ``ids`` (each once), ``per_statement`` ids a statement at most."""
    ordered = sorted(set(ids))
    step = per_statement or max(len(ordered), 1)
    return [
        mark_write(table, ordered[at : at + step], change, numbered=numbered)
        for at in range(0, len(ordered), step)
    ]


def expired_write(table: str, before: datetime, *, numbered: bool) -> Read:
    """Delete the entries marked before ``before``."""
    statement = Statement(numbered)
    marked = statement.one_of("state", (State.REPLAYED.value, State.PURGED.value))
    text = f"DELETE FROM {table} WHERE {marked} AND state_at < {statement.bind_time(before)}"
    return Read(text, statement.params)


def insert_values(event: ParkedEvent, *, native_times: bool) -> tuple[Any, ...]:
    """``event`` as the values of :data:`INSERT_COLUMNS`, parked and not yet linked."""
    time = _time_writer(native_times)
    return (
        event.fingerprint,
        event.place.value,
        event.app or "",
        event.message_id,
        event.routing_key,
        event.event_type,
        event.channel,
        event.company,
        event.reason,
        event.error,
        event.error_kind,
        None if event.error is None else fold(event.error),
        event.attempts,
        event.replays,
        time(event.first_failed_at),
        time(event.parked_at),
        time(event.stored_at),
        State.PARKED.value,
        orjson.dumps(event.properties.to_json()).decode(),
        event.body,
    )


def entry(row: Sequence[Any], *, native_times: bool) -> ParkedEvent:
    """The entry a row of :data:`COLUMNS` holds."""
    time = _time_reader(native_times)
    maybe = _maybe(time)
    (entry_id, place, app, body, properties, routing_key, message_id, event_type, company,
     reason, error, attempts, first_failed_at, parked_at, stored_at, replays,
     previous_id, state, state_at, state_by) = row  # fmt: skip
    return ParkedEvent(
        id=int(entry_id),
        place=Place(place),
        app=app or None,
        body=bytes(body),
        properties=Properties.from_json(orjson.loads(properties)),
        routing_key=routing_key,
        message_id=message_id,
        event_type=event_type,
        company=company,
        reason=reason,
        error=error,
        attempts=attempts,
        first_failed_at=maybe(first_failed_at),
        parked_at=time(parked_at),
        stored_at=time(stored_at),
        replays=int(replays),
        previous_id=None if previous_id is None else int(previous_id),
        state=State(state),
        state_at=maybe(state_at),
        state_by=state_by,
    )


def rounds(events: Sequence[ParkedEvent]) -> list[Sequence[ParkedEvent]]:
    """``events`` cut, in order, where a message comes again: one statement links each entry
    to entries stored before it started, so a message's second entry waits for the next."""
    cuts: list[Sequence[ParkedEvent]] = []
    start = 0
    seen: set[tuple[str, str, str]] = set()
    for index, event in enumerate(events):
        if event.message_id is None:
            continue
        key = (event.place.value, event.app or "", event.message_id)
        if key in seen:
            cuts.append(events[start:index])
            start, seen = index, set()
        seen.add(key)
    cuts.append(events[start:])
    return cuts


def buckets(rows: Iterable[Sequence[Any]], size: int | None) -> tuple[Bucket, ...]:
    """Facet rows ``(value, count)`` as buckets, largest first, at most ``size`` (None: all,
    newest value first, for days)."""
    found = [Bucket(None if value is None else str(value), int(count)) for value, count in rows]
    if size is None:
        found.sort(key=lambda bucket: bucket.value or "", reverse=True)
        return tuple(found)
    found.sort(key=lambda bucket: (-bucket.count, bucket.value is None, bucket.value or ""))
    return tuple(found[:size])


def _time_writer(native: bool) -> Callable[[datetime | None], datetime | int | None]:
    if native:
        return lambda stamp: stamp
    return lambda stamp: None if stamp is None else micros(stamp)


def _time_reader(native: bool) -> Callable[[Any], datetime]:
    if native:
        return lambda value: value.astimezone(UTC)
    return lambda value: from_micros(int(value))


def _maybe(read: Callable[[Any], datetime]) -> Callable[[Any], datetime | None]:
    return lambda value: None if value is None else read(value)


__all__ = [
    "COLUMNS",
    "FACET_COLUMNS",
    "INSERT_COLUMNS",
    "ORDER",
    "Read",
    "Statement",
    "buckets",
    "count_read",
    "entry",
    "expired_write",
    "facets_of",
    "facets_read",
    "insert_values",
    "mark_write",
    "mark_writes",
    "page_of",
    "page_read",
    "rounds",
    "where",
]
