"""A client of Attentive's Webhooks API: list, create, update and delete webhooks.

``https://api.attentivemobile.com/v1`` with an OAuth bearer token that has the
``webhooks:write`` scope. The client copes with the API's quirks:

- a create answer may omit the new webhook's ``id``: the client finds it by listing
  (same url and events, not among the webhooks that existed before) and says so;
- ``PUT`` needs ``url``, ``events`` and ``disabled`` together (callers merge, see the CLI);
- 429, 5xx, timeouts and connection failures are retried a bounded number of times with
  exponential backoff, honouring ``Retry-After``. A create is not blindly repeated when its
  first try may have taken effect (5xx, timeout, dropped connection): the client first lists,
  and a webhook that appeared counts as created, so a retry never makes a duplicate webhook.

The token lives only in the session's ``Authorization`` header: no error, log line or repr
carries it (answers quoted in errors are scrubbed of it too).
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
import structlog

from router.claims.model import EventPattern, PatternKind
from router.errors import ConfigError, InvalidClaim, RouterError
from router.events import EVENT_TYPES, KNOWN_TYPES

#: Attentive's API (``ATTENTIVE_API_URL`` overrides it, e.g. for a local fake).
DEFAULT_API_URL = "https://api.attentivemobile.com/v1"
#: The OAuth scope the token needs.
WEBHOOKS_SCOPE = "webhooks:write"
TOKEN_VARIABLE = "ATTENTIVE_API_TOKEN"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_MAX_URL_LENGTH = 2048
_MAX_MESSAGE_CHARS = 300


# -- errors ---------------------------------------------------------------------------------


class AttentiveError(RouterError):
    """Root of the failures of a call to Attentive; its message is one line without the token."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        #: Attentive's HTTP status, when it answered.
        self.status = status


class AttentiveAuthError(AttentiveError):
    """401 or 403: the token is wrong, expired, or lacks the ``webhooks:write`` scope."""


class AttentiveNotFound(AttentiveError):
    """404, or no webhook with that id in the listing."""


class AttentiveRejected(AttentiveError):
    """400 (or another 4xx): Attentive refused the request; its own message is quoted."""


class AttentiveUnavailable(AttentiveError):
    """429, 5xx, a timeout or a network failure, still so after the last try."""


class AttentiveProtocolError(AttentiveError):
    """An answer the client cannot read, or a created webhook it cannot identify."""


class InvalidWebhookInput(RouterError):
    """A webhook URL or event list refused before anything is sent (CLI exit code 2)."""


# -- settings -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AttentiveSettings:
    """How to reach Attentive: read once at the edge (:meth:`from_env`), then passed down."""

    token: str = field(repr=False)
    base_url: str = DEFAULT_API_URL
    #: Tries per request (the first one included).
    attempts: int = 3
    #: Seconds before the second try; doubled before each further one.
    retry_delay: float = 0.5
    #: No single wait is longer; a longer ``Retry-After`` ends the retries at once.
    max_delay: float = 30.0
    #: Seconds per request.
    timeout: float = 15.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, base_url: str | None = None) -> AttentiveSettings:
        """``ATTENTIVE_API_TOKEN`` (required), ``ATTENTIVE_API_URL``, ``ATTENTIVE_API_ATTEMPTS``,
        ``ATTENTIVE_API_RETRY_DELAY``, ``ATTENTIVE_API_TIMEOUT``; :class:`ConfigError` if wrong.
        """
        token = env.get(TOKEN_VARIABLE, "").strip()
        if not token:
            raise ConfigError(
                f"no Attentive API token: set {TOKEN_VARIABLE} "
                f"(an OAuth token with the {WEBHOOKS_SCOPE} scope)"
            )
        settings = cls(
            token=token,
            base_url=base_url or env.get("ATTENTIVE_API_URL", "").strip() or DEFAULT_API_URL,
            attempts=_env_number(env, "ATTENTIVE_API_ATTEMPTS", 3, int),
            retry_delay=_env_number(env, "ATTENTIVE_API_RETRY_DELAY", 0.5, float),
            timeout=_env_number(env, "ATTENTIVE_API_TIMEOUT", 15.0, float),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that cannot work."""
        if not self.token or any(c.isspace() or not c.isprintable() for c in self.token):
            # never quote the token, not even a wrong one
            raise ConfigError(f"{TOKEN_VARIABLE} must be one word without spaces")
        parts = urlsplit(self.base_url)
        secure = parts.scheme == "https" or (
            parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
        )
        if not secure or not parts.hostname:
            raise ConfigError(
                "ATTENTIVE_API_URL must be an https:// URL (plain http only to localhost), "
                f"not {self.base_url!r}"
            )
        if not 1 <= self.attempts <= 10:
            raise ConfigError("ATTENTIVE_API_ATTEMPTS must be between 1 and 10")
        if not (math.isfinite(self.retry_delay) and self.retry_delay >= 0):
            raise ConfigError("ATTENTIVE_API_RETRY_DELAY must be a number of seconds (>= 0)")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigError("ATTENTIVE_API_TIMEOUT must be a positive number of seconds")


_N = TypeVar("_N", int, float)


def _env_number(env: Mapping[str, str], name: str, default: _N, kind: Callable[[str], _N]) -> _N:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None


# -- webhooks -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Webhook:
    """One of Attentive's webhooks."""

    id: str
    url: str
    events: tuple[str, ...]
    #: ``SUBSCRIPTION`` or ``STATIC`` (None when the answer did not say, as on create).
    type: str | None = None
    #: The company whose events it receives; None for a universal (static) webhook.
    company_id: str | None = None
    #: ``YYYY-MM-DD hh:mm:ss`` when disabled, None while enabled.
    disabled_at: str | None = None

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None

    def to_json(self) -> dict[str, Any]:
        """Attentive's field names, plus ``enabled``."""
        return {
            "id": self.id,
            "url": self.url,
            "type": self.type,
            "events": list(self.events),
            "companyId": self.company_id,
            "disabledAt": self.disabled_at,
            "enabled": self.enabled,
        }

    @classmethod
    def from_json(cls, data: object) -> Webhook:
        """Read one webhook of an answer; :class:`AttentiveProtocolError` when malformed."""
        if not isinstance(data, dict):
            raise AttentiveProtocolError("Attentive answered a webhook that is not an object")
        webhook_id = _optional_text(data.get("id"))
        url = data.get("url")
        events = data.get("events")
        if (
            webhook_id is None
            or not isinstance(url, str)
            or not isinstance(events, list)
            or not all(isinstance(e, str) for e in events)
        ):
            raise AttentiveProtocolError(
                "Attentive answered a webhook without a usable id, url or events list"
            )
        return cls(
            id=webhook_id,
            url=url,
            events=tuple(events),
            type=_optional_text(data.get("type")),
            company_id=_optional_text(data.get("companyId")),
            disabled_at=_optional_text(data.get("disabledAt")),
        )

    def same_target(self, url: str, events: Iterable[str]) -> bool:
        """Same URL and the same set of events (Attentive may reorder them)."""
        return self.url == url and set(self.events) == set(events)


@dataclass(frozen=True, slots=True)
class Created:
    """A created webhook, and how its id was learnt."""

    webhook: Webhook
    #: True when Attentive's answer did not carry the id (or was lost) and a listing found it.
    id_from_listing: bool = False
    #: A sentence for the operator when ``id_from_listing``.
    note: str | None = None


def _optional_text(value: object) -> str | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    if isinstance(value, int | str):
        return str(value)
    return None


# -- validation (used by the CLI before anything is sent) ------------------------------------


def validate_webhook_url(url: str, *, what: str = "--url") -> str:
    """An ``https://`` URL with a host, no credentials and no fragment."""
    if any(c.isspace() or not c.isprintable() for c in url) or len(url) > _MAX_URL_LENGTH:
        raise InvalidWebhookInput(
            f"{what} must be a URL without spaces, at most {_MAX_URL_LENGTH} characters"
        )
    parts = urlsplit(url)
    if parts.scheme.lower() != "https":
        raise InvalidWebhookInput(f"{what} must be an https:// URL, not {url!r}")
    if "@" in parts.netloc:
        raise InvalidWebhookInput(f"{what} must not carry a user or password")
    try:
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise InvalidWebhookInput(f"{what} has an invalid port: {url!r}") from None
    if not parts.hostname:
        raise InvalidWebhookInput(f"{what} has no host: {url!r}")
    if parts.fragment:
        raise InvalidWebhookInput(f"{what} must not have a #fragment: {url!r}")
    return url


def subscription_url(router_base_url: str, company_id: str) -> str:
    """This router's subscription webhook URL for one company:
    ``<router-base-url>/webhooks/attentive/<company_id>``."""
    if not company_id or any(c.isspace() or not c.isprintable() for c in company_id):
        raise InvalidWebhookInput("--company-id must be a non-empty id without spaces")
    validate_webhook_url(router_base_url, what="--router-base-url")
    base = router_base_url.rstrip("/")
    return validate_webhook_url(f"{base}/webhooks/attentive/{quote(company_id, safe='')}")


def resolve_events(texts: Iterable[str]) -> tuple[str, ...]:
    """Event names and patterns (``sms.*``, ``*``; commas allowed) as the concrete types to send.

    Names are case sensitive, as at Attentive. The result follows :data:`EVENT_TYPES` order,
    without repeats; :class:`InvalidWebhookInput` names the first item that is not one of the
    11 types and matches none of them.
    """
    wanted: set[str] = set()
    items = [item.strip() for text in texts for item in text.split(",") if item.strip()]
    if not items:
        raise InvalidWebhookInput("give at least one event type, e.g. --events 'sms.*'")
    for item in items:
        if item in KNOWN_TYPES:
            wanted.add(item)
            continue
        try:
            pattern = EventPattern.parse(item)
        except InvalidClaim:
            pattern = None
        matched = (
            [t for t in EVENT_TYPES if pattern.matches(t)]
            if pattern is not None and pattern.kind is not PatternKind.EXACT
            else []
        )
        if not matched:
            raise InvalidWebhookInput(_unknown_event_message(item))
        wanted.update(matched)
    return tuple(t for t in EVENT_TYPES if t in wanted)


def _unknown_event_message(item: str) -> str:
    hint = ""
    lowered = item.lower()
    if lowered != item and (lowered in KNOWN_TYPES or _is_known_pattern(lowered)):
        hint = f" (event names are case sensitive: did you mean {lowered!r}?)"
    return (
        f"unknown event type {item!r}{hint}; use one of {', '.join(EVENT_TYPES)}, "
        "a channel pattern such as sms.* or * for all 11"
    )


def _is_known_pattern(text: str) -> bool:
    try:
        pattern = EventPattern.parse(text)
    except InvalidClaim:
        return False
    return any(pattern.matches(t) for t in EVENT_TYPES)


# -- the client -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Transient:
    """A failed try that another try may fix."""

    #: "answered 503", "did not answer within 15 s", ...
    reason: str
    status: int | None = None
    #: Seconds Attentive asked to wait (Retry-After).
    retry_after: float | None = None
    #: Whether the request may have taken effect (5xx, timeout, a connection lost mid-way).
    maybe_applied: bool = True


Sleep = Callable[[float], Awaitable[None]]


class AttentiveClient:
    """``async with AttentiveClient(settings) as attentive: await attentive.list_webhooks()``."""

    def __init__(
        self, settings: AttentiveSettings, *, sleep: Sleep = asyncio.sleep, logger: Any = None
    ) -> None:
        self._settings = settings
        self._base = settings.base_url.rstrip("/")
        self._host = urlsplit(self._base).netloc
        self._sleep = sleep
        self._logger = logger
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"AttentiveClient(base_url={self._base!r})"

    async def __aenter__(self) -> AttentiveClient:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._settings.timeout),
            headers={
                "Authorization": f"Bearer {self._settings.token}",
                "Accept": "application/json",
            },
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the four operations ----------------------------------------------------------------

    async def list_webhooks(self) -> list[Webhook]:
        """``GET /webhooks``: every webhook the token can see."""
        body = await self._request("GET", "/webhooks", expect=(200,))
        items = body.get("webhooks") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise AttentiveProtocolError("Attentive's webhook list has no 'webhooks' array")
        return [Webhook.from_json(item) for item in items]

    async def get_webhook(self, webhook_id: str) -> Webhook:
        """One webhook, found by listing (the API has no single-webhook GET)."""
        for webhook in await self.list_webhooks():
            if webhook.id == webhook_id:
                return webhook
        raise AttentiveNotFound(f"Attentive has no webhook {webhook_id!r}", status=404)

    async def create_webhook(
        self, url: str, events: Sequence[str], *, existing: Iterable[Webhook] | None = None
    ) -> Created:
        """``POST /webhooks``; a webhook cannot be created disabled (update it afterwards).

        ``existing`` is the listing from before (listed here when None): a webhook not in it,
        with this url and these events, is the one made, should the answer lack the id or a
        try fail in a way that may have created it.
        """
        before = {w.id for w in (existing if existing is not None else await self.list_webhooks())}
        payload = {"url": url, "events": list(events)}
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._send("POST", "/webhooks", payload, expect=(200, 201))
            if not isinstance(outcome, _Transient):
                break
            if outcome.maybe_applied:
                try:
                    found = await self._find_created(url, events, before)
                except AttentiveUnavailable as error:
                    raise AttentiveUnavailable(
                        f"Attentive {outcome.reason} to the create, then could not list the "
                        f"webhooks ({error}); it may have been made: check "
                        "`attentive-router attentive webhooks list`",
                        status=outcome.status,
                    ) from None
                if found is not None:
                    return Created(
                        found,
                        id_from_listing=True,
                        note=f"Attentive {outcome.reason} to the create, but webhook "
                        f"{found.id} had been made: found it by listing",
                    )
            checked = "; no webhook was made (checked by listing)" if outcome.maybe_applied else ""
            await self._pause_or_give_up("POST", "/webhooks", attempt, outcome, suffix=checked)
        if isinstance(outcome, dict) and _optional_text(outcome.get("id")) is not None:
            return Created(Webhook.from_json(outcome))
        try:
            found = await self._find_created(url, events, before)
        except AttentiveUnavailable as error:
            raise AttentiveUnavailable(
                f"Attentive created the webhook but returned no id, then could not list the "
                f"webhooks to find it ({error})",
                status=error.status,
            ) from None
        if found is None:
            raise AttentiveProtocolError(
                "Attentive created the webhook but returned no id, and no new webhook with "
                "this url and events is listed: check `attentive-router attentive webhooks list`"
            )
        return Created(
            found,
            id_from_listing=True,
            note=f"Attentive's answer carried no webhook id; found {found.id} by listing",
        )

    async def update_webhook(
        self, webhook_id: str, *, url: str, events: Sequence[str], disabled: bool
    ) -> Webhook:
        """``PUT /webhooks/{id}``: Attentive wants all three fields every time."""
        body = await self._request(
            "PUT",
            f"/webhooks/{quote(webhook_id, safe='')}",
            json={"url": url, "events": list(events), "disabled": disabled},
            expect=(200,),
            webhook_id=webhook_id,
        )
        return Webhook.from_json(body)  # shaped like a create answer: no companyId

    async def delete_webhook(self, webhook_id: str) -> None:
        """``DELETE /webhooks/{id}``: 204, :class:`AttentiveNotFound` when there is none."""
        await self._request(
            "DELETE",
            f"/webhooks/{quote(webhook_id, safe='')}",
            expect=(200, 204),
            webhook_id=webhook_id,
        )

    # -- plumbing ---------------------------------------------------------------------------

    async def _find_created(
        self, url: str, events: Iterable[str], before: set[str]
    ) -> Webhook | None:
        wanted = set(events)
        new = [
            w
            for w in await self.list_webhooks()
            if w.id not in before and w.same_target(url, wanted)
        ]
        if len(new) > 1:
            ids = ", ".join(w.id for w in new)
            raise AttentiveProtocolError(
                f"Attentive returned no id, and several new webhooks have this url and events "
                f"({ids}): check `attentive-router attentive webhooks list`"
            )
        return new[0] if new else None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        expect: tuple[int, ...],
        json: Any = None,
        webhook_id: str | None = None,
    ) -> Any:
        """Send with retries (these requests are idempotent); the decoded body."""
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._send(method, path, json, expect=expect, webhook_id=webhook_id)
            if not isinstance(outcome, _Transient):
                return outcome
            await self._pause_or_give_up(method, path, attempt, outcome)

    async def _send(
        self,
        method: str,
        path: str,
        json: Any,
        *,
        expect: tuple[int, ...],
        webhook_id: str | None = None,
    ) -> Any:
        """One try: the decoded body, a :class:`_Transient`, or a permanent error raised."""
        if self._session is None:
            raise RuntimeError("use AttentiveClient as an async context manager")
        try:
            async with self._session.request(method, self._base + path, json=json) as response:
                status = response.status
                raw = await response.read()
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except aiohttp.ClientSSLError as error:
            raise AttentiveUnavailable(
                f"cannot reach Attentive at {self._host}: TLS failed ({type(error).__name__})"
            ) from None
        except aiohttp.ClientConnectorError as error:
            # never connected: nothing was sent, any request may be tried again
            return _Transient(f"could not be reached: {_describe(error)}", maybe_applied=False)
        except TimeoutError:
            return _Transient(f"did not answer within {self._settings.timeout:g} s")
        except aiohttp.ClientError as error:
            return _Transient(f"dropped the connection: {_describe(error)}")
        if status in expect:
            return _decode(raw, status) if raw else None
        if status == 429:
            return _Transient(
                "rate-limited the request (429)",
                status=status,
                retry_after=retry_after,
                maybe_applied=False,
            )
        if status >= 500:
            return _Transient(f"answered {status}", status=status, retry_after=retry_after)
        raise self._permanent(status, raw, method, path, webhook_id)

    def _permanent(
        self, status: int, raw: bytes, method: str, path: str, webhook_id: str | None
    ) -> AttentiveError:
        message = self._scrub(_error_message(raw))
        if status in (401, 403):
            what = (
                "Attentive refused the token (401)"
                if status == 401
                else "Attentive refused the request (403 forbidden)"
            )
            return AttentiveAuthError(
                f"{what}: check {TOKEN_VARIABLE} and that the token has the {WEBHOOKS_SCOPE} scope",
                status=status,
            )
        if status == 404:
            what = f"no webhook {webhook_id!r}" if webhook_id is not None else f"no {path}"
            return AttentiveNotFound(f"Attentive has {what} (404)", status=status)
        if 200 <= status < 300:
            return AttentiveProtocolError(
                f"Attentive answered {status} to {method} {path}, not the documented status",
                status=status,
            )
        return AttentiveRejected(
            f"Attentive rejected {method} {path} ({status}): {message}", status=status
        )

    async def _pause_or_give_up(
        self, method: str, path: str, attempt: int, outcome: _Transient, *, suffix: str = ""
    ) -> None:
        """Wait before the next try, or raise :class:`AttentiveUnavailable` when none is left."""
        settings = self._settings
        failed = f"{method} {path} failed after {attempt} {'try' if attempt == 1 else 'tries'}"
        if outcome.retry_after is not None and outcome.retry_after > settings.max_delay:
            raise AttentiveUnavailable(
                f"{failed}: Attentive {outcome.reason} and asks to wait "
                f"{outcome.retry_after:g} s: try again later{suffix}",
                status=outcome.status,
            )
        if attempt >= settings.attempts:
            raise AttentiveUnavailable(
                f"{failed}: Attentive {outcome.reason}{suffix}", status=outcome.status
            )
        delay = (
            outcome.retry_after
            if outcome.retry_after is not None
            else min(settings.max_delay, settings.retry_delay * 2 ** (attempt - 1))
        )
        self._log().warning(
            "attentive_retry",
            method=method,
            path=path,
            reason=outcome.reason,
            attempt=attempt,
            attempts=settings.attempts,
            delay_s=round(delay, 3),
        )
        await self._sleep(delay)

    def _scrub(self, text: str) -> str:
        return text.replace(self._settings.token, "[redacted]")

    def _log(self) -> Any:
        # looked up each time: the structlog configuration in force now (capture_logs too)
        return (
            self._logger if self._logger is not None else structlog.get_logger("router.attentive")
        )


def _decode(raw: bytes, status: int) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise AttentiveProtocolError(
            f"Attentive answered {status} with a body that is not JSON", status=status
        ) from None


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _error_message(raw: bytes) -> str:
    """Attentive's explanation in an error body, on one line and not too long."""
    text = ""
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
        text = raw.decode("utf-8", errors="replace")
    if isinstance(body, dict):
        text = _message_of(body) or orjson.dumps(body).decode()
    elif body is not None:
        text = orjson.dumps(body).decode()
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return text or "no details given"


def _message_of(body: dict[str, Any]) -> str:
    for key in ("message", "error", "errors", "detail", "title"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, dict):
            inner = _message_of(value)
            if inner:
                return inner
        if isinstance(value, list):
            parts = [
                item if isinstance(item, str) else _message_of(item)
                for item in value
                if isinstance(item, str | dict)
            ]
            if any(parts):
                return "; ".join(p for p in parts if p)
    return ""


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (a number or an HTTP date); None if absent."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


__all__ = [
    "DEFAULT_API_URL",
    "WEBHOOKS_SCOPE",
    "AttentiveAuthError",
    "AttentiveClient",
    "AttentiveError",
    "AttentiveNotFound",
    "AttentiveProtocolError",
    "AttentiveRejected",
    "AttentiveSettings",
    "AttentiveUnavailable",
    "Created",
    "InvalidWebhookInput",
    "Webhook",
    "resolve_events",
    "subscription_url",
    "validate_webhook_url",
]
