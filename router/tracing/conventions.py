"""The names of span attributes, as OpenTelemetry's semantic conventions spell them (HTTP
server spans: stable; messaging and RabbitMQ: development), and our own under ``attentive.``.

Pure strings, so the code that makes spans and the tests that read them share one spelling.
"""

from __future__ import annotations

from typing import Final

# -- HTTP server spans ----------------------------------------------------------------------
HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_ROUTE: Final = "http.route"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
URL_PATH: Final = "url.path"
URL_SCHEME: Final = "url.scheme"
NETWORK_PROTOCOL_VERSION: Final = "network.protocol.version"
ERROR_TYPE: Final = "error.type"

# -- messaging spans (RabbitMQ) -------------------------------------------------------------
MESSAGING_SYSTEM: Final = "messaging.system"
MESSAGING_OPERATION_TYPE: Final = "messaging.operation.type"
MESSAGING_OPERATION_NAME: Final = "messaging.operation.name"
MESSAGING_DESTINATION_NAME: Final = "messaging.destination.name"
MESSAGING_ROUTING_KEY: Final = "messaging.rabbitmq.destination.routing_key"
MESSAGING_DELIVERY_TAG: Final = "messaging.rabbitmq.message.delivery_tag"
MESSAGING_MESSAGE_ID: Final = "messaging.message.id"
MESSAGING_BODY_SIZE: Final = "messaging.message.body.size"
MESSAGING_CONSUMER_GROUP: Final = "messaging.consumer.group.name"
RABBITMQ: Final = "rabbitmq"
#: ``messaging.operation.type`` of a publish whose span is the message's creation context,
#: and of a push-based consumer's span.
SEND: Final = "send"
PROCESS: Final = "process"

# -- ours ----------------------------------------------------------------------------------
#: What the ingress did with a webhook: the ``outcome`` of its log line and its counter.
OUTCOME: Final = "attentive.outcome"
EVENT_TYPE: Final = "attentive.event_type"
COMPANY_ID: Final = "attentive.company_id"
MESSAGE_ID: Final = "attentive.message_id"
#: Whether a signature matched one of the keys (never the signature itself).
SIGNATURE_VALID: Final = "attentive.signature.valid"
#: Why a body was quarantined (``invalid_json``, ...).
QUARANTINE_REASON: Final = "attentive.quarantine.reason"
#: Which attempt at handling a delivery is (1 for the first), and how often it was replayed.
ATTEMPT: Final = "attentive.attempt"
REPLAY_COUNT: Final = "attentive.replay_count"
#: On a ``retry`` event: the delay tier, ms; on a ``dead_letter`` event: why.
RETRY_DELAY_MS: Final = "attentive.retry.delay_ms"
DEAD_LETTER_REASON: Final = "attentive.dead_letter.reason"
#: What a link of a delivery's span leads to: one of the three below.
LINK_TYPE: Final = "attentive.link.type"
#: The span the event was published in (the ingress's publish, a webhook's trace).
LINK_CREATED: Final = "created"
#: The first delivery of this round (what a retry or a deferred delivery links to).
LINK_FIRST_DELIVERY: Final = "first_delivery"
#: The first delivery of the round before a replay (what the replayed delivery links to).
LINK_REPLAYED_FROM: Final = "replayed_from"

__all__ = [
    "ATTEMPT",
    "COMPANY_ID",
    "DEAD_LETTER_REASON",
    "ERROR_TYPE",
    "EVENT_TYPE",
    "HTTP_REQUEST_METHOD",
    "HTTP_RESPONSE_STATUS_CODE",
    "HTTP_ROUTE",
    "LINK_CREATED",
    "LINK_FIRST_DELIVERY",
    "LINK_REPLAYED_FROM",
    "LINK_TYPE",
    "MESSAGE_ID",
    "MESSAGING_BODY_SIZE",
    "MESSAGING_CONSUMER_GROUP",
    "MESSAGING_DELIVERY_TAG",
    "MESSAGING_DESTINATION_NAME",
    "MESSAGING_MESSAGE_ID",
    "MESSAGING_OPERATION_NAME",
    "MESSAGING_OPERATION_TYPE",
    "MESSAGING_ROUTING_KEY",
    "MESSAGING_SYSTEM",
    "NETWORK_PROTOCOL_VERSION",
    "OUTCOME",
    "PROCESS",
    "QUARANTINE_REASON",
    "RABBITMQ",
    "REPLAY_COUNT",
    "RETRY_DELAY_MS",
    "SEND",
    "SIGNATURE_VALID",
    "URL_PATH",
    "URL_SCHEME",
]
