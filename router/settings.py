"""Settings, built once at the edge (the CLI) from the environment and flags, then passed down.

Library code never reads ``os.environ``: it receives a :class:`Settings`. Each field is read
from one ``ROUTER_*`` variable, declared once in :data:`VARIABLES` (read and checked by
:mod:`router.config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from router import config
from router.amqp.nodes import parse_urls
from router.config import Variable
from router.contract.names import Names
from router.errors import ConfigError

LogFormat = Literal["auto", "json", "console"]
DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
LOG_FORMATS: Final = ("auto", "json", "console")
#: ``ROUTER_LOG_LEVEL`` takes these in any case.
LOG_LEVELS: Final = ("debug", "info", "warning", "error")


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
    #: ``ROUTER_ADMIN_URL``: where the CLI finds the admin API, when not at ``admin_host`` and
    #: ``admin_port`` (behind a proxy, in another container); see :attr:`admin_url`.
    admin_api_url: str = ""

    @property
    def names(self) -> Names:
        return Names(self.namespace)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        """Settings from ``ROUTER_*`` variables; ``overrides`` (flags) win where not None."""
        return config.load(cls, env, VARIABLES, overrides)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that cannot work."""
        config.check_all(self, VARIABLES)

    def require_admin_token(self) -> str:
        """The admin token, or :class:`ConfigError` when none is configured."""
        if not self.admin_token:
            raise ConfigError("no admin token: set ROUTER_ADMIN_TOKEN")
        return self.admin_token

    @property
    def admin_url(self) -> str:
        """Where the CLI finds the admin API: ``ROUTER_ADMIN_URL``, else the admin listener's
        address (a wildcard host becomes the loopback address)."""
        if self.admin_api_url:
            return self.admin_api_url
        host = "127.0.0.1" if self.admin_host in ("0.0.0.0", "::", "") else self.admin_host
        return f"http://{host}:{self.admin_port}"

    def require_signing_keys(self) -> None:
        """Raise :class:`ConfigError` when no signing key is configured."""
        if not self.signing_keys:
            raise ConfigError("no signing key: set ROUTER_SIGNING_KEYS (comma-separated)")


def parse_keys(raw: str) -> tuple[str, ...]:
    """Comma-separated signing keys, blanks dropped."""
    return config.split_commas(raw)


def amqp_urls_usable(raw: str) -> bool:
    """True if every URL of the comma-separated list can be honoured by both connections and
    its TLS files can be read; else :class:`ConfigError` naming the first thing refused."""
    for url in parse_urls(raw):
        url.ssl_context()
    return True


def _namespace_usable(namespace: str) -> bool:
    return bool(namespace) and not any(c in namespace for c in " *#")


#: The variable each field is read from (field name → variable).
VARIABLES: Final[Mapping[str, Variable[Any]]] = {
    "amqp_url": config.text(
        "ROUTER_AMQP_URL", accepted="amqp:// or amqps:// URLs", valid=amqp_urls_usable
    ),
    "signing_keys": config.comma_list("ROUTER_SIGNING_KEYS"),
    "host": config.text("ROUTER_HOST"),
    "port": config.integer("ROUTER_PORT", 1, 65535),
    "workers": config.integer("ROUTER_WORKERS", 1, 64),
    "max_body_bytes": config.integer("ROUTER_MAX_BODY_BYTES", 1),
    "confirm_timeout": config.seconds("ROUTER_CONFIRM_TIMEOUT"),
    "confirm_timeouts_to_recycle": config.integer("ROUTER_CONFIRM_TIMEOUTS_TO_RECYCLE", 1, 1000),
    "confirm_timeout_window": config.seconds("ROUTER_CONFIRM_TIMEOUT_WINDOW"),
    "retry_after": config.integer("ROUTER_RETRY_AFTER", 0),
    "header_timeout": config.seconds("ROUTER_HEADER_TIMEOUT"),
    "body_timeout": config.seconds("ROUTER_BODY_TIMEOUT"),
    "keepalive_timeout": config.seconds("ROUTER_KEEPALIVE_TIMEOUT"),
    "namespace": config.text(
        "ROUTER_NAMESPACE",
        accepted="a non-empty name without spaces, * or #",
        valid=_namespace_usable,
    ),
    "log_format": config.choice("ROUTER_LOG_FORMAT", LOG_FORMATS),
    "log_level": config.choice("ROUTER_LOG_LEVEL", LOG_LEVELS, any_case=True),
    "database_url": config.text("ROUTER_DATABASE_URL"),
    "admin_host": config.text("ROUTER_ADMIN_HOST"),
    "admin_port": config.integer("ROUTER_ADMIN_PORT", 1, 65535),
    "admin_token": config.text("ROUTER_ADMIN_TOKEN"),
    "admin_api_url": config.text("ROUTER_ADMIN_URL"),
}


__all__ = [
    "DEFAULT_AMQP_URL",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "VARIABLES",
    "LogFormat",
    "Settings",
    "amqp_urls_usable",
    "parse_keys",
]
