"""A running worker's settings, built once from the environment and flags.

Each field is read from one variable, declared once in :data:`VARIABLES` (read and checked
by :mod:`router.config`); what cannot work is a one-line
:class:`~consumers.runtime.errors.WorkerConfigError` naming the variable. The broker's URL,
the admin token and the idempotency store's URL are :class:`~router.secret.Secret` values,
which never show themselves (``.reveal()`` gives the value).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from consumers.runtime.breaker import BreakerPolicy
from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.idempotency import DEFAULT_LEASE
from consumers.runtime.newest import DEFAULT_SKEW
from consumers.runtime.newest_stores import DEFAULT_KEY_LEASE, DEFAULT_RETENTION
from router import config
from router.config import Variable
from router.contract.names import Names
from router.contract.type_labels import DEFAULT_MAX_OTHER_TYPES
from router.errors import ConfigError
from router.secret import (
    OptionalSecretUrl,
    Secret,
    SecretField,
    SecretText,
    SecretUrl,
    SecretUrlText,
    optional_secret_url,
)
from router.settings import DEFAULT_AMQP_URL, LogFormat, admin_token_variable
from router.settings import VARIABLES as ROUTER_VARIABLES
from router.tracing.settings import TracingSettings


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """Where the broker and the router's admin API are, and how to run."""

    #: ``WORKER_AMQP_URL`` (the application's own broker user), else ``ROUTER_AMQP_URL``.
    amqp_url: SecretUrlText = SecretField(SecretUrl.of, DEFAULT_AMQP_URL)
    #: ``ROUTER_ADMIN_URL`` / ``ROUTER_ADMIN_TOKEN`` (or ``ROUTER_ADMIN_TOKEN_FILE``): where the
    #: worker claims its events; an ``https://`` URL is verified against ``ROUTER_ADMIN_CA``
    #: when set, else the system's CAs.
    admin_url: str = "http://127.0.0.1:8081"
    admin_token: SecretText = SecretField(Secret.of, "")
    admin_ca: str = ""
    namespace: str = "attentive"
    #: ``WORKER_PREFETCH``: overrides the worker's own prefetch (deliveries in flight).
    prefetch: int | None = None
    #: ``WORKER_METRICS_PORT``: serve /metrics and /healthz there; 0 for none.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    #: ``WORKER_CLAIM_TIMEOUT``: how long start-up keeps asking an unreachable admin API.
    claim_timeout: float = 60.0
    #: ``WORKER_PUBLISH_TIMEOUT``: how long a retry/dead-letter publish waits for its confirm.
    publish_timeout: float = 10.0
    #: ``WORKER_SHUTDOWN_TIMEOUT``: overrides the worker's own drain deadline.
    shutdown_timeout: float | None = None
    #: ``WORKER_IDEMPOTENCY_URL``: ``redis://…`` or ``postgresql://…`` to share the handled
    #: message ids between replicas (else the worker's own store, in memory by default).
    idempotency_url: OptionalSecretUrl = SecretField(optional_secret_url, None)
    #: ``WORKER_IDEMPOTENCY_LEASE``: seconds a replica's claim on a message id holds the id
    #: in that store before another replica may take it over (longer than any handler).
    idempotency_lease: float = DEFAULT_LEASE
    #: ``WORKER_NEWEST_RETENTION``: seconds the newest event time of a key (for handlers with
    #: a ``newest`` family) is kept in that store after it last moved (30 days): longer than
    #: Attentive's retries and any dead-letter replay, or an older event of a forgotten key
    #: is applied.
    newest_retention: float = DEFAULT_RETENTION
    #: ``WORKER_NEWEST_SKEW``: seconds an event time may be ahead of the worker's clock and
    #: still be trusted (300); one further ahead is handled unordered and never recorded.
    newest_skew: float = DEFAULT_SKEW
    #: ``WORKER_KEY_LEASE``: seconds a replica's lease on a key holds unless renewed (60): a
    #: replica killed mid-handler blocks its subscriber's events for at most this long.
    key_lease: float = DEFAULT_KEY_LEASE
    #: ``ROUTER_METRICS_MAX_OTHER_TYPES``: undocumented event types that get a ``type`` label
    #: of their own in the metrics; later ones are counted as ``other``.
    metrics_max_other_types: int = DEFAULT_MAX_OTHER_TYPES
    #: ``WORKER_BREAKER``: the circuit breaker on or off; unset, the worker's own (on): an
    #: outage then stops every replica instead of dead-lettering its events.
    breaker: bool | None = None
    #: ``WORKER_BREAKER_FAILURES``: failures in the window before it opens; unset, the
    #: worker's own (20: more than a prefetch's worth at once, more than a few poison
    #: events can make).
    breaker_failures: int | None = None
    #: ``WORKER_BREAKER_RATIO``: least share of failures among the outcomes in the window
    #: (0 to 1); unset, the worker's own (0.5: a downstream that is down fails nearly all).
    breaker_ratio: float | None = None
    #: ``WORKER_BREAKER_WINDOW``: seconds of the sliding window; unset, the worker's own (30:
    #: long enough to see a trickle's failures, short enough to forget a blip).
    breaker_window: float | None = None
    #: ``WORKER_BREAKER_PROBE_MAX``: longest wait between probes, seconds; unset, the
    #: worker's own (30: a recovery is seen within half a minute, two requests a minute).
    breaker_probe_max: float | None = None
    #: ``WORKER_RATE_LIMIT``: at most this many handler starts a second across every replica
    #: of the application; unset, the worker's own (none).
    rate_limit: float | None = None
    log_format: LogFormat = "auto"
    log_level: str = "info"
    #: Traces (OpenTelemetry's ``OTEL_*`` variables: :mod:`router.tracing`); off by default.
    tracing: TracingSettings = dataclasses.field(default_factory=TracingSettings)

    @property
    def names(self) -> Names:
        return Names(self.namespace)

    def breaker_policy(self, own: BreakerPolicy | None) -> BreakerPolicy:
        """The worker's own breaker policy (else the defaults) with what these settings set;
        :class:`WorkerConfigError` when the two together cannot work (a cap below the first
        probe's wait)."""
        changes: dict[str, Any] = {
            field: value
            for field, value in (
                ("enabled", self.breaker),
                ("failures", self.breaker_failures),
                ("ratio", self.breaker_ratio),
                ("window", self.breaker_window),
                ("probe_max", self.breaker_probe_max),
            )
            if value is not None
        }
        try:
            return dataclasses.replace(own or BreakerPolicy(), **changes)
        except ValueError as error:
            raise WorkerConfigError(str(error)) from None

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> WorkerSettings:
        """Settings from the variables of :data:`VARIABLES`; ``overrides`` (flags) win where
        not None; :class:`WorkerConfigError` naming the variable of a value that cannot work."""
        # the application's own broker user if it has one, else the router's URL
        try:
            amqp_url = config.first_set(env, _WORKER_AMQP_URL, _ROUTER_AMQP_URL)
            admin_token = admin_token_variable(env)
            variables = {**VARIABLES, "amqp_url": amqp_url, "admin_token": admin_token}
            overrides = {"tracing": TracingSettings.from_env(env), **overrides}
            return config.load(cls, env, variables, overrides)
        except ConfigError as error:
            raise WorkerConfigError(str(error)) from None


_ROUTER_AMQP_URL = ROUTER_VARIABLES["amqp_url"]
_WORKER_AMQP_URL = dataclasses.replace(_ROUTER_AMQP_URL, name="WORKER_AMQP_URL")

#: The variable each field is read from (field name → variable); ``amqp_url`` is read from
#: ``WORKER_AMQP_URL`` when set, else from ``ROUTER_AMQP_URL``.
VARIABLES: Final[Mapping[str, Variable[Any]]] = {
    "amqp_url": _ROUTER_AMQP_URL,
    "admin_url": config.text("ROUTER_ADMIN_URL"),
    "admin_token": ROUTER_VARIABLES["admin_token"],
    "admin_ca": ROUTER_VARIABLES["admin_ca"],
    "namespace": config.text("ROUTER_NAMESPACE"),
    "prefetch": config.integer("WORKER_PREFETCH", 1),
    "metrics_port": config.integer("WORKER_METRICS_PORT"),
    "metrics_host": config.text("WORKER_METRICS_HOST"),
    "claim_timeout": config.number("WORKER_CLAIM_TIMEOUT"),
    "publish_timeout": config.number("WORKER_PUBLISH_TIMEOUT"),
    "shutdown_timeout": config.number("WORKER_SHUTDOWN_TIMEOUT"),
    "idempotency_url": config.secret("WORKER_IDEMPOTENCY_URL"),
    "idempotency_lease": config.seconds("WORKER_IDEMPOTENCY_LEASE"),
    "newest_retention": config.seconds("WORKER_NEWEST_RETENTION"),
    "newest_skew": config.seconds("WORKER_NEWEST_SKEW"),
    "key_lease": config.seconds("WORKER_KEY_LEASE"),
    "metrics_max_other_types": ROUTER_VARIABLES["metrics_max_other_types"],
    "breaker": config.boolean("WORKER_BREAKER"),
    "breaker_failures": config.integer("WORKER_BREAKER_FAILURES", 1),
    "breaker_ratio": config.Variable(
        "WORKER_BREAKER_RATIO", "a number between 0 and 1", float, lambda r: 0 <= r <= 1
    ),
    "breaker_window": config.seconds("WORKER_BREAKER_WINDOW"),
    "breaker_probe_max": config.seconds("WORKER_BREAKER_PROBE_MAX"),
    "rate_limit": config.Variable(
        "WORKER_RATE_LIMIT",
        "a positive number of handler starts a second",
        float,
        lambda rate: math.isfinite(rate) and rate > 0,
    ),
    # (a worker takes any log format and level, as it always has: an unknown format logs
    # for a terminal, an unknown level at info)
    "log_format": config.text("ROUTER_LOG_FORMAT"),
    "log_level": config.text("ROUTER_LOG_LEVEL"),
}


__all__ = ["VARIABLES", "WorkerSettings"]
