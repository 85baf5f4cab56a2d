"""The client: list, create, update and delete webhooks, with bounded retries."""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
import structlog

from router.attentive import errors
from router.attentive.settings import TOKEN_VARIABLE, WEBHOOKS_SCOPE, AttentiveSettings
from router.attentive.webhooks import Created, Webhook, optional_text

_MAX_MESSAGE_CHARS = 300


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
                "Authorization": f"Bearer {self._settings.token.reveal()}",
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
            raise errors.AttentiveProtocolError("Attentive's webhook list has no 'webhooks' array")
        return [Webhook.from_json(item) for item in items]

    async def get_webhook(self, webhook_id: str) -> Webhook:
        """One webhook, found by listing (the API has no single-webhook GET)."""
        for webhook in await self.list_webhooks():
            if webhook.id == webhook_id:
                return webhook
        raise errors.AttentiveNotFound(f"Attentive has no webhook {webhook_id!r}", status=404)

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
                except errors.AttentiveUnavailable as error:
                    raise errors.AttentiveUnavailable(
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
        if isinstance(outcome, dict) and optional_text(outcome.get("id")) is not None:
            return Created(Webhook.from_json(outcome))
        try:
            found = await self._find_created(url, events, before)
        except errors.AttentiveUnavailable as error:
            raise errors.AttentiveUnavailable(
                f"Attentive created the webhook but returned no id, then could not list the "
                f"webhooks to find it ({error})",
                status=error.status,
            ) from None
        if found is None:
            raise errors.AttentiveProtocolError(
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
        """``DELETE /webhooks/{id}``: 204; :class:`~router.attentive.errors.AttentiveNotFound`
        when there is none."""
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
            raise errors.AttentiveProtocolError(
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
            raise errors.AttentiveUnavailable(
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
    ) -> errors.AttentiveError:
        message = self._scrub(_error_message(raw))
        if status in (401, 403):
            what = (
                "Attentive refused the token (401)"
                if status == 401
                else "Attentive refused the request (403 forbidden)"
            )
            return errors.AttentiveAuthError(
                f"{what}: check {TOKEN_VARIABLE} and that the token has the {WEBHOOKS_SCOPE} scope",
                status=status,
            )
        if status == 404:
            what = f"no webhook {webhook_id!r}" if webhook_id is not None else f"no {path}"
            return errors.AttentiveNotFound(f"Attentive has {what} (404)", status=status)
        if 200 <= status < 300:
            return errors.AttentiveProtocolError(
                f"Attentive answered {status} to {method} {path}, not the documented status",
                status=status,
            )
        return errors.AttentiveRejected(
            f"Attentive rejected {method} {path} ({status}): {message}", status=status
        )

    async def _pause_or_give_up(
        self, method: str, path: str, attempt: int, outcome: _Transient, *, suffix: str = ""
    ) -> None:
        """Wait before the next try, or raise :class:`~router.attentive.errors.AttentiveUnavailable`
        when none is left."""
        settings = self._settings
        failed = f"{method} {path} failed after {attempt} {'try' if attempt == 1 else 'tries'}"
        if outcome.retry_after is not None and outcome.retry_after > settings.max_delay:
            raise errors.AttentiveUnavailable(
                f"{failed}: Attentive {outcome.reason} and asks to wait "
                f"{outcome.retry_after:g} s: try again later{suffix}",
                status=outcome.status,
            )
        if attempt >= settings.attempts:
            raise errors.AttentiveUnavailable(
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
        return text.replace(self._settings.token.reveal(), "[redacted]")

    def _log(self) -> Any:
        # looked up each time: the structlog configuration in force now (capture_logs too)
        return (
            self._logger if self._logger is not None else structlog.get_logger("router.attentive")
        )


def _decode(raw: bytes, status: int) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise errors.AttentiveProtocolError(
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


__all__ = ["AttentiveClient"]
