"""The router's contract as an AsyncAPI 3.0 document, generated, never kept by hand.

Pure: :func:`document` builds it from :mod:`router.contract.names` (every exchange, queue and
header), :mod:`router.contract.models` (every payload schema, through
:mod:`router.contract.schemas`) and the facts a :class:`Broker` brings from the layers above
(queue arguments, the retry tiers, how claims become binding keys, and with ``--claims`` the
applications the registry knows). ``attentive-router contract asyncapi`` prints it.

Choices AsyncAPI leaves open: the broker is the one server; each documented type is a channel
of ``attentive.events`` whose address is its routing key, ``<type>.{companyId}``; an
application's queue, its retry tiers and its dead-letter queue are channels whose address is
a queue name (the template application ``{app}``, and with ``--claims`` each application by
name, its binding keys in ``x-binding-keys``: the AMQP binding has no field for them). No
schema uses the object form of ``discriminator`` (AsyncAPI 3.0 refuses it): a channel lists
its messages instead, each with its own payload schema.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from router.contract.examples import example_payload
from router.contract.models import MODELS, GenericEvent
from router.contract.names import Names
from router.contract.schemas import (
    EVENT_HEADERS,
    INVALID_HEADERS,
    headers_schema,
    payload_components,
)

ASYNCAPI_VERSION: Final = "3.0.0"
AMQP_BINDING_VERSION: Final = "0.3.0"
SERVER: Final = "rabbitmq"
#: Attentive's own example time, so that the document is the same on every run.
EXAMPLE_TIMESTAMP_MS: Final = 1_632_945_178_104
#: The template application of the per-application channels.
APP_PARAMETER: Final = "{app}"
_SCHEMAS: Final = "#/components/schemas/"
_MESSAGES: Final = "#/components/messages/"
_GENERIC: Final = GenericEvent.__name__
_INVALID: Final = "InvalidWebhook"


@dataclass(frozen=True, slots=True)
class Claimed:
    """One claim of an application, and the binding key it puts on its queue."""

    event: str
    company: str | None
    binding_key: str


@dataclass(frozen=True, slots=True)
class Application:
    """An application the claims registry knows, and its claims."""

    app: str
    claims: tuple[Claimed, ...]


@dataclass(frozen=True, slots=True)
class Broker:
    """What the document says besides names and models, from the layers that know it."""

    names: Names
    #: The router's version (``info.version``).
    version: str
    #: An application's queue arguments, given its name.
    app_queue_arguments: Callable[[str], Mapping[str, Any]]
    #: A retry tier's queue arguments, given the application and the tier's milliseconds.
    retry_queue_arguments: Callable[[str, int], Mapping[str, Any]]
    #: The arguments of every landing zone (dead-letter, unrouted and invalid queues).
    landing_arguments: Mapping[str, Any]
    #: The default retry tiers of the worker runtime, milliseconds.
    retry_tiers_ms: Sequence[int]
    #: Claims as examples of the binding keys they make: (claim, binding key).
    key_examples: Sequence[tuple[str, str]]
    #: With ``--claims``: every application of the registry (None: not asked for).
    applications: Sequence[Application] | None = None


def document(broker: Broker) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the contract, as plain JSON-able data."""
    names = broker.names
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for event_type, model in MODELS.items():
        channels[event_type] = _event_channel(names, event_type, model.__name__)
        operations[f"ingress.publish.{event_type}"] = _operation(
            "send", event_type, [model.__name__], "The ingress publishes, then awaits the confirm."
        )
    channels.update(_app_channels(broker, APP_PARAMETER, "app"))
    operations["worker.receive"] = _operation(
        "receive", "app", _every_message(), "A worker of the application consumes its queue."
    )
    for tier in broker.retry_tiers_ms:
        operations[f"worker.retry.{tier}ms"] = _operation(
            "send", f"app.retry.{tier}ms", _every_message(), "A worker retries a failed event."
        )
    operations["worker.dead-letter"] = _operation(
        "send", "app.dlq", _every_message(), "A worker dead-letters an event."
    )
    channels["unrouted"] = _queue_channel(
        names.unrouted_queue,
        broker.landing_arguments,
        "Events no application's claim covers (the alternate exchange of the events "
        f"exchange, {names.unrouted_exchange}, fanout): a landing zone.",
        _every_message(),
    )
    channels["invalid"] = _queue_channel(
        names.invalid_queue,
        broker.landing_arguments,
        "Authentic webhooks the router could not route, raw: a landing zone.",
        [_INVALID],
    )
    operations["ingress.quarantine"] = _operation(
        "send", "invalid", [_INVALID], "The ingress quarantines an authentic unusable body."
    )
    for place in ("app.dlq", "unrouted", "invalid"):
        messages = [_INVALID] if place == "invalid" else _every_message()
        operations[f"keeper.park.{place}"] = _operation(
            "receive", place, messages, "The keeper commits it to the parked store, then acks."
        )
    for application in broker.applications or ():
        channel_id = f"applications.{application.app}"
        channels.update(_app_channels(broker, application.app, channel_id, application))
        operations[f"{application.app}.receive"] = _operation(
            "receive",
            channel_id,
            _claimed_messages(application),
            f"The workers of {application.app} consume the events it claims.",
        )
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "attentive-router events",
            "version": broker.version,
            "description": "Signed Attentive webhooks in, durable RabbitMQ events out: one "
            "application per event type per company. Every event is the body Attentive "
            "sent, unchanged, published persistently with a publisher confirm.",
        },
        "defaultContentType": "application/json",
        "servers": {
            SERVER: {
                "host": "{host}",
                "protocol": "amqp",
                "protocolVersion": "0-9-1",
                "description": "RabbitMQ 3.10+ (ROUTER_AMQP_URL).",
                "variables": {"host": {"default": "localhost:5672"}},
            }
        },
        "channels": channels,
        "operations": operations,
        "components": _components(broker),
    }


def _event_channel(names: Names, event_type: str, message: str) -> dict[str, Any]:
    return {
        "address": f"{event_type}.{{companyId}}",
        "title": event_type,
        "description": f"Every {event_type} event, on the topic exchange {names.events_exchange}"
        f" (durable; alternate exchange {names.unrouted_exchange}), routing key "
        f"{event_type}.<company id>.",
        "servers": [{"$ref": f"#/servers/{SERVER}"}],
        "parameters": {"companyId": {"$ref": "#/components/parameters/companyId"}},
        "messages": {message: {"$ref": _MESSAGES + message}},
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": {
                    "name": names.events_exchange,
                    "type": "topic",
                    "durable": True,
                    "autoDelete": False,
                },
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
        "x-alternate-exchange": names.unrouted_exchange,
    }


def _queue_channel(
    queue: str,
    arguments: Mapping[str, Any],
    description: str,
    messages: Sequence[str],
    **extensions: Any,
) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": queue,
        "description": description,
        "servers": [{"$ref": f"#/servers/{SERVER}"}],
        "messages": {m: {"$ref": _MESSAGES + m} for m in messages},
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {"name": queue, "durable": True, "exclusive": False, "autoDelete": False},
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
        "x-queue-arguments": dict(arguments),
    }
    if "{app}" in queue:
        channel["parameters"] = {"app": {"$ref": "#/components/parameters/app"}}
    channel.update({f"x-{k.replace('_', '-')}": v for k, v in extensions.items()})
    return channel


def _app_channels(
    broker: Broker, app: str, channel_id: str, application: Application | None = None
) -> dict[str, Any]:
    """The queue of ``app``, its retry tiers and its dead-letter queue (the template
    application's only: a named application's retry and dead-letter queues are the same
    shape)."""
    names = broker.names
    queue = names.app_queue(app)
    messages = _claimed_messages(application) if application else _every_message()
    if application is None:
        keys: Any = [{"claim": claim, "bindingKey": key} for claim, key in broker.key_examples]
        about = "one binding per claim of the application, made as each claim is granted"
    else:
        keys = [c.binding_key for c in application.claims]
        about = f"bound with the keys of {application.app}'s claims"
    channels = {
        channel_id: _queue_channel(
            queue,
            broker.app_queue_arguments(app),
            f"The application's queue (quorum, its replicas share it), {about} on "
            f"{names.events_exchange}; expired retries come back through "
            f"{names.app_requeue_exchange(app)}.",
            messages,
            binding_keys=keys,
            bound_to=names.events_exchange,
        )
    }
    if application is not None:
        return channels
    for tier in broker.retry_tiers_ms:
        channels[f"{channel_id}.retry.{tier}ms"] = _queue_channel(
            names.app_retry_queue(app, tier),
            broker.retry_queue_arguments(app, tier),
            f"Retry tier of {tier} ms (the worker runtime's default tiers): an event waits, "
            f"then expires back to {queue}; published through {names.app_retry_exchange(app)}"
            f" with the routing key {tier}ms.",
            messages,
        )
    channels[f"{channel_id}.dlq"] = _queue_channel(
        names.app_dead_letter_queue(app),
        broker.landing_arguments,
        f"The application's dead letters (through {names.app_dead_letter_exchange(app)}, "
        "fanout): a landing zone the keeper drains into the parked-event store.",
        messages,
    )
    return channels


def _every_message() -> list[str]:
    return [*(m.__name__ for m in MODELS.values()), _GENERIC]


def _claimed_messages(application: Application) -> list[str]:
    """The messages an application's claims can bring it (undocumented types included when a
    claim is a wildcard)."""
    wanted: list[str] = []
    for claim in application.claims:
        if claim.event in MODELS:
            wanted.append(MODELS[claim.event].__name__)
            continue
        channel = claim.event.removesuffix(".*")
        wanted += [
            m.__name__
            for t, m in MODELS.items()
            if claim.event == "*" or t.startswith(f"{channel}.")
        ]
        wanted.append(_GENERIC)
    return list(dict.fromkeys(wanted))


def _operation(action: str, channel: str, messages: Sequence[str], summary: str) -> dict[str, Any]:
    pointer = channel.replace("~", "~0").replace("/", "~1")
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{pointer}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{pointer}/messages/{m}"} for m in messages],
    }


def _components(broker: Broker) -> dict[str, Any]:
    schemas = payload_components(_SCHEMAS + "{name}")
    schemas["EventHeaders"] = headers_schema(EVENT_HEADERS, "EventHeaders")
    schemas["InvalidHeaders"] = headers_schema(INVALID_HEADERS, "InvalidHeaders")
    messages = {model.__name__: _message(t, model.__name__) for t, model in MODELS.items()}
    messages[_GENERIC] = {
        **_message("", _GENERIC),
        "summary": "An event of a type Attentive has not documented yet, routed like the others.",
    }
    messages[_INVALID] = {
        "name": "invalid",
        "title": _INVALID,
        "summary": "An authentic webhook that could not be parsed or routed, its body as sent.",
        "contentType": "application/octet-stream",
        "headers": {"$ref": _SCHEMAS + "InvalidHeaders"},
        "payload": {"description": "the raw body (not necessarily JSON)"},
    }
    return {
        "schemas": schemas,
        "messages": messages,
        "parameters": {
            "companyId": {
                "description": "Attentive's company id, with any '.' as '_': always the last "
                "word of the routing key.",
                "examples": ["MDc6Q29tcGFueTU"],
            },
            "app": {
                "description": "An application's name (lowercase letters, digits, '-', '_').",
                "examples": ["sms-audit"],
            },
        },
    }


def _message(event_type: str, name: str) -> dict[str, Any]:
    model = MODELS.get(event_type, GenericEvent)
    message: dict[str, Any] = {
        "name": event_type or "generic",
        "title": name,
        "summary": (model.__doc__ or "").split("\n\n")[0].replace("\n", " ").strip(),
        "contentType": "application/json",
        "headers": {"$ref": _SCHEMAS + "EventHeaders"},
        "payload": {"$ref": _SCHEMAS + name},
    }
    if event_type:
        message["bindings"] = {
            "amqp": {"messageType": event_type, "bindingVersion": AMQP_BINDING_VERSION}
        }
        example = example_payload(event_type, timestamp_ms=EXAMPLE_TIMESTAMP_MS)
        message["examples"] = [{"name": event_type, "payload": example}]
    return message


__all__ = ["Application", "Broker", "Claimed", "document"]
