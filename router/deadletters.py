"""Inspect, replay and purge parked events: an application's DLQ, ``attentive.unrouted`` and
``attentive.invalid``. The CLI and the admin API both call this module.

Every operation walks the queue once with ``basic.get``, without acking: a message it leaves
alone stays unacked until the walk ends, when closing the channel returns every one of them
to the queue, where it was: the DLQ is a classic queue, which keeps positions. ``unrouted``
and ``invalid`` are quorum queues (no delivery limit: a walk adds one to each
``x-delivery-count``), which return messages in another order: a walk keeps what is in them,
not their order. Pulling one at a time keeps memory flat however long the
queue is. A message leaves the queue only by an ack, and a replayed one only after the
broker confirmed its copy, so an event is never lost; a walk killed midway returns
everything it had not yet acked, and an event whose copy was confirmed but not yet acked is
delivered twice (workers skip the duplicate by its message id).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aio_pika
import aiormq
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from router.amqp import connect_first
from router.claims.model import EventPattern, validate_app
from router.errors import PublishFailed, RouterError
from router.masking import mask_payload, mask_text
from router.names import (
    APP_HEADER,
    ATTEMPT_HEADER,
    COMPANY_HEADER,
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTERED_AT_HEADER,
    ERROR_HEADER,
    FIRST_FAILED_AT_HEADER,
    INVALID_REASON_HEADER,
    LAST_FAILED_AT_HEADER,
    RECEIVED_AT_HEADER,
    REPLAY_COUNT_HEADER,
    ROUTING_KEY_HEADER,
    TRACEBACK_HEADER,
    Names,
)

#: Headers that describe a past failure; a replayed event starts without them.
_FAILURE_HEADERS = frozenset(
    {
        ATTEMPT_HEADER,
        ERROR_HEADER,
        TRACEBACK_HEADER,
        DEAD_LETTER_REASON_HEADER,
        DEAD_LETTERED_AT_HEADER,
        FIRST_FAILED_AT_HEADER,
        LAST_FAILED_AT_HEADER,
        APP_HEADER,
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
    }
)
#: How long a walk waits for a confirm before counting the event as failed (it stays parked).
CONFIRM_TIMEOUT = 10.0


class NotFound(RouterError):
    """Raised when the queue (or the message) asked about does not exist."""


class Kind(StrEnum):
    """Which parking place."""

    DLQ = "dlq"
    UNROUTED = "unrouted"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Parked:
    """One parking place: its queue and where a replay sends events."""

    kind: Kind
    queue: str
    #: The exchange a replay publishes to (None: cannot be replayed).
    replay_exchange: str | None
    app: str | None = None

    @classmethod
    def of(cls, names: Names, kind: Kind | str, app: str | None = None) -> Parked:
        kind = Kind(kind)
        match kind:
            case Kind.DLQ:
                if app is None:
                    raise RouterError("the dead-letter queue of which application? (--app)")
                validate_app(app)
                return cls(
                    kind,
                    names.app_dead_letter_queue(app),
                    names.app_requeue_exchange(app),
                    app,
                )
            case Kind.UNROUTED:
                return cls(kind, names.unrouted_queue, names.events_exchange)
            case Kind.INVALID:
                return cls(kind, names.invalid_queue, None)


@dataclass(frozen=True, slots=True)
class Entry:
    """One parked event, as listed."""

    position: int
    message_id: str
    event_type: str | None
    company_id: str | None
    routing_key: str
    attempts: int | None
    error: str | None
    reason: str | None
    parked_at: datetime | None
    replays: int
    headers: Mapping[str, Any] = field(repr=False)
    body: bytes = field(repr=False)

    def summary(self, *, reveal: bool = False) -> dict[str, Any]:
        """The table row, for ``list`` and ``--json`` (contact details in errors masked)."""
        return {
            "position": self.position,
            "message_id": self.message_id,
            "type": self.event_type,
            "company": self.company_id,
            "attempts": self.attempts,
            "error": self.error if reveal or self.error is None else mask_text(self.error),
            "reason": self.reason,
            "parked_at": _iso(self.parked_at),
            "replays": self.replays,
        }

    def detail(self, *, reveal: bool = False) -> dict[str, Any]:
        """Everything about the event; phone numbers and emails masked unless ``reveal``."""
        try:
            payload: Any = orjson.loads(self.body)
            body: Any = payload if reveal else mask_payload(payload)
        except orjson.JSONDecodeError:
            text = self.body.decode("utf-8", "replace")
            body = text if reveal else mask_text(text)
        headers = {k: _jsonable(v) for k, v in self.headers.items()}
        if not reveal:  # handler errors often quote the subscriber's phone or email
            for name in (ERROR_HEADER, TRACEBACK_HEADER):
                if isinstance(headers.get(name), str):
                    headers[name] = mask_text(headers[name])
        return {
            **self.summary(reveal=reveal),
            "routing_key": self.routing_key,
            "headers": headers,
            "payload": body,
        }


@dataclass(frozen=True, slots=True)
class Filter:
    """Which parked events an operation is about. Empty: all of them."""

    pattern: EventPattern | None = None
    company: str | None = None
    message_ids: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None
    error: str | None = None

    @classmethod
    def build(
        cls,
        *,
        event: str | None = None,
        company: str | None = None,
        message_ids: Iterable[str] = (),
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        error: str | None = None,
    ) -> Filter:
        """From user input; :class:`RouterError` with a one-line reason when malformed."""
        return cls(
            EventPattern.parse(event) if event else None,
            company or None,
            frozenset(message_ids),
            _when(since, "since"),
            _when(until, "until"),
            error or None,
        )

    def matches(self, entry: Entry) -> bool:
        if self.pattern is not None and not (
            entry.event_type is not None and self.pattern.matches(entry.event_type)
        ):
            return False
        if self.company is not None and entry.company_id != self.company:
            return False
        if self.message_ids and entry.message_id not in self.message_ids:
            return False
        if self.since is not None and (entry.parked_at is None or entry.parked_at < self.since):
            return False
        if self.until is not None and (entry.parked_at is None or entry.parked_at > self.until):
            return False
        return not (
            self.error is not None
            and (entry.error is None or self.error.lower() not in entry.error.lower())
        )


@dataclass(slots=True)
class Summary:
    """What an operation did. ``left`` is how many events are parked after it (after a replay:
    the queue's depth, so unrouted events that still have no owner count again)."""

    total: int = 0
    matched: int = 0
    replayed: int = 0
    purged: int = 0
    failed: int = 0
    left: int = 0
    dry_run: bool = False
    entries: list[Entry] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "matched": self.matched,
            "replayed": self.replayed,
            "purged": self.purged,
            "failed": self.failed,
            "left": self.left,
            "dry_run": self.dry_run,
        }


#: Called as ``progress(done, total)`` while a walk goes.
Progress = Callable[[int, int], None]


class DeadLetters:
    """list / show / replay / purge on one broker."""

    def __init__(self, amqp_url: str, names: Names) -> None:
        self._url = amqp_url
        self._names = names

    def parked(self, kind: Kind | str, app: str | None = None) -> Parked:
        return Parked.of(self._names, kind, app)

    async def list(
        self, parked: Parked, where: Filter = Filter(), *, progress: Progress | None = None
    ) -> Summary:
        """Every matching entry; nothing leaves the queue, and the order is kept."""
        summary = Summary()

        async def visit(_: AbstractChannel, message: AbstractIncomingMessage, entry: Entry) -> None:
            if where.matches(entry):
                summary.matched += 1
                summary.entries.append(entry)

        summary.total = await self._walk(parked, visit, progress)
        summary.left = summary.total
        return summary

    async def show(self, parked: Parked, message_id: str) -> Entry:
        found = await self.list(parked, Filter(message_ids=frozenset({message_id})))
        if not found.entries:
            raise NotFound(f"no event {message_id} in {parked.queue}")
        return found.entries[0]

    async def replay(
        self,
        parked: Parked,
        where: Filter = Filter(),
        *,
        limit: int | None = None,
        rate: float | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> Summary:
        """Move matching events back: a DLQ's to its application queue (fresh attempt count),
        unrouted ones to ``attentive.events`` (to whoever owns them now). Publish with
        confirm, then ack; a failed publish leaves the event where it was."""
        if parked.replay_exchange is None:
            raise RouterError(f"events in {parked.queue} cannot be replayed, only purged")
        exchange_name = parked.replay_exchange
        summary = Summary(dry_run=dry_run)
        pacing = _Pacer(rate)

        async def visit(
            channel: AbstractChannel, message: AbstractIncomingMessage, entry: Entry
        ) -> None:
            if not where.matches(entry) or (limit is not None and summary.matched >= limit):
                return
            summary.matched += 1
            if dry_run:
                return
            await pacing.wait()
            try:
                exchange = await channel.get_exchange(exchange_name, ensure=False)
                await exchange.publish(
                    _replayed_copy(message, entry),
                    routing_key=entry.routing_key,
                    timeout=CONFIRM_TIMEOUT,
                )
            except (TimeoutError, aiormq.exceptions.AMQPError, PublishFailed, OSError):
                summary.failed += 1
                return
            await message.ack()
            summary.replayed += 1

        summary.total = await self._walk(parked, visit, progress)
        # what is parked now: unrouted events nobody owns yet come straight back
        summary.left = await self._depth(parked)
        return summary

    async def purge(
        self,
        parked: Parked,
        where: Filter = Filter(),
        *,
        dry_run: bool = True,
        progress: Progress | None = None,
    ) -> Summary:
        """Delete matching events (ack them); with ``dry_run`` only count them."""
        summary = Summary(dry_run=dry_run)

        async def visit(_: AbstractChannel, message: AbstractIncomingMessage, entry: Entry) -> None:
            if not where.matches(entry):
                return
            summary.matched += 1
            if not dry_run:
                await message.ack()
                summary.purged += 1

        summary.total = await self._walk(parked, visit, progress)
        summary.left = summary.total - summary.purged
        return summary

    async def _depth(self, parked: Parked) -> int:
        try:
            connection, _ = await connect_first(self._url, name="attentive-router depth")
            async with connection:
                channel = await connection.channel()
                queue = await channel.declare_queue(parked.queue, passive=True)
                return queue.declaration_result.message_count or 0
        except (aiormq.exceptions.AMQPError, RuntimeError, OSError) as error:
            raise RouterError(f"cannot read the depth of {parked.queue}: {error!r}") from None

    async def _walk(
        self,
        parked: Parked,
        visit: Callable[[AbstractChannel, AbstractIncomingMessage, Entry], Any],
        progress: Progress | None,
    ) -> int:
        """Get every message that was in the queue when the walk began, once; return the count."""
        connection, _ = await connect_first(self._url, name=f"attentive-router {parked.kind}")
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            try:
                queue = await channel.declare_queue(parked.queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                raise NotFound(f"queue {parked.queue} does not exist") from None
            total = queue.declaration_result.message_count or 0
            position = 0
            try:
                for position in range(1, total + 1):
                    message = await queue.get(no_ack=False, fail=False, timeout=CONFIRM_TIMEOUT)
                    if message is None:  # someone else took the rest
                        return position - 1
                    await visit(channel, message, _entry(parked, position, message))
                    if progress is not None:
                        progress(position, total)
            except (aiormq.exceptions.AMQPError, RuntimeError, OSError, TimeoutError) as error:
                # nothing is lost: every message not acked goes back when the connection closes
                raise RouterError(
                    f"stopped after {max(position - 1, 0)} of {total} in {parked.queue} "
                    f"({error!r}); what was not done stays parked"
                ) from None
            # leaving: the channel closes and every message not acked goes back, in place
            return total


def _entry(parked: Parked, position: int, message: AbstractIncomingMessage) -> Entry:
    headers = dict(message.headers or {})
    body = message.body
    event_type, company = _type_and_company(body, headers)
    return Entry(
        position=position,
        message_id=message.message_id or "",
        event_type=event_type,
        company_id=company,
        routing_key=_str(headers.get(ROUTING_KEY_HEADER)) or message.routing_key or "",
        attempts=_attempts(headers, parked.kind),
        error=_str(headers.get(ERROR_HEADER)) or _str(headers.get(INVALID_REASON_HEADER)),
        reason=_str(headers.get(DEAD_LETTER_REASON_HEADER)) or _death_reason(headers),
        parked_at=_parked_at(parked.kind, message, headers),
        replays=_int(headers.get(REPLAY_COUNT_HEADER)) or 0,
        headers=headers,
        body=body,
    )


def _replayed_copy(message: AbstractIncomingMessage, entry: Entry) -> aio_pika.Message:
    headers = {k: v for k, v in entry.headers.items() if k not in _FAILURE_HEADERS}
    headers[REPLAY_COUNT_HEADER] = entry.replays + 1
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        timestamp=message.timestamp,
    )


class _Pacer:
    """At most ``rate`` publishes per second."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        if self._next > now:
            await asyncio.sleep(self._next - now)
        self._next = max(self._next, now) + self._interval


def _type_and_company(body: bytes, headers: Mapping[str, Any]) -> tuple[str | None, str | None]:
    company = _str(headers.get(COMPANY_HEADER))
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, company
    if not isinstance(payload, dict):
        return None, company
    event_type = payload.get("type")
    if company is None and isinstance(payload.get("company"), dict):
        company = _str(payload["company"].get("company_id"))
    return (event_type if isinstance(event_type, str) else None), company


def _attempts(headers: Mapping[str, Any], kind: Kind) -> int | None:
    attempts = _int(headers.get(ATTEMPT_HEADER))
    if attempts is not None or kind is not Kind.DLQ:
        # on unrouted/invalid, x-delivery-count only counts how often they were listed
        return attempts
    return _int(headers.get("x-delivery-count"))  # dead-lettered by the delivery limit


def _death_reason(headers: Mapping[str, Any]) -> str | None:
    return _str(headers.get("x-first-death-reason"))


def _parked_at(
    kind: Kind, message: AbstractIncomingMessage, headers: Mapping[str, Any]
) -> datetime | None:
    stamp = _str(headers.get(DEAD_LETTERED_AT_HEADER))
    if stamp:
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            pass
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        when = deaths[0].get("time")
        if isinstance(when, datetime):
            return when if when.tzinfo else when.replace(tzinfo=UTC)
    received = _int(headers.get(RECEIVED_AT_HEADER))
    if received is not None:
        return datetime.fromtimestamp(received / 1000, tz=UTC)
    if kind is Kind.UNROUTED and message.timestamp is not None:
        stamp_dt = message.timestamp
        return stamp_dt if stamp_dt.tzinfo else stamp_dt.replace(tzinfo=UTC)
    return None


def _when(value: str | datetime | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RouterError(f"--{name} must be an ISO 8601 time such as 2026-11-26T09:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _str(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str | bytes):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z") if value else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


__all__ = ["DeadLetters", "Entry", "Filter", "Kind", "NotFound", "Parked", "Progress", "Summary"]
