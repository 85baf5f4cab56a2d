"""Settings, built once at the edge (the CLI) from the environment and flags, then passed down.

Library code never reads ``os.environ``: it receives a :class:`Settings`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from router.amqp.nodes import parse_urls
from router.contract.names import Names
from router.errors import ConfigError

LogFormat = Literal["auto", "json", "console"]
DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the ingress needs to run."""

    #: One RabbitMQ URL, or several comma-separated (one per cluster node).
    amqp_url: str = DEFAULT_AMQP_URL
    #: Every key a signature is accepted under (several during a key rotation).
    signing_keys: tuple[str, ...] = ()
    host: str = "0.0.0.0"
    port: int = 8080
    #: Ingress processes sharing the port (SO_REUSEPORT).
    workers: int = 1
    #: Bodies larger than this are refused with 413.
    max_body_bytes: int = 256 * 1024
    #: How long a publish may wait for the broker's confirm before the ingress answers 503.
    confirm_timeout: float = 5.0
    #: Confirm timeouts in a row (no ack between them) within ``confirm_timeout_window``
    #: seconds after which the publishing connection is dropped and the next node tried.
    confirm_timeouts_to_recycle: int = 3
    confirm_timeout_window: float = 30.0
    #: Seconds in the Retry-After header of a 503.
    retry_after: int = 5
    #: Seconds a client has to send a request's line and headers, counted from the opening of
    #: its connection or from the first byte of a later request on it; then it is disconnected.
    header_timeout: float = 10.0
    #: Seconds a client may take to send a webhook's body once its headers arrived; 408 after.
    body_timeout: float = 30.0
    #: Seconds a kept-alive connection may sit idle after an answer before it is closed (keep
    #: it above the idle timeout of a proxy's connection pool in front: nginx's is 60 s).
    keepalive_timeout: float = 75.0
    #: Prefix of every exchange and queue name (see :class:`router.contract.names.Names`).
    namespace: str = "attentive"
    log_format: LogFormat = "auto"
    log_level: str = "info"
    #: Where claims persist: ``sqlite:///relative.db``, ``sqlite:////abs.db``, ``postgresql://``.
    database_url: str = "sqlite:///attentive-router.db"
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    #: Bearer token of the admin API; without one the admin API does not start.
    admin_token: str = ""

    @property
    def names(self) -> Names:
        return Names(self.namespace)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        """Settings from ``ROUTER_*`` variables; ``overrides`` (flags) win where not None."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(f"ROUTER_{field.name.upper()}")
            if raw is not None and raw.strip() != "":
                values[field.name] = _convert(field.name, raw.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that cannot work."""
        for name, port in (("ROUTER_PORT", self.port), ("ROUTER_ADMIN_PORT", self.admin_port)):
            if not 0 < port < 65536:
                raise ConfigError(f"{name} must be between 1 and 65535, not {port}")
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"ROUTER_WORKERS must be between 1 and 64, not {self.workers}")
        if self.max_body_bytes <= 0:
            raise ConfigError("ROUTER_MAX_BODY_BYTES must be positive")
        for name, seconds in (
            ("ROUTER_CONFIRM_TIMEOUT", self.confirm_timeout),
            ("ROUTER_HEADER_TIMEOUT", self.header_timeout),
            ("ROUTER_BODY_TIMEOUT", self.body_timeout),
            ("ROUTER_KEEPALIVE_TIMEOUT", self.keepalive_timeout),
            ("ROUTER_CONFIRM_TIMEOUT_WINDOW", self.confirm_timeout_window),
        ):
            if not (math.isfinite(seconds) and seconds > 0):
                raise ConfigError(f"{name} must be a positive number of seconds")
        if not 1 <= self.confirm_timeouts_to_recycle <= 1000:
            raise ConfigError(
                "ROUTER_CONFIRM_TIMEOUTS_TO_RECYCLE must be between 1 and 1000,"
                f" not {self.confirm_timeouts_to_recycle}"
            )
        if self.retry_after < 0:
            raise ConfigError("ROUTER_RETRY_AFTER must not be negative")
        if self.log_level.upper() not in _LOG_LEVELS:
            raise ConfigError(f"ROUTER_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS).lower()}")
        if self.log_format not in ("auto", "json", "console"):
            raise ConfigError("ROUTER_LOG_FORMAT must be auto, json or console")
        for url in parse_urls(self.amqp_url):  # ConfigError naming an option it cannot honour
            url.ssl_context()  # and a TLS file that cannot be read
        if not self.namespace or any(c in self.namespace for c in " *#"):
            raise ConfigError("ROUTER_NAMESPACE must be a non-empty name without spaces, * or #")

    def require_admin_token(self) -> str:
        """The admin token, or :class:`ConfigError` when none is configured."""
        if not self.admin_token:
            raise ConfigError("no admin token: set ROUTER_ADMIN_TOKEN")
        return self.admin_token

    @property
    def admin_url(self) -> str:
        """Where the CLI finds the admin API (``ROUTER_ADMIN_URL`` is read by the CLI)."""
        host = "127.0.0.1" if self.admin_host in ("0.0.0.0", "::", "") else self.admin_host
        return f"http://{host}:{self.admin_port}"

    def require_signing_keys(self) -> None:
        """Raise :class:`ConfigError` when no signing key is configured."""
        if not self.signing_keys:
            raise ConfigError(
                "no signing key: set ROUTER_SIGNING_KEYS (comma-separated) or pass --signing-key"
            )


def parse_keys(raw: str) -> tuple[str, ...]:
    """Comma-separated signing keys, blanks dropped."""
    return tuple(key.strip() for key in raw.split(",") if key.strip())


def _convert(name: str, raw: str) -> Any:
    env_name = f"ROUTER_{name.upper()}"
    try:
        match name:
            case "signing_keys":
                return parse_keys(raw)
            case (
                "port"
                | "admin_port"
                | "max_body_bytes"
                | "retry_after"
                | "workers"
                | "confirm_timeouts_to_recycle"
            ):
                return int(raw)
            case (
                "confirm_timeout"
                | "header_timeout"
                | "body_timeout"
                | "keepalive_timeout"
                | "confirm_timeout_window"
            ):
                return float(raw)
            case _:
                return raw
    except ValueError:
        raise ConfigError(f"{env_name} must be a number, not {raw!r}") from None


__all__ = ["DEFAULT_AMQP_URL", "LogFormat", "Settings", "parse_keys"]
