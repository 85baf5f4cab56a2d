"""A webhook as Attentive describes it, and the checks the CLI runs before sending one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from router.attentive.errors import AttentiveProtocolError, InvalidWebhookInput
from router.claims.model import EventPattern, PatternKind
from router.contract.events import EVENT_TYPES, KNOWN_TYPES
from router.errors import InvalidClaim

_MAX_URL_LENGTH = 2048


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
        webhook_id = optional_text(data.get("id"))
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
            type=optional_text(data.get("type")),
            company_id=optional_text(data.get("companyId")),
            disabled_at=optional_text(data.get("disabledAt")),
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


def optional_text(value: object) -> str | None:
    """A JSON id or text as a string; None for null, empty, booleans and anything else."""
    if isinstance(value, bool) or value is None or value == "":
        return None
    if isinstance(value, int | str):
        return str(value)
    return None


# -- validation (used by the CLI before anything is sent) ------------------------------------


def validate_webhook_url(url: str, *, field: str = "url") -> str:
    """An ``https://`` URL with a host, no credentials and no fragment (``field`` names it)."""
    if any(c.isspace() or not c.isprintable() for c in url) or len(url) > _MAX_URL_LENGTH:
        raise InvalidWebhookInput(
            f"must be a URL without spaces, at most {_MAX_URL_LENGTH} characters", field=field
        )
    parts = urlsplit(url)
    if parts.scheme.lower() != "https":
        raise InvalidWebhookInput(f"must be an https:// URL, not {url!r}", field=field)
    if "@" in parts.netloc:
        raise InvalidWebhookInput("must not carry a user or password", field=field)
    try:
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise InvalidWebhookInput(f"has an invalid port: {url!r}", field=field) from None
    if not parts.hostname:
        raise InvalidWebhookInput(f"has no host: {url!r}", field=field)
    if parts.fragment:
        raise InvalidWebhookInput(f"must not have a #fragment: {url!r}", field=field)
    return url


def subscription_url(router_base_url: str, company_id: str) -> str:
    """This router's subscription webhook URL for one company:
    ``<router_base_url>/webhooks/attentive/<company_id>``."""
    if not company_id or any(c.isspace() or not c.isprintable() for c in company_id):
        raise InvalidWebhookInput("must be a non-empty id without spaces", field="company_id")
    validate_webhook_url(router_base_url, field="router_base_url")
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
        raise InvalidWebhookInput("needs at least one event type, e.g. 'sms.*'", field="events")
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


__all__ = [
    "Created",
    "Webhook",
    "optional_text",
    "resolve_events",
    "subscription_url",
    "validate_webhook_url",
]
