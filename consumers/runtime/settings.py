"""A running worker's settings, built once from the environment and flags."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.idempotency import DEFAULT_LEASE
from router.amqp.nodes import parse_urls
from router.contract.names import Names
from router.errors import ConfigError
from router.settings import DEFAULT_AMQP_URL, LogFormat

_INTS = frozenset({"prefetch", "metrics_port"})
_FLOATS = frozenset({"publish_timeout", "shutdown_timeout", "claim_timeout", "idempotency_lease"})


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSettings:
    """Where the broker and the router's admin API are, and how to run."""

    #: ``WORKER_AMQP_URL`` (the application's own broker user), else ``ROUTER_AMQP_URL``.
    amqp_url: str = DEFAULT_AMQP_URL
    #: ``ROUTER_ADMIN_URL`` / ``ROUTER_ADMIN_TOKEN``: where the worker claims its events.
    admin_url: str = "http://127.0.0.1:8081"
    admin_token: str = ""
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
    idempotency_url: str | None = None
    #: ``WORKER_IDEMPOTENCY_LEASE``: seconds a replica's claim on a message id holds the id
    #: in that store before another replica may take it over (longer than any handler).
    idempotency_lease: float = DEFAULT_LEASE
    log_format: LogFormat = "auto"
    log_level: str = "info"

    @property
    def names(self) -> Names:
        return Names(self.namespace)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> WorkerSettings:
        raw: dict[str, str | None] = {
            "amqp_url": env.get("WORKER_AMQP_URL") or env.get("ROUTER_AMQP_URL"),
            "admin_url": env.get("ROUTER_ADMIN_URL"),
            "admin_token": env.get("ROUTER_ADMIN_TOKEN"),
            "namespace": env.get("ROUTER_NAMESPACE"),
            "prefetch": env.get("WORKER_PREFETCH"),
            "metrics_port": env.get("WORKER_METRICS_PORT"),
            "metrics_host": env.get("WORKER_METRICS_HOST"),
            "publish_timeout": env.get("WORKER_PUBLISH_TIMEOUT"),
            "claim_timeout": env.get("WORKER_CLAIM_TIMEOUT"),
            "shutdown_timeout": env.get("WORKER_SHUTDOWN_TIMEOUT"),
            "idempotency_url": env.get("WORKER_IDEMPOTENCY_URL"),
            "idempotency_lease": env.get("WORKER_IDEMPOTENCY_LEASE"),
            "log_format": env.get("ROUTER_LOG_FORMAT"),
            "log_level": env.get("ROUTER_LOG_LEVEL"),
        }
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if value is None or not value.strip():
                continue
            try:
                if name in _INTS:
                    values[name] = int(value)
                elif name in _FLOATS:
                    values[name] = float(value)
                else:
                    values[name] = value.strip()
            except ValueError:
                # every number is a WORKER_ variable
                raise WorkerConfigError(
                    f"WORKER_{name.upper()} must be a number, not {value!r}"
                ) from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        if settings.prefetch is not None and settings.prefetch < 1:
            raise WorkerConfigError("WORKER_PREFETCH must be at least 1")
        if not (math.isfinite(settings.idempotency_lease) and settings.idempotency_lease > 0):
            raise WorkerConfigError("WORKER_IDEMPOTENCY_LEASE must be a positive number of seconds")
        try:  # (read as the router reads it: refused here, at start, not at the first connect)
            parse_urls(settings.amqp_url)
        except ConfigError as error:
            raise WorkerConfigError(str(error)) from None
        return settings


__all__ = ["WorkerSettings"]
