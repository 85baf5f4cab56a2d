"""The event a handler receives: the parsed webhook plus its delivery facts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from consumers.runtime.errors import Reject
from router.contract.events import message_id as hash_message_id
from router.contract.names import REPLAY_JOB_HEADER


@dataclass(frozen=True, slots=True)
class Event:
    """One Attentive event as delivered to a handler."""

    type: str
    company_id: str
    #: ``subscriber`` of the payload: ``external_id``, ``phone``, ``email``, ...
    subscriber: Mapping[str, Any]
    #: When Attentive says it happened (the payload's ``timestamp``), if it says.
    timestamp: datetime | None
    #: The whole parsed payload.
    payload: Mapping[str, Any]
    #: The body exactly as Attentive sent it (the signature covers these bytes).
    raw: bytes
    #: Hex SHA-256 of ``raw``: the same on every Attentive retry, the idempotency key.
    message_id: str
    #: 1 on the first attempt at handling it, 2 on the first retry, ...
    attempt: int = 1
    routing_key: str = ""
    headers: Mapping[str, Any] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        """What one handling is counted by: the message id; for a backfill's copy of an
        archived event, the message id within that job (the event may have been handled
        before: a backfill is asked for to handle it again, once)."""
        job = self.headers.get(REPLAY_JOB_HEADER)
        if type(job) is int:
            return f"{self.message_id}@backfill-{job}"
        return self.message_id

    @classmethod
    def from_body(
        cls,
        body: bytes,
        *,
        message_id: str | None = None,
        attempt: int = 1,
        routing_key: str = "",
        headers: Mapping[str, Any] | None = None,
    ) -> Event:
        """Parse a body the router published; :class:`Reject` if it is not an event."""
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Reject("the body is not JSON") from None
        if not isinstance(payload, dict):
            raise Reject("the body is not a JSON object")
        company = payload.get("company")
        company_id = company.get("company_id") if isinstance(company, dict) else None
        event_type = payload.get("type")
        if not isinstance(event_type, str) or not isinstance(company_id, str):
            raise Reject("the body has no type or company.company_id")
        subscriber = payload.get("subscriber")
        stamp = payload.get("timestamp")
        timestamp = (
            datetime.fromtimestamp(stamp / 1000, tz=UTC)
            if type(stamp) is int and 0 <= stamp < 253_402_300_800_000
            else None
        )
        return cls(
            type=event_type,
            company_id=company_id,
            subscriber=subscriber if isinstance(subscriber, dict) else {},
            timestamp=timestamp,
            payload=payload,
            raw=body,
            message_id=message_id or hash_message_id(body),
            attempt=attempt,
            routing_key=routing_key,
            headers=dict(headers or {}),
        )


__all__ = ["Event"]
