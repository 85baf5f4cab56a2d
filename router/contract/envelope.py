"""The envelope of an event: every ``x-attentive-*`` header a worker or a replay writes, and
RabbitMQ's ``x-death`` family, written, read and stripped here alone.

The body is Attentive's JSON, never changed. Around it, the headers say where the event has
been: a worker that retries it counts the attempt and keeps the error; one that gives up adds
why, when and which application; RabbitMQ adds ``x-death`` (and ``x-delivery-count`` on
quorum queues) when it dead-letters by itself; a replay strips all of that and counts the
replay. The names themselves live in :mod:`router.contract.names`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from router.contract.names import (
    APP_HEADER,
    ATTEMPT_HEADER,
    COMPANY_HEADER,
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTERED_AT_HEADER,
    DEATH_FAMILY_HEADERS,
    DEATH_HEADER,
    DELIVERY_COUNT_HEADER,
    ERROR_HEADER,
    FIRST_DEATH_REASON_HEADER,
    FIRST_DELIVERY_HEADER,
    FIRST_FAILED_AT_HEADER,
    INVALID_REASON_HEADER,
    LAST_FAILED_AT_HEADER,
    RECEIVED_AT_HEADER,
    REPLAY_COUNT_HEADER,
    ROUTING_KEY_HEADER,
    TRACEBACK_HEADER,
)

Headers = Mapping[str, Any]

#: Headers that hold a handler's own words (its exception), which may quote a subscriber.
HANDLER_TEXT = (ERROR_HEADER, TRACEBACK_HEADER)
#: Counted by the broker per queue; a copy published elsewhere starts without them.
_BROKER_COUNTS = frozenset({DELIVERY_COUNT_HEADER})
#: What a past failure left: a replayed event starts without any of them.
_FAILURE = frozenset(
    {
        ATTEMPT_HEADER,
        ERROR_HEADER,
        TRACEBACK_HEADER,
        DEAD_LETTER_REASON_HEADER,
        DEAD_LETTERED_AT_HEADER,
        FIRST_FAILED_AT_HEADER,
        LAST_FAILED_AT_HEADER,
        APP_HEADER,
        DEATH_HEADER,
        FIRST_DEATH_REASON_HEADER,
        *DEATH_FAMILY_HEADERS,
        DELIVERY_COUNT_HEADER,
    }
)


# -- written by a worker ------------------------------------------------------------------


def deferred(headers: Headers, routing_key: str, *, attempt: int) -> dict[str, Any]:
    """The copy of a delivery that waits for another replica: the same attempt, no failure."""
    return _moved(headers, routing_key, {ATTEMPT_HEADER: attempt})


def retried(
    headers: Headers, routing_key: str, *, attempt: int, error: str, now: str
) -> dict[str, Any]:
    """The copy of a delivery whose handler failed ``attempt``: the next attempt, the error,
    when it first and last failed."""
    return _moved(
        headers,
        routing_key,
        {
            ATTEMPT_HEADER: attempt + 1,
            ERROR_HEADER: error,
            FIRST_FAILED_AT_HEADER: _str(headers.get(FIRST_FAILED_AT_HEADER)) or now,
            LAST_FAILED_AT_HEADER: now,
        },
    )


def dead_lettered(
    headers: Headers,
    routing_key: str,
    *,
    attempt: int,
    error: str,
    traceback: str,
    reason: str,
    app: str,
    now: str,
) -> dict[str, Any]:
    """The copy of a delivery given up on: why, by which application, and when."""
    return _moved(
        headers,
        routing_key,
        {
            ATTEMPT_HEADER: attempt,
            ERROR_HEADER: error,
            TRACEBACK_HEADER: traceback,
            DEAD_LETTER_REASON_HEADER: reason,
            APP_HEADER: app,
            FIRST_FAILED_AT_HEADER: _str(headers.get(FIRST_FAILED_AT_HEADER)) or now,
            LAST_FAILED_AT_HEADER: now,
            DEAD_LETTERED_AT_HEADER: now,
        },
    )


def _moved(headers: Headers, routing_key: str, changes: dict[str, Any]) -> dict[str, Any]:
    copy = {k: v for k, v in headers.items() if k not in _BROKER_COUNTS}
    # the retry and dead-letter exchanges route by their own keys: keep the event's
    copy[ROUTING_KEY_HEADER] = routing_key
    copy.update(changes)
    return copy


def first_delivered(headers: Headers, traceparent: str) -> dict[str, Any]:
    """The headers of the first delivery of a round (its first attempt, or the first after a
    replay), with ``traceparent``, its span's context: every copy a worker makes keeps it, so
    a retried delivery's span can link to that one."""
    return {**headers, FIRST_DELIVERY_HEADER: traceparent}


# -- written by a replay ------------------------------------------------------------------


def replayed(headers: Headers) -> dict[str, Any]:
    """The headers of a replayed copy: no trace of the failure, one more replay counted."""
    copy = {k: v for k, v in headers.items() if k not in _FAILURE}
    copy[REPLAY_COUNT_HEADER] = replays(headers) + 1
    return copy


# -- read ---------------------------------------------------------------------------------


def attempt(headers: Headers) -> int:
    """The attempt this delivery is (1 for the first)."""
    value = headers.get(ATTEMPT_HEADER)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, bytes | str):
        with contextlib.suppress(ValueError):
            return max(1, int(value))
    return 1


def attempts(headers: Headers, *, deliveries_count: bool) -> int | None:
    """How often a worker tried the event; else, when ``deliveries_count`` (a DLQ, where the
    delivery limit dead-letters), how often the broker delivered it."""
    tried = _int(headers.get(ATTEMPT_HEADER))
    if tried is not None or not deliveries_count:
        return tried
    return _int(headers.get(DELIVERY_COUNT_HEADER))


def tried(headers: Headers) -> bool:
    """Whether a worker already counted an attempt (a retry, or a deferred delivery): False
    for the first delivery of a round (fresh from the ingress, or replayed)."""
    return _int(headers.get(ATTEMPT_HEADER)) is not None


def first_delivery(headers: Headers) -> str | None:
    """The ``traceparent`` of the first delivery of the round (see :func:`first_delivered`)."""
    return _str(headers.get(FIRST_DELIVERY_HEADER))


def replays(headers: Headers) -> int:
    """How often the event was replayed."""
    return _int(headers.get(REPLAY_COUNT_HEADER)) or 0


def event_routing_key(headers: Headers) -> str | None:
    """The event's own routing key, kept while it went through retry tiers or a DLQ."""
    return _str(headers.get(ROUTING_KEY_HEADER))


def company(headers: Headers) -> str | None:
    """The company the ingress read from the event (or its URL)."""
    return _str(headers.get(COMPANY_HEADER))


def error(headers: Headers) -> str | None:
    """The handler's error, or why the ingress quarantined the event."""
    return _str(headers.get(ERROR_HEADER)) or _str(headers.get(INVALID_REASON_HEADER))


def reason(headers: Headers) -> str | None:
    """Why it was dead-lettered: the worker's reason, else RabbitMQ's first death reason."""
    return _str(headers.get(DEAD_LETTER_REASON_HEADER)) or _str(
        headers.get(FIRST_DEATH_REASON_HEADER)
    )


def parked_at(headers: Headers) -> datetime | None:
    """When it was parked: the worker's stamp, else RabbitMQ's first death, else when the
    ingress received it."""
    stamp = _str(headers.get(DEAD_LETTERED_AT_HEADER))
    if stamp:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    deaths = headers.get(DEATH_HEADER)
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        when = deaths[0].get("time")
        if isinstance(when, datetime):
            return when if when.tzinfo else when.replace(tzinfo=UTC)
    received = _int(headers.get(RECEIVED_AT_HEADER))
    if received is not None:
        return datetime.fromtimestamp(received / 1000, tz=UTC)
    return None


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
        with contextlib.suppress(ValueError):
            return int(value)
    return None


__all__ = [
    "HANDLER_TEXT",
    "attempt",
    "attempts",
    "company",
    "dead_lettered",
    "deferred",
    "error",
    "event_routing_key",
    "first_delivered",
    "first_delivery",
    "parked_at",
    "reason",
    "replayed",
    "replays",
    "retried",
    "tried",
]
