"""The attribute-forwarder worker: every ``custom_attribute.set`` is POSTed, as JSON, to one URL.

What the target answers decides the delivery: 2xx is done; 408, 429 and 5xx, a timeout or a
connection error are retried through the policy's delays (then dead-lettered); any other 4xx
(or a redirect) is dead-lettered at once, since sending the same request again cannot help.
Each request carries ``Idempotency-Key: <message id>``, the same on every retry.

Newest wins per subscriber and attribute (``newest="attribute"``): an attribute set that
arrives after a newer set of the same attribute (Attentive's retries, our own retry tiers, a
dead-letter replay) is not sent, so the target never gets an older value over a newer one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, TypeVar

import aiohttp
import orjson
from yarl import URL

from consumers.runtime.errors import Reject, Retry, WorkerConfigError
from consumers.runtime.event import Event
from consumers.runtime.retry import RetryPolicy
from consumers.runtime.worker import Worker

APP = "attribute-forwarder"
USER_AGENT = "attentive-router attribute-forwarder"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_N = TypeVar("_N", int, float)


class ForwardFailed(Exception):
    """The target did not take the attribute this time (5xx, 408, 429, timeout, no connection):
    an ordinary exception, so the runtime retries it."""


@dataclass(frozen=True, slots=True)
class ForwarderConfig:
    """Where to forward, how long to wait, what to include, how to retry."""

    url: URL
    timeout: float = 10.0
    include_contact: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ForwarderConfig:
        """Read the ``ATTRIBUTE_FORWARDER_*`` variables; :class:`WorkerConfigError` if wrong."""
        raw_url = env.get("ATTRIBUTE_FORWARDER_URL", "").strip()
        if not raw_url:
            raise WorkerConfigError(
                "ATTRIBUTE_FORWARDER_URL is required: the http(s) URL to POST attributes to"
            )
        url = URL(raw_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise WorkerConfigError(
                f"ATTRIBUTE_FORWARDER_URL must be an http(s) URL, not {_redacted(url)!r}"
            )
        timeout = _number(env, "ATTRIBUTE_FORWARDER_TIMEOUT", "10", float)
        if not 0 < timeout < math.inf:
            raise WorkerConfigError("ATTRIBUTE_FORWARDER_TIMEOUT must be positive (seconds)")
        flag = env.get("ATTRIBUTE_FORWARDER_INCLUDE_CONTACT", "").strip().lower()
        if flag not in _TRUE | _FALSE:
            raise WorkerConfigError(
                f"ATTRIBUTE_FORWARDER_INCLUDE_CONTACT must be 1 or 0, not {flag!r}"
            )
        delays_text = env.get("ATTRIBUTE_FORWARDER_RETRY_DELAYS", "").strip() or "5,30,300,1800"
        try:
            delays = tuple(float(part) for part in delays_text.split(","))
            if not all(math.isfinite(delay) for delay in delays):
                raise ValueError("not finite")
        except ValueError:
            raise WorkerConfigError(
                "ATTRIBUTE_FORWARDER_RETRY_DELAYS must be comma-separated seconds "
                f"(such as 5,30,300,1800), not {delays_text!r}"
            ) from None
        max_attempts = _number(env, "ATTRIBUTE_FORWARDER_MAX_ATTEMPTS", "5", int)
        try:
            retry = RetryPolicy(delays=delays, max_attempts=max_attempts)
        except ValueError as error:
            raise WorkerConfigError(
                f"ATTRIBUTE_FORWARDER_RETRY_DELAYS / _MAX_ATTEMPTS: {error}"
            ) from None
        return cls(url=url, timeout=timeout, include_contact=flag in _TRUE, retry=retry)


def _number(env: Mapping[str, str], name: str, default: str, kind: type[_N]) -> _N:
    text = env.get(name, "").strip() or default
    try:
        return kind(text)
    except ValueError:
        raise WorkerConfigError(f"{name} must be a number, not {text!r}") from None


def _redacted(url: URL) -> str:
    """The URL without credentials, query or fragment: safe for logs and dead-letter headers."""
    return str(url.with_user(None).with_query(None).with_fragment(None))


class AttributeForwarder:
    """One HTTP session (opened at start-up) and the request each event becomes."""

    def __init__(self, config: ForwarderConfig) -> None:
        self.config = config
        self.target = _redacted(config.url)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            headers={"User-Agent": USER_AGENT},
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def body(self, event: Event) -> dict[str, Any]:
        """The JSON the target receives; :class:`Reject` when the event has nothing to send."""
        prop = event.payload.get("user_property")
        name = prop.get("name") if isinstance(prop, dict) else None
        if not isinstance(prop, dict) or not isinstance(name, str) or not name:
            raise Reject("custom_attribute.set without user_property.name")
        subscriber: dict[str, Any] = {"external_id": event.subscriber.get("external_id")}
        if self.config.include_contact:
            for key in ("phone", "email"):
                if event.subscriber.get(key):
                    subscriber[key] = event.subscriber[key]
        if len(subscriber) == 1 and subscriber["external_id"] is None:
            raise Reject("custom_attribute.set without a subscriber external_id")
        stamp = event.timestamp
        return {
            "company_id": event.company_id,
            "subscriber": subscriber,
            "attribute": {"name": name, "value": prop.get("value")},
            "timestamp": (
                stamp.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                if stamp is not None
                else None
            ),
            "message_id": event.message_id,
        }

    async def forward(self, event: Event) -> None:
        """POST the event's attribute; return on 2xx, raise to retry or dead-letter otherwise."""
        if self._session is None:
            raise RuntimeError("the HTTP session is not open (on_startup has not run)")
        body = orjson.dumps(self.body(event))
        headers = {"Content-Type": "application/json", "Idempotency-Key": event.message_id}
        try:
            async with self._session.post(
                self.config.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                if 200 <= response.status < 300:
                    return
                text = (await response.content.read(200)).decode("utf-8", "replace")
                retry_after = _seconds(response.headers.get("Retry-After"))
        except TimeoutError:
            raise ForwardFailed(
                f"POST {self.target} timed out after {self.config.timeout:g} s"
            ) from None
        except aiohttp.ClientError as error:
            raise ForwardFailed(f"POST {self.target} failed: {error!r}") from None
        what = f"POST {self.target} answered {response.status}: {text.strip()[:200]!r}"
        if response.status in (408, 429) or response.status >= 500:
            if retry_after is not None:
                raise Retry(what, delay=retry_after)  # the tier that waits at least that long
            raise ForwardFailed(what)
        raise Reject(what)  # other 4xx (and 3xx): the same request cannot succeed later


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` of seconds (an HTTP date is ignored: the policy's delay applies)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def build_worker(env: Mapping[str, str] = os.environ) -> Worker:
    """The worker, configured from ``ATTRIBUTE_FORWARDER_*`` (read now, once)."""
    config = ForwarderConfig.from_env(env)
    forwarder = AttributeForwarder(config)
    worker = Worker(APP, retry=config.retry)
    worker.on_startup.append(forwarder.open)
    worker.on_shutdown.append(forwarder.close)

    @worker.on("custom_attribute.set", newest="attribute")
    async def forward(event: Event) -> None:
        await forwarder.forward(event)

    return worker


__all__ = [
    "APP",
    "AttributeForwarder",
    "ForwardFailed",
    "ForwarderConfig",
    "build_worker",
]
