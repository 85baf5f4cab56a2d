"""The webhook use case: a body and the headers it came with, verified, parsed, checked against
the companies its key may speak for and the company its URL names, then published and
confirmed, or quarantined.

:meth:`WebhookReceiver.receive` knows no HTTP: it says what became of a webhook as a
:data:`Received` outcome, and :mod:`router.ingress.routes` turns that into the answer, the log
line and the counts. One rule holds for every outcome: nothing is :class:`Accepted` or
:class:`Quarantined` before RabbitMQ has confirmed the persistent message; a publish it did not
confirm is :class:`Unconfirmed`, and the client is to send the webhook again.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from router.amqp.frames import Properties
from router.contract.events import Routable, Unusable, parse
from router.contract.names import (
    CLOUDEVENTS_PREFIX,
    CLOUDEVENTS_SOURCE,
    COMPANY_HEADER,
    EVENT_TIME_HEADER,
    INVALID_REASON_HEADER,
    RECEIVED_AT_HEADER,
    RECEIVED_PATH_HEADER,
    SIGNATURE_HEADER,
    SUBJECT_KEY_HEADER,
)
from router.contract.ordering import SubjectKeys
from router.contract.signing import Verifier
from router.errors import PublishFailed

_CE_SPECVERSION = f"{CLOUDEVENTS_PREFIX}specversion"
_CE_ID = f"{CLOUDEVENTS_PREFIX}id"
_CE_TYPE = f"{CLOUDEVENTS_PREFIX}type"
_CE_SOURCE = f"{CLOUDEVENTS_PREFIX}source"
_CE_TIME = f"{CLOUDEVENTS_PREFIX}time"

_SIGNATURE = SIGNATURE_HEADER.encode()


@dataclass(slots=True)
class Accepted:
    """Published to the events exchange and confirmed by RabbitMQ."""

    event: Routable
    #: Seconds from the publish to RabbitMQ's confirm.
    confirm_seconds: float


@dataclass(slots=True)
class Quarantined:
    """Authentic but unusable: parked raw in ``queue`` (the invalid queue), confirmed."""

    reason: str
    message_id: str
    queue: str
    confirm_seconds: float


@dataclass(slots=True)
class Unsigned:
    """Not taken, nothing published: no signature, or none that verifies under a configured
    key. (It says no more, so that the answer gives no hint.)"""


@dataclass(slots=True)
class KeyNotForCompany:
    """Not taken, nothing published: signed by a key bound to other companies than the event's
    (or, for a body that cannot be read, than the one its subscription URL names)."""

    company: str
    message_id: str
    #: The event, when the body was usable.
    event: Routable | None


@dataclass(slots=True)
class WrongCompany:
    """Not taken, nothing published: the event's company is not the one its subscription
    URL names."""

    event: Routable


@dataclass(slots=True)
class Unconfirmed:
    """RabbitMQ did not confirm the publish (or the quarantine): the client is to retry."""

    error: PublishFailed
    message_id: str
    #: The event, when it was usable (else its body was to be quarantined).
    event: Routable | None
    confirm_seconds: float


#: What became of one webhook. (The outcomes are not frozen dataclasses: one is made for every
#: webhook, and a frozen one costs about three times as much to make.)
Received = Accepted | Quarantined | Unsigned | KeyNotForCompany | WrongCompany | Unconfirmed

_UNSIGNED = Unsigned()


class Publishing(Protocol):
    """Where the receiver publishes: :class:`~router.amqp.broker.Broker` (or, with tracing
    on, a span around each of its publishes: :mod:`router.ingress.spans`)."""

    def publish_event(
        self, routing_key: str, body: bytes, properties: Properties
    ) -> Awaitable[None]: ...

    def publish_to_queue(
        self, queue: str, body: bytes, properties: Properties
    ) -> Awaitable[None]: ...


@dataclass(frozen=True, slots=True)
class WebhookReceiver:
    """Verifies a webhook, then publishes it (or quarantines it in ``invalid_queue``).

    A key bound to companies (:class:`~router.contract.signing.SigningKey`) is asked about
    the event's company only once its signature matched, and only when every key that
    matched is bound: with unbound keys alone nothing more is done per webhook.

    Each event published carries its ordering keys (:mod:`router.contract.ordering`): the
    subject key, made with ``subject_keys``, and the event time, when its payload has them."""

    verifier: Verifier
    broker: Publishing
    invalid_queue: str
    subject_keys: SubjectKeys
    #: Reads a verified body (a span around it with tracing on: :mod:`router.ingress.spans`).
    parser: Callable[[bytes], Routable | Unusable] = parse
    #: Adds headers of its own to each message's, as they are made (with tracing on, the
    #: ``traceparent`` of a webhook not sampled: :mod:`router.ingress.spans`).
    stamp: Callable[[dict[str, Any]], None] | None = None

    async def receive(
        self,
        body: bytes,
        headers: Mapping[bytes, bytes],
        path: str,
        company: str | None = None,
    ) -> Received:
        """What became of the webhook ``body``, sent with ``headers`` (by lower-case name) to
        ``path``; ``company``: the company its subscription URL names, if any."""
        signed = headers.get(_SIGNATURE)
        signature = None if signed is None else signed.decode("latin-1")
        verifier = self.verifier
        matched = verifier.match(body, signature)
        if not matched:
            return _UNSIGNED
        bound = not matched & verifier.unbound  # (every key that matched is bound)
        match self.parser(body):
            case Unusable(reason=reason, message_id=message_id):
                if bound and company is not None and not verifier.allows(matched, company):
                    return KeyNotForCompany(company, message_id, None)
                return await self._quarantine(body, headers, path, reason, message_id)
            case Routable() as event:
                if bound and not verifier.allows(matched, event.company_id):
                    return KeyNotForCompany(event.company_id, event.message_id, event)
                if company is not None and company != event.company_id:
                    return WrongCompany(event)
                properties = _properties(event, self.subject_keys, self.stamp)
                publishing = self.broker.publish_event(event.routing_key, body, properties)
                started = time.perf_counter()
                try:
                    await publishing
                except PublishFailed as error:
                    seconds = time.perf_counter() - started
                    return Unconfirmed(error, event.message_id, event, seconds)
                return Accepted(event, time.perf_counter() - started)
        raise AssertionError("parse() returns a Routable or an Unusable")  # pragma: no cover

    async def _quarantine(
        self,
        body: bytes,
        headers: Mapping[bytes, bytes],
        path: str,
        reason: str,
        message_id: str,
    ) -> Quarantined | Unconfirmed:
        """Park an authentic but unusable body, raw, in the invalid queue."""
        received_ms = _now_ms()
        message_headers: dict[str, Any] = {
            INVALID_REASON_HEADER: reason,
            RECEIVED_PATH_HEADER: path,
            RECEIVED_AT_HEADER: received_ms,
        }
        if self.stamp is not None:
            self.stamp(message_headers)
        properties = Properties(
            content_type=_declared_content_type(headers),
            message_id=message_id,
            timestamp=received_ms // 1000,
            headers=message_headers,
        )
        queue = self.invalid_queue
        publishing = self.broker.publish_to_queue(queue, body, properties)
        started = time.perf_counter()
        try:
            await publishing
        except PublishFailed as error:
            return Unconfirmed(error, message_id, None, time.perf_counter() - started)
        return Quarantined(reason, message_id, queue, time.perf_counter() - started)


def _properties(
    event: Routable, subject_keys: SubjectKeys, stamp: Callable[[dict[str, Any]], None] | None
) -> Properties:
    """The message properties of ``event``: CloudEvents attributes as headers, the ordering
    keys its payload has, and what ``stamp`` adds."""
    timestamp_ms = event.timestamp_ms
    occurred_ms = timestamp_ms if timestamp_ms is not None else _now_ms()
    second, millis = divmod(occurred_ms, 1000)
    headers: dict[str, Any] = {
        _CE_SPECVERSION: "1.0",
        _CE_ID: event.message_id,
        _CE_TYPE: event.type,
        _CE_SOURCE: CLOUDEVENTS_SOURCE,
        _CE_TIME: f"{_utc_second(second)}.{millis:03d}Z",
        COMPANY_HEADER: event.company_id,
    }
    subject = subject_keys.key(event.type, event.company_id, event.payload)
    if subject is not None:
        headers[SUBJECT_KEY_HEADER] = subject
    if timestamp_ms is not None:
        headers[EVENT_TIME_HEADER] = timestamp_ms
    if stamp is not None:
        stamp(headers)
    return Properties(
        content_type="application/json",
        message_id=event.message_id,
        timestamp=second,
        headers=headers,
    )


@functools.lru_cache(maxsize=64)
def _utc_second(second: int) -> str:
    """``second`` (Unix) as ISO 8601 in UTC without a fraction; events come in bursts of the
    same few seconds, so the formatting is mostly a cache hit."""
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _declared_content_type(headers: Mapping[bytes, bytes]) -> str:
    """The client's media type, when an AMQP ``content_type`` (a short string) can carry it."""
    value = headers.get(b"content-type")
    header = "application/octet-stream" if value is None else value.decode("latin-1")
    declared = header.partition(";")[0].strip().lower()
    fits = declared.isascii() and declared.isprintable() and 0 < len(declared) <= 255
    return declared if fits else "application/octet-stream"


def _now_ms() -> int:
    return int(time.time() * 1000)


__all__ = [
    "Accepted",
    "KeyNotForCompany",
    "Publishing",
    "Quarantined",
    "Received",
    "Unconfirmed",
    "Unsigned",
    "WebhookReceiver",
    "WrongCompany",
]
