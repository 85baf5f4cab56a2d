"""Every exchange, queue and header name the router uses, its webhook path, and the routing
key of an event.

This is the only module that spells them. Everything else (the ingress, the topology,
later the workers and the dead-letter tools) asks a :class:`Names` for them, so a name
changes in one place. The prefix is ``attentive`` in production; tests give each run its
own prefix so that they never share a queue.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Where the ingress takes Attentive's webhooks (``/{company_id}`` after it: one company's).
WEBHOOK_PATH = "/webhooks/attentive"

#: Header Attentive signs each webhook with: lowercase hex HMAC-SHA256 of the raw body.
SIGNATURE_HEADER = "x-attentive-hmac-sha256"

#: AMQP header carrying the company id of an event (also in the routing key).
COMPANY_HEADER = "x-attentive-company-id"
#: AMQP header: the subject key of an event (:mod:`router.contract.ordering`): the same for
#: every event about one subscriber's state on one channel (one attribute of theirs, for an
#: attribute), never their contact details; absent when the payload lacks a part of it.
SUBJECT_KEY_HEADER = "x-attentive-subject-key"
#: AMQP header: when the event happened, Unix ms, the payload's ``timestamp``; absent without.
EVENT_TIME_HEADER = "x-attentive-event-time"
#: AMQP header on a quarantined (authentic but unusable) webhook: why it was quarantined.
INVALID_REASON_HEADER = "x-attentive-invalid-reason"
#: AMQP header on a quarantined webhook: the URL path it was posted to.
RECEIVED_PATH_HEADER = "x-attentive-received-path"
#: AMQP header on a quarantined webhook: when the router received it (Unix ms).
RECEIVED_AT_HEADER = "x-attentive-received-at"

#: AMQP header: which attempt at handling this delivery is (1 for the first). Our own count,
#: not ``x-death``, which RabbitMQ 3.13+ stops counting for republished messages.
ATTEMPT_HEADER = "x-attentive-attempt"
#: AMQP header: how many times ops replayed this event out of a dead-letter queue.
REPLAY_COUNT_HEADER = "x-attentive-replay-count"
#: AMQP header on a backfill's copy of an archived event: the job that published it (an int).
REPLAY_JOB_HEADER = "x-attentive-replay-job"
#: AMQP headers a worker sets when it retries or dead-letters an event.
ERROR_HEADER = "x-attentive-error"
TRACEBACK_HEADER = "x-attentive-traceback"
FIRST_FAILED_AT_HEADER = "x-attentive-first-failed-at"
LAST_FAILED_AT_HEADER = "x-attentive-last-failed-at"
DEAD_LETTERED_AT_HEADER = "x-attentive-dead-lettered-at"
#: Why an event was dead-lettered: ``exhausted`` (out of attempts), ``rejected`` (the handler
#: said no retry can help), ``no-handler``; RabbitMQ's own ``delivery_limit`` shows in x-death.
DEAD_LETTER_REASON_HEADER = "x-attentive-dead-letter-reason"
#: The application that dead-lettered the event.
APP_HEADER = "x-attentive-app"
#: The event's routing key on ``attentive.events``, kept when a worker moves it through its
#: retry tiers and dead-letter queue (those moves change the AMQP routing key).
ROUTING_KEY_HEADER = "x-attentive-routing-key"

#: AMQP headers of W3C Trace Context (as its HTTP headers and the OpenTelemetry propagator
#: name them): the context the event was published in, written by the ingress when tracing is
#: on (:mod:`router.tracing`), kept through retries, dead letters and replays.
TRACEPARENT_HEADER = "traceparent"
TRACESTATE_HEADER = "tracestate"
#: AMQP header: the ``traceparent`` of the first delivery of the event (its first attempt, or
#: the first after a replay), which a retried delivery's span links to.
FIRST_DELIVERY_HEADER = "x-attentive-first-delivery"

#: Headers RabbitMQ itself maintains: a quorum queue's delivery count, and the history of
#: dead-lettering (``x-death``, with the first death's reason also on its own).
DELIVERY_COUNT_HEADER = "x-delivery-count"
DEATH_HEADER = "x-death"
FIRST_DEATH_REASON_HEADER = "x-first-death-reason"
#: The rest of RabbitMQ's dead-letter family (3.13+), stripped from a replayed copy.
DEATH_FAMILY_HEADERS = (
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)
#: Counted by a quorum queue at each delivery on RabbitMQ 4 (beside ``x-delivery-count``).
ACQUIRED_COUNT_HEADER = "x-acquired-count"

#: CloudEvents 1.0 binary-mode attribute prefix for AMQP application properties.
CLOUDEVENTS_PREFIX = "cloudEvents:"
#: CloudEvents ``source`` of every event the router publishes.
CLOUDEVENTS_SOURCE = "https://api.attentivemobile.com/webhooks"

#: The longest routing key AMQP carries (a short string: 255 bytes).
MAX_ROUTING_KEY_BYTES = 255


@dataclass(frozen=True, slots=True)
class Names:
    """The broker names of one router installation, all derived from ``prefix``."""

    prefix: str = "attentive"

    @property
    def events_exchange(self) -> str:
        """Durable topic exchange every event is published to, keyed by :func:`routing_key`."""
        return f"{self.prefix}.events"

    @property
    def ingress_exchange(self) -> str:
        """Durable fanout exchange the ingress publishes every event to while the archive is on:
        bound to :attr:`events_exchange` (exchange to exchange, so the routing key and the
        alternate exchange work as before) and to :attr:`archive_stream`."""
        return f"{self.prefix}.ingress"

    @property
    def archive_stream(self) -> str:
        """Stream (a durable, replicated, append-only queue) holding every event the ingress
        accepted, for days: the history ops search and replay from (:mod:`router.history`)."""
        return f"{self.prefix}.archive"

    @property
    def unrouted_exchange(self) -> str:
        """Fanout exchange set as the alternate exchange of :attr:`events_exchange`."""
        return f"{self.prefix}.unrouted"

    @property
    def unrouted_queue(self) -> str:
        """Quorum queue holding events no application's queue is bound for."""
        return f"{self.prefix}.unrouted"

    @property
    def invalid_queue(self) -> str:
        """Quorum queue holding authentic webhooks the router could not parse."""
        return f"{self.prefix}.invalid"

    @property
    def control_exchange(self) -> str:
        """Durable topic exchange of per-application control messages (pause, resume, breaker
        open and closed: :mod:`router.contract.control`), keyed by the application's name;
        every replica of a worker listens on a queue of its own bound with its application."""
        return f"{self.prefix}.control"

    def app_control_queue(self, app: str, replica: str) -> str:
        """A replica's own queue of control messages, named among its application's queues
        (which its broker user may declare), bound to :attr:`control_exchange` with ``app``."""
        return f"{self.prefix}.app.{app}.control.{replica}"

    def app_probe_lock(self, app: str) -> str:
        """Exclusive queue held by the one replica of ``app`` that probes while its breaker is
        open: it exists exactly while the breaker is open and a replica is alive to probe."""
        return f"{self.prefix}.app.{app}.probe-lock"

    def app_queue(self, app: str) -> str:
        """The quorum queue of one application, bound by its claims (its replicas share it)."""
        return f"{self.prefix}.app.{app}"

    def app_dead_letter_queue(self, app: str) -> str:
        """Quorum queue where an application's events go when they cannot be handled: a landing
        zone the keeper drains into the parked-event store."""
        return f"{self.prefix}.app.{app}.dlq"

    def app_dead_letter_holding_queue(self, app: str) -> str:
        """Quorum queue bound to :meth:`app_dead_letter_exchange` while the keeper replaces a
        classic DLQ by a quorum one, so that the exchange always has a queue; drained, then
        deleted."""
        return f"{self.prefix}.app.{app}.dlq.holding"

    def app_dead_letter_migration_lock(self, app: str) -> str:
        """Exclusive queue the keeper that migrates an application's DLQ holds meanwhile: one
        keeper at a time (the broker deletes it when that keeper's connection ends)."""
        return f"{self.prefix}.app.{app}.dlq.migrating"

    def app_dead_letter_exchange(self, app: str) -> str:
        """Fanout exchange into :meth:`app_dead_letter_queue` (also the queue's own DLX)."""
        return f"{self.prefix}.app.{app}.dead"

    def app_retry_exchange(self, app: str) -> str:
        """Direct exchange into the retry delay queues, keyed by delay tier."""
        return f"{self.prefix}.app.{app}.retry"

    def app_retry_queue(self, app: str, delay_ms: int) -> str:
        """The queue where an event waits ``delay_ms`` before going back to the app queue."""
        return f"{self.prefix}.app.{app}.retry.{delay_ms}ms"

    def app_requeue_exchange(self, app: str) -> str:
        """Fanout exchange expired retries dead-letter into: it feeds the app queue."""
        return f"{self.prefix}.app.{app}.requeue"

    @property
    def app_queue_prefix(self) -> str:
        """What every application queue's name starts with."""
        return f"{self.prefix}.app."

    def app_user(self, app: str) -> str:
        """The RabbitMQ user an application's workers connect as."""
        return f"{self.prefix}-app-{app}"


def routing_key(event_type: str, company_id: str) -> str:
    """The routing key of an event: ``<event type>.<company id>``.

    A '.' in the company id becomes '_', so the company is always exactly the last word:
    ``sms.#`` binds every SMS event, ``email.opened.*`` one type, ``*.*.<company>`` one company.
    """
    return f"{event_type}.{company_id.replace('.', '_')}"


__all__ = [
    "ACQUIRED_COUNT_HEADER",
    "APP_HEADER",
    "ATTEMPT_HEADER",
    "CLOUDEVENTS_PREFIX",
    "CLOUDEVENTS_SOURCE",
    "COMPANY_HEADER",
    "DEAD_LETTERED_AT_HEADER",
    "DEAD_LETTER_REASON_HEADER",
    "DEATH_FAMILY_HEADERS",
    "DEATH_HEADER",
    "DELIVERY_COUNT_HEADER",
    "ERROR_HEADER",
    "EVENT_TIME_HEADER",
    "FIRST_DEATH_REASON_HEADER",
    "FIRST_DELIVERY_HEADER",
    "FIRST_FAILED_AT_HEADER",
    "INVALID_REASON_HEADER",
    "LAST_FAILED_AT_HEADER",
    "MAX_ROUTING_KEY_BYTES",
    "RECEIVED_AT_HEADER",
    "RECEIVED_PATH_HEADER",
    "REPLAY_COUNT_HEADER",
    "REPLAY_JOB_HEADER",
    "ROUTING_KEY_HEADER",
    "SIGNATURE_HEADER",
    "SUBJECT_KEY_HEADER",
    "TRACEBACK_HEADER",
    "TRACEPARENT_HEADER",
    "TRACESTATE_HEADER",
    "Names",
    "routing_key",
]
