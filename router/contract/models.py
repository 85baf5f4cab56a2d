"""Typed events: one model per event type Attentive documents, decoded from the body in one step.

Pure: no I/O. Each model is a frozen :mod:`msgspec` struct tagged on ``type``, so
:func:`decode` reads a webhook body straight into the model its ``type`` names (about a
microsecond for a realistic body, faster than parsing it into a dict). Parts Attentive may
leave out are optional; fields it adds that these models do not know are ignored (the raw body
keeps them: a worker's :class:`~consumers.runtime.event.Event` has ``payload`` and ``raw``).
A well-formed type that is none of the 11 decodes to a :class:`GenericEvent`, never an error;
a body that does not fit its model raises :class:`EventDoesNotFit`, naming the field.

These models are also the source of the payload schemas the router publishes
(:mod:`router.contract.schemas`, :mod:`router.contract.asyncapi`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any, TypeAlias, TypeVar, cast, get_args

import msgspec
from msgspec import Meta, Struct, field

from router.contract.events import EVENT_TYPES, KNOWN_TYPES
from router.errors import InvalidInput

_MAX_TIMESTAMP_MS = 253_402_300_799_999

Text: TypeAlias = str | None


class Company(Struct, frozen=True, kw_only=True):
    """The company (Attentive's customer) the event is of."""

    company_id: Annotated[str, Meta(description="Attentive's id of the company")]
    display_name: Annotated[Text, Meta(description="its name in Attentive")] = None


class ExternalIdentifiers(Struct, frozen=True, kw_only=True):
    """Identifiers of the subscriber from other systems, when there are any."""

    client_user_id: Annotated[
        str | list[str] | None, Meta(description="the company's own user id(s) of them")
    ] = None
    custom_identifiers: Annotated[
        dict[str, Any] | list[Any] | None,
        Meta(description="identifiers set through Attentive's Subscriptions API"),
    ] = None


class Subscriber(Struct, frozen=True, kw_only=True):
    """Who the event is about (contact details: personal data)."""

    external_id: Annotated[
        int | str | None, Meta(description="Attentive's id of the subscriber (a number)")
    ] = None
    phone: Annotated[Text, Meta(description="E.164 phone number; absent for email only")] = None
    email: Annotated[Text, Meta(description="email address; absent for SMS only")] = None
    external_identifiers: ExternalIdentifiers | None = None


class Creative(Struct, frozen=True, kw_only=True):
    """The sign-up source of a subscription (``TEXT_TO_JOIN``, a form, ...)."""

    name: Text = None
    type: Text = None
    subtype: Text = None


class Subscription(Struct, frozen=True, kw_only=True):
    """What was subscribed to or unsubscribed from."""

    type: Annotated[Text, Meta(description="MARKETING or TRANSACTIONAL")] = None


class Message(Struct, frozen=True, kw_only=True):
    """The message sent, opened, clicked in or received."""

    id: Text = None
    name: Text = None
    type: Annotated[Text, Meta(description="CAMPAIGN, JOURNEY, INBOUND, ...")] = None
    channel: Annotated[Text, Meta(description="TEXT or EMAIL")] = None
    text: Annotated[Text, Meta(description="an SMS's text")] = None
    subject: Annotated[Text, Meta(description="an email's subject")] = None


class Link(Struct, frozen=True, kw_only=True):
    """The link clicked."""

    url: Text = None


class UserProperty(Struct, frozen=True, kw_only=True):
    """The custom attribute set (names are case-sensitive, as in Attentive)."""

    name: Text = None
    value: Annotated[Any, Meta(description="any JSON value")] = None


class _Common(Struct, frozen=True, kw_only=True):
    """What every Attentive event carries."""

    company: Company
    timestamp: (
        Annotated[int, Meta(ge=0, description="when it happened, Unix milliseconds")] | None
    ) = None
    #: Empty (every part None) when the body has none.
    subscriber: Subscriber = field(default_factory=Subscriber)

    @property
    def time(self) -> datetime | None:
        """``timestamp`` as an aware UTC datetime, when there is one in range."""
        stamp = self.timestamp
        if stamp is None or stamp > _MAX_TIMESTAMP_MS:
            return None
        return datetime.fromtimestamp(stamp / 1000, tz=UTC)


class AttentiveEvent(_Common, frozen=True, kw_only=True, tag_field="type"):
    """The base of the 11 documented types; ``type`` is each one's tag."""

    @property
    def type(self) -> str:
        """The event type (``sms.subscribed``, ...)."""
        tag = self.__struct_config__.tag
        assert isinstance(tag, str)
        return tag


class _Subscribe(AttentiveEvent, frozen=True, kw_only=True):
    creative: Creative | None = None
    subscription: Subscription | None = None


class _Unsubscribe(AttentiveEvent, frozen=True, kw_only=True):
    subscription: Subscription | None = None


class _OfMessage(AttentiveEvent, frozen=True, kw_only=True):
    message: Message | None = None


class _Click(_OfMessage, frozen=True, kw_only=True):
    link: Link | None = None


class SmsSubscribed(_Subscribe, frozen=True, kw_only=True, tag="sms.subscribed"):
    """A subscriber opted in to SMS."""


class SmsUnsubscribed(_Unsubscribe, frozen=True, kw_only=True, tag="sms.unsubscribed"):
    """A subscriber opted out of SMS."""


class SmsSent(_OfMessage, frozen=True, kw_only=True, tag="sms.sent"):
    """Attentive sent an SMS to a subscriber."""


class SmsMessageLinkClick(_Click, frozen=True, kw_only=True, tag="sms.message_link_click"):
    """A subscriber clicked a link in an SMS."""


class SmsInboundMessage(_OfMessage, frozen=True, kw_only=True, tag="sms.inbound_message"):
    """A subscriber texted in."""


class EmailSubscribed(_Subscribe, frozen=True, kw_only=True, tag="email.subscribed"):
    """A subscriber opted in to email."""


class EmailUnsubscribed(_Unsubscribe, frozen=True, kw_only=True, tag="email.unsubscribed"):
    """A subscriber opted out of email."""


class EmailSent(_OfMessage, frozen=True, kw_only=True, tag="email.sent"):
    """Attentive sent an email to a subscriber."""


class EmailOpened(_OfMessage, frozen=True, kw_only=True, tag="email.opened"):
    """A subscriber opened an email."""


class EmailMessageLinkClick(_Click, frozen=True, kw_only=True, tag="email.message_link_click"):
    """A subscriber clicked a link in an email."""


class CustomAttributeSet(AttentiveEvent, frozen=True, kw_only=True, tag="custom_attribute.set"):
    """A custom attribute of a subscriber was added or changed."""

    user_property: UserProperty | None = None


class GenericEvent(_Common, frozen=True, kw_only=True):
    """An event of a type Attentive has not documented yet (``sms.delivered``, say): what every
    event carries, and its type."""

    type: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")]


KnownEvent: TypeAlias = (
    SmsSubscribed
    | SmsUnsubscribed
    | SmsSent
    | SmsMessageLinkClick
    | SmsInboundMessage
    | EmailSubscribed
    | EmailUnsubscribed
    | EmailSent
    | EmailOpened
    | EmailMessageLinkClick
    | CustomAttributeSet
)
#: What :func:`decode` returns: one of the 11, or a generic event of another type.
AnyEvent: TypeAlias = KnownEvent | GenericEvent

_BY_TAG = {str(model.__struct_config__.tag): model for model in get_args(KnownEvent)}
#: The model of each documented type, in the order of :data:`~router.contract.events.EVENT_TYPES`
#: (a type without a model fails here, at import).
MODELS: dict[str, type[AttentiveEvent]] = {t: _BY_TAG[t] for t in EVENT_TYPES}
M = TypeVar("M")


class EventDoesNotFit(InvalidInput):
    """Raised when a body is not an event of the model asked for: ``field`` names the part
    (``company.company_id``, ``type``), or is None when the body is no JSON object at all."""


_KNOWN = msgspec.json.Decoder(KnownEvent)
_GENERIC = msgspec.json.Decoder(GenericEvent)


def decode(body: bytes) -> AnyEvent:
    """The event in ``body``: the model of its type, or a :class:`GenericEvent` when its type
    is not one of the 11; :class:`EventDoesNotFit` when it is not an event at all."""
    try:
        return _KNOWN.decode(body)
    except msgspec.DecodeError as error:
        known = _does_not_fit(error)
    if known.field != "type":  # (one of the 11, or not an object at all) that does not fit
        raise known from None
    try:
        generic = _GENERIC.decode(body)
    except msgspec.DecodeError as error:
        raise _does_not_fit(error) from None
    if generic.type in KNOWN_TYPES:  # (cannot be: its model refused the type)
        raise known
    return generic


def decode_as(body: bytes, model: type[M]) -> M:
    """``body`` decoded into ``model`` (one model, or a union of them as a type alias);
    :class:`EventDoesNotFit` naming the field when it does not fit."""
    decoded: M = decoder_for(cast(Any, model))(body)
    return decoded


@cache
def decoder_for(model: Any) -> Callable[[bytes], Any]:
    """A function decoding a body into ``model`` (a model or a union of models), made once per
    model; TypeError at once when ``model`` is not one msgspec can decode into."""
    members = get_args(model) or (model,)
    if GenericEvent in members and len(members) > 1:  # (one msgspec union cannot hold both)
        return _Within(tuple(members))
    decoder = msgspec.json.Decoder(model)

    def decode_into(body: bytes) -> Any:
        try:
            return decoder.decode(body)
        except msgspec.DecodeError as error:
            raise _does_not_fit(error) from None

    return decode_into


class _Within:
    """Decoding into a union that holds :class:`GenericEvent`: :func:`decode`, then a check
    that what came out is one of the union."""

    def __init__(self, members: tuple[type[Any], ...]) -> None:
        self.members = members

    def __call__(self, body: bytes) -> AnyEvent:
        event = decode(body)
        if type(event) not in self.members:
            raise EventDoesNotFit(
                f"{event.type!r} is not one of {model_name(self.members)}", field="type"
            )
        return event


def model_name(model: object) -> str:
    """``SmsSubscribed``; ``SmsSent | EmailSent`` for a union (or a tuple of models)."""
    members = model if isinstance(model, tuple) else (get_args(model) or (model,))
    return " | ".join(getattr(m, "__name__", str(m)) for m in members)


def _does_not_fit(error: msgspec.DecodeError) -> EventDoesNotFit:
    """msgspec's ``Expected `str`, got `int` - at `$.company.company_id``` as a problem and a
    field: ``company.company_id``."""
    message = str(error)
    problem, _, where = message.partition(" - at `$")
    path = where.rstrip("`").lstrip(".") or None
    missing = "Object missing required field `"
    if problem.startswith(missing):
        name = problem.removeprefix(missing).rstrip("`")
        path = f"{path}.{name}" if path else name
        problem = "is missing"
    elif not isinstance(error, msgspec.ValidationError):
        problem = f"is not JSON ({message})"
    return EventDoesNotFit(problem[:1].lower() + problem[1:], field=path)


__all__ = [
    "MODELS",
    "AnyEvent",
    "AttentiveEvent",
    "Company",
    "Creative",
    "CustomAttributeSet",
    "EmailMessageLinkClick",
    "EmailOpened",
    "EmailSent",
    "EmailSubscribed",
    "EmailUnsubscribed",
    "EventDoesNotFit",
    "ExternalIdentifiers",
    "GenericEvent",
    "KnownEvent",
    "Link",
    "Message",
    "SmsInboundMessage",
    "SmsMessageLinkClick",
    "SmsSent",
    "SmsSubscribed",
    "SmsUnsubscribed",
    "Subscriber",
    "Subscription",
    "UserProperty",
    "decode",
    "decode_as",
    "decoder_for",
    "model_name",
]
