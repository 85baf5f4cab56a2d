"""JSON Schemas of the contract: each event type's payload, from :mod:`router.contract.models`,
and the AMQP headers an event carries, from :mod:`router.contract.names`.

Pure: no I/O but :func:`write_event_schemas`. The payload schemas are what msgspec makes of
the models (one ``$defs`` per part), with ``type`` as a ``const``: they describe exactly what
the typed events accept. ``attentive-router contract schemas DIR`` writes one file per type
for teams that generate models in other languages.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import msgspec
import orjson

from router.contract import names as n
from router.contract.models import MODELS, GenericEvent

#: The JSON Schema dialect of the files :func:`event_schema` makes.
DIALECT = "https://json-schema.org/draft/2020-12/schema"

_TEXT: Final = {"type": "string"}
_INT: Final = {"type": "integer"}
_MS: Final = {"type": "integer", "description": "Unix milliseconds"}

#: Every header the router and the worker runtime write on an event, with its schema and who
#: writes it when. Keyed by the constants of :mod:`router.contract.names`, the only spelling;
#: the tests check that every ``*_HEADER`` there is described here or in INVALID_HEADERS.
EVENT_HEADERS: Final[dict[str, tuple[dict[str, Any], str]]] = {
    f"{n.CLOUDEVENTS_PREFIX}specversion": ({"const": "1.0"}, "ingress: CloudEvents version"),
    f"{n.CLOUDEVENTS_PREFIX}id": (_TEXT, "ingress: the message id (hex SHA-256 of the body)"),
    f"{n.CLOUDEVENTS_PREFIX}type": (_TEXT, "ingress: the event type"),
    f"{n.CLOUDEVENTS_PREFIX}source": ({"const": n.CLOUDEVENTS_SOURCE}, "ingress"),
    f"{n.CLOUDEVENTS_PREFIX}time": (
        {"type": "string", "format": "date-time"},
        "ingress: the payload's timestamp (else when received), RFC 3339",
    ),
    n.COMPANY_HEADER: (_TEXT, "ingress: company.company_id as sent"),
    n.SUBJECT_KEY_HEADER: (
        {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "ingress: the same for every event about one subscriber's state on one channel (a "
        "keyed hash, never contact details); absent when the payload lacks a part",
    ),
    n.EVENT_TIME_HEADER: (_MS, "ingress: the payload's timestamp; absent without one"),
    n.TRACEPARENT_HEADER: (_TEXT, "ingress, with tracing on: W3C Trace Context of the publish"),
    n.TRACESTATE_HEADER: (_TEXT, "ingress, with tracing on: W3C Trace Context"),
    n.FIRST_DELIVERY_HEADER: (_TEXT, "worker: traceparent of the round's first delivery"),
    n.ATTEMPT_HEADER: (
        {"type": "integer", "minimum": 1},
        "worker: the attempt this delivery is (absent: 1)",
    ),
    n.ROUTING_KEY_HEADER: (_TEXT, "worker: the event's routing key, kept through retries"),
    n.ERROR_HEADER: (_TEXT, "worker: the last error (contact details masked)"),
    n.TRACEBACK_HEADER: (_TEXT, "worker: the last frames of the last error"),
    n.FIRST_FAILED_AT_HEADER: (_MS, "worker: when the first attempt failed"),
    n.LAST_FAILED_AT_HEADER: (_MS, "worker: when the last attempt failed"),
    n.DEAD_LETTERED_AT_HEADER: (_MS, "worker: when it was dead-lettered"),
    n.DEAD_LETTER_REASON_HEADER: (
        {"enum": ["exhausted", "rejected", "no-handler"]},
        "worker: why it was dead-lettered",
    ),
    n.APP_HEADER: (_TEXT, "worker: the application that dead-lettered it"),
    n.REPLAY_COUNT_HEADER: (
        {"type": "integer", "minimum": 1},
        "replay: how many times ops replayed it",
    ),
    n.REPLAY_JOB_HEADER: (_INT, "backfill: the job that published this copy"),
    n.DELIVERY_COUNT_HEADER: (_INT, "RabbitMQ: the quorum queue's delivery count"),
    n.ACQUIRED_COUNT_HEADER: (_INT, "RabbitMQ 4: how many times a quorum queue delivered it"),
    n.DEATH_HEADER: ({"type": "array"}, "RabbitMQ: dead-letter history"),
    n.FIRST_DEATH_REASON_HEADER: (_TEXT, "RabbitMQ: delivery_limit, expired, rejected, ..."),
}
#: The headers of a quarantined webhook in the invalid queue.
INVALID_HEADERS: Final[dict[str, tuple[dict[str, Any], str]]] = {
    n.INVALID_REASON_HEADER: (_TEXT, "ingress: why the body could not be routed"),
    n.RECEIVED_PATH_HEADER: (_TEXT, "ingress: the URL path it was posted to"),
    n.RECEIVED_AT_HEADER: (_MS, "ingress: when it was received"),
}


def payload_components(ref_template: str) -> dict[str, Any]:
    """The schema of every model and of each of its parts, by name (``SmsSubscribed``,
    ``Subscriber``, ...), referring to each other with ``ref_template``
    (``#/components/schemas/{name}``)."""
    models = (*MODELS.values(), GenericEvent)
    _, components = msgspec.json.schema_components(models, ref_template=ref_template)
    for event_type, model in MODELS.items():
        properties = components[model.__name__]["properties"]
        properties["type"] = {"type": "string", "const": event_type}
    return components


def event_schema(event_type: str) -> dict[str, Any]:
    """A self-contained JSON Schema of one documented type's payload (its parts in ``$defs``)."""
    model = MODELS[event_type]
    parts: dict[str, Any] = msgspec.json.schema(model)["$defs"]
    root = parts.pop(model.__name__)
    root["properties"]["type"] = {"type": "string", "const": event_type}
    return {"$schema": DIALECT, "$id": f"{event_type}.json", **root, "$defs": parts}


def headers_schema(headers: dict[str, tuple[dict[str, Any], str]], title: str) -> dict[str, Any]:
    """An object schema of AMQP headers (each optional: who writes it says when)."""
    return {
        "title": title,
        "type": "object",
        "properties": {
            name: {**schema, "description": description}
            for name, (schema, description) in headers.items()
        },
    }


def write_event_schemas(directory: Path, event_types: Iterable[str] = MODELS) -> list[Path]:
    """Write ``<type>.json`` for each type into ``directory`` (made if missing); the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for event_type in event_types:
        path = directory / f"{event_type}.json"
        schema = event_schema(event_type)
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2) + b"\n")
        written.append(path)
    return written


__all__ = [
    "DIALECT",
    "EVENT_HEADERS",
    "INVALID_HEADERS",
    "event_schema",
    "headers_schema",
    "payload_components",
    "write_event_schemas",
]
