"""Settings, built once at the edge (the CLI) from the environment and flags, then passed down.

Library code never reads ``os.environ``: it receives a :class:`Settings`. Each field is read
from one ``ROUTER_*`` variable, declared once in :data:`VARIABLES` (read and checked by
:mod:`router.config`). The secret ones (the broker's and the database's URLs, the signing
keys, the admin token, the subject key secret) are held as :class:`~router.secret.Secret`
values, which never show themselves: call ``.reveal()`` where the value itself is needed. A
signing key is a :class:`~router.contract.signing.SigningKey`: the key, and the companies it
is bound to (``ROUTER_SIGNING_KEYS=KEY@COMPANY|COMPANY,KEY``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from router import config, tls
from router.amqp.nodes import parse_urls
from router.amqp.topology import DEFAULT_ARCHIVE_MAX_AGE, DEFAULT_ARCHIVE_MAX_BYTES, Retention
from router.config import Variable
from router.contract.names import Names
from router.contract.signing import BINDING_SEPARATOR, COMPANY_SEPARATOR, SigningKey
from router.contract.type_labels import DEFAULT_MAX_OTHER_TYPES
from router.durations import parse_size, parse_span
from router.errors import ConfigError
from router.secret import (
    Secret,
    SecretField,
    SecretText,
    SecretUrl,
    SecretUrlText,
)
from router.tracing.settings import TracingSettings

LogFormat = Literal["auto", "json", "console"]
DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
LOG_FORMATS: Final = ("auto", "json", "console")
#: ``ROUTER_LOG_LEVEL`` takes these in any case.
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
#: The shortest admin token taken (a token can purge, replay and reveal parked events).
MIN_ADMIN_TOKEN_LENGTH: Final = 32
ADMIN_TOKEN_VARIABLE: Final = "ROUTER_ADMIN_TOKEN"
ADMIN_TOKEN_FILE_VARIABLE: Final = "ROUTER_ADMIN_TOKEN_FILE"
#: The file of named admin tokens with roles (``name role token`` lines: router.admin.tokens).
ADMIN_TOKENS_FILE_VARIABLE: Final = "ROUTER_ADMIN_TOKENS_FILE"
SIGNING_KEYS_VARIABLE: Final = "ROUTER_SIGNING_KEYS"
#: How an entry of ``ROUTER_SIGNING_KEYS`` is written.
SIGNING_KEY_FORMAT: Final = (
    f"KEY, or KEY{BINDING_SEPARATOR}COMPANY{COMPANY_SEPARATOR}COMPANY... for a key bound to "
    "those companies"
)


def signing_keys_of(values: tuple[str | Secret, ...]) -> tuple[SigningKey, ...]:
    """Each of ``values`` (an entry of ``ROUTER_SIGNING_KEYS``) as a :class:`SigningKey`;
    :class:`ConfigError` naming the variable, never the key, when one is malformed."""
    try:
        return tuple(SigningKey.of(value) for value in values)
    except ValueError as error:
        raise ConfigError(
            f"{SIGNING_KEYS_VARIABLE}: {error} (each entry is {SIGNING_KEY_FORMAT})"
        ) from None


#: The type of the signing keys' field: given entries, it holds :class:`SigningKey`\ s.
SigningKeys = SecretField[tuple[str | Secret, ...], tuple[SigningKey, ...]]


#: Lines a second about refused requests, per ingress process (the ingress's own default,
#: :data:`router.ingress.refused_log.DEFAULT_RATE`, is the same: a test keeps them equal;
#: settings sit below the ingress and do not import it).
DEFAULT_REFUSED_LOG_RATE = 10


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the ingress needs to run."""

    #: One RabbitMQ URL, or several comma-separated (one per cluster node).
    amqp_url: SecretUrlText = SecretField(SecretUrl.of, DEFAULT_AMQP_URL)
    #: Every key a signature is accepted under (several during a key rotation), each maybe
    #: bound to the companies it authenticates (:data:`SIGNING_KEY_FORMAT`).
    signing_keys: SigningKeys = SecretField(signing_keys_of, ())
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
    #: The internal listener: ``/metrics``, ``/readyz`` and ``/healthz`` for Prometheus and
    #: probes, without a token; never to be published (the webhook port serves webhooks and
    #: ``/healthz`` only).
    internal_host: str = "127.0.0.1"
    internal_port: int = 8082
    #: Prefix of every exchange and queue name (see :class:`router.contract.names.Names`).
    namespace: str = "attentive"
    log_format: LogFormat = "auto"
    log_level: str = "info"
    #: Where claims persist: ``sqlite:///relative.db``, ``sqlite:////abs.db``, ``postgresql://``.
    database_url: SecretUrlText = SecretField(SecretUrl.of, "sqlite:///attentive-router.db")
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    #: Bearer token of the admin API (at least :data:`MIN_ADMIN_TOKEN_LENGTH` characters;
    #: ``ROUTER_ADMIN_TOKEN``, or the file ``ROUTER_ADMIN_TOKEN_FILE`` names): an operator named
    #: ``admin``; without it or ``admin_tokens_file`` the admin API does not start.
    admin_token: SecretText = SecretField(Secret.of, "")
    #: A file of named tokens, each a viewer's or an operator's (``ROUTER_ADMIN_TOKENS_FILE``:
    #: read when the admin API starts, :mod:`router.admin.tokens`); with ``admin_token``, the
    #: single token is one more, an operator named ``admin``.
    admin_tokens_file: str = ""
    #: ``ROUTER_ADMIN_URL``: where the CLI finds the admin API, when not at ``admin_host`` and
    #: ``admin_port`` (behind a proxy, in another container); see :attr:`admin_url`.
    admin_api_url: str = ""
    #: PEM files of the admin listener's certificate (chain) and key: both set, it serves TLS.
    admin_tls_cert: str = ""
    admin_tls_key: str = ""
    #: A PEM file of the CA a client of an ``https://`` admin API trusts (else the system's).
    admin_ca: str = ""
    #: ``ROUTER_RABBITMQ_MANAGEMENT_URL``: RabbitMQ's management HTTP API
    #: (``http(s)://user:password@host:15672``), where the console's overview reads rates,
    #: nodes and alarms; without it, the overview reads queue depths over AMQP only.
    rabbitmq_management_url: SecretText = SecretField(Secret.of, "")
    #: Undocumented event types that get a ``type`` label of their own in the metrics (the
    #: first ones seen); later ones are counted as ``other``.
    metrics_max_other_types: int = DEFAULT_MAX_OTHER_TYPES
    #: Lines a second about requests that are no authentic webhook (after a burst of ten
    #: seconds' worth); those held back are counted in a ``log_lines_dropped`` line.
    refused_log_rate: int = DEFAULT_REFUSED_LOG_RATE
    #: ``ROUTER_SUBJECT_KEY_SECRET``: the secret the ``x-attentive-subject-key`` of each event
    #: is a keyed hash under (:mod:`router.contract.ordering`), at least
    #: :data:`MIN_ADMIN_TOKEN_LENGTH` characters. Unset, it is derived from the first signing
    #: key, and a change of that key changes every subject key; set, it outlives signing-key
    #: rotations. Changing it changes every subject key (consumers' newest-wins records start
    #: again): change it when no old event is still to come (no Attentive retries under way,
    #: no dead letters to replay), all ingress processes at once.
    subject_key_secret: SecretText = SecretField(Secret.of, "")

    #: ``ROUTER_ARCHIVE``: keep every accepted event in the archive stream (the ingress then
    #: publishes to the exchange in front of it and of the events exchange); off, the ingress
    #: publishes to the events exchange directly and the archive keeps what it has.
    archive: bool = True
    #: ``ROUTER_ARCHIVE_MAX_AGE`` (``7d``, ``36h``): events older than this leave the archive.
    archive_max_age: float = DEFAULT_ARCHIVE_MAX_AGE
    #: ``ROUTER_ARCHIVE_MAX_BYTES`` (``20GB``): past this size the oldest events leave first.
    archive_max_bytes: int = DEFAULT_ARCHIVE_MAX_BYTES

    #: Traces (OpenTelemetry's ``OTEL_*`` variables: :mod:`router.tracing`); off by default.
    tracing: TracingSettings = field(default_factory=TracingSettings)

    @property
    def names(self) -> Names:
        return Names(self.namespace)

    @property
    def archive_retention(self) -> Retention | None:
        """The archive's retention, or None when the archive is off."""
        if not self.archive:
            return None
        return Retention(max_age=self.archive_max_age, max_bytes=self.archive_max_bytes)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        """Settings from ``ROUTER_*`` variables; ``overrides`` (flags) win where not None."""
        variables = {**VARIABLES, "admin_token": admin_token_variable(env)}
        overrides = {"tracing": TracingSettings.from_env(env), **overrides}
        settings = config.load(cls, env, variables, overrides)
        settings._check_admin_tls()
        settings._check_ports()
        return settings

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that cannot work."""
        config.check_all(self, VARIABLES)
        self._check_admin_tls()
        self._check_ports()

    def require_admin_token(self) -> str:
        """The admin token itself, or :class:`ConfigError` when none is configured or it is
        too short to be one."""
        if not self.admin_token:
            raise ConfigError(f"no admin token: set {ADMIN_TOKEN_VARIABLE}")
        token = self.admin_token.reveal()
        VARIABLES["admin_token"].check(token)
        return token

    @property
    def admin_enabled(self) -> bool:
        """Whether the admin API has a token to serve: the single one or a tokens file."""
        return bool(self.admin_token) or bool(self.admin_tokens_file)

    @property
    def admin_url(self) -> str:
        """Where the CLI finds the admin API: ``ROUTER_ADMIN_URL``, else the admin listener's
        address (a wildcard host becomes the loopback address; https when it serves TLS)."""
        if self.admin_api_url:
            return self.admin_api_url
        host = "127.0.0.1" if self.admin_host in ("0.0.0.0", "::", "") else self.admin_host
        scheme = "https" if self.admin_tls_cert else "http"
        return f"{scheme}://{host}:{self.admin_port}"

    def _check_admin_tls(self) -> None:
        """:class:`ConfigError` when only one of the admin listener's certificate and key is
        set (the files are loaded when the listener starts: :func:`router.admin.app.
        admin_site`)."""
        tls.check_pair(self.admin_tls_cert, self.admin_tls_key)

    def _check_ports(self) -> None:
        """:class:`ConfigError` when the internal listener would share the webhook or the
        admin listener's port."""
        if self.internal_port in (self.port, self.admin_port):
            raise ConfigError(
                f"{_INTERNAL_PORT_VARIABLE} ({self.internal_port}) must differ from ROUTER_PORT"
                " and ROUTER_ADMIN_PORT"
            )

    def require_signing_keys(self) -> None:
        """Raise :class:`ConfigError` when no signing key is configured."""
        if not self.signing_keys:
            raise ConfigError(f"no signing key: set {SIGNING_KEYS_VARIABLE} (comma-separated)")


def admin_token_variable(env: Mapping[str, str]) -> Variable[str]:
    """Where the admin token is read from: ``ROUTER_ADMIN_TOKEN``, or the file that
    ``ROUTER_ADMIN_TOKEN_FILE`` names (a mounted secret); :class:`ConfigError` if both are
    set."""
    given, in_file = VARIABLES["admin_token"], ADMIN_TOKEN_FILE
    if given.raw(env) is not None and in_file.raw(env) is not None:
        raise ConfigError(
            f"{ADMIN_TOKEN_VARIABLE} and {ADMIN_TOKEN_FILE_VARIABLE} are both set: set one"
        )
    return config.first_set(env, in_file, given)


def parse_keys(raw: str) -> tuple[str, ...]:
    """Comma-separated signing keys, blanks dropped."""
    return config.split_commas(raw)


def amqp_urls_usable(raw: str) -> bool:
    """True if every URL of the comma-separated list can be honoured by both connections and
    its TLS files can be read; else :class:`ConfigError` naming the first thing refused."""
    for url in parse_urls(raw):
        url.ssl_context()
    return True


_INTERNAL_PORT_VARIABLE: Final = "ROUTER_INTERNAL_PORT"


def _namespace_usable(namespace: str) -> bool:
    return bool(namespace) and not any(c in namespace for c in " *#")


def _http_url(url: str) -> bool:
    return not url or url.startswith(("http://", "https://"))


def _long_enough(token: str) -> bool:
    return not token or len(token) >= MIN_ADMIN_TOKEN_LENGTH  # (none: no admin API)


_TOKEN_ACCEPTED = (
    f"at least {MIN_ADMIN_TOKEN_LENGTH} characters (make one with: openssl rand -hex 32)"
)
#: ``ROUTER_ADMIN_TOKEN_FILE``: the file that holds the admin token (see
#: :func:`admin_token_variable`).
ADMIN_TOKEN_FILE: Final = config.file_text(
    ADMIN_TOKEN_FILE_VARIABLE, accepted=_TOKEN_ACCEPTED, valid=_long_enough
)


#: The variable each field is read from (field name → variable).
VARIABLES: Final[Mapping[str, Variable[Any]]] = {
    "amqp_url": config.secret(
        "ROUTER_AMQP_URL", accepted="amqp:// or amqps:// URLs", valid=amqp_urls_usable
    ),
    "signing_keys": config.comma_list(SIGNING_KEYS_VARIABLE, secret=True),
    "host": config.text("ROUTER_HOST"),
    "port": config.integer("ROUTER_PORT", 1, 65535),
    "internal_host": config.text("ROUTER_INTERNAL_HOST"),
    "internal_port": config.integer(_INTERNAL_PORT_VARIABLE, 1, 65535),
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
    "database_url": config.secret("ROUTER_DATABASE_URL"),
    "admin_host": config.text("ROUTER_ADMIN_HOST"),
    "admin_port": config.integer("ROUTER_ADMIN_PORT", 1, 65535),
    # (or the file ROUTER_ADMIN_TOKEN_FILE names: see admin_token_variable)
    "admin_token": config.secret(
        ADMIN_TOKEN_VARIABLE, accepted=_TOKEN_ACCEPTED, valid=_long_enough
    ),
    "admin_tokens_file": config.text(ADMIN_TOKENS_FILE_VARIABLE),
    "admin_api_url": config.text("ROUTER_ADMIN_URL"),
    "admin_tls_cert": config.text(tls.CERT_VARIABLE),
    "admin_tls_key": config.text(tls.KEY_VARIABLE),
    "admin_ca": config.text(tls.CA_VARIABLE),
    "rabbitmq_management_url": config.secret(
        "ROUTER_RABBITMQ_MANAGEMENT_URL",
        accepted="an http:// or https:// URL",
        valid=_http_url,
    ),
    "metrics_max_other_types": config.integer("ROUTER_METRICS_MAX_OTHER_TYPES", 0, 10_000),
    "refused_log_rate": config.integer("ROUTER_REFUSED_LOG_RATE", 0, 100_000),
    "archive": config.boolean("ROUTER_ARCHIVE"),
    "archive_max_age": Variable(
        "ROUTER_ARCHIVE_MAX_AGE", "a span such as 7d, 36h or 90m", parse_span
    ),
    "archive_max_bytes": Variable(
        "ROUTER_ARCHIVE_MAX_BYTES", "a size such as 20GB or 500MB", parse_size
    ),
    "subject_key_secret": config.secret(
        "ROUTER_SUBJECT_KEY_SECRET", accepted=_TOKEN_ACCEPTED, valid=_long_enough
    ),
}


__all__ = [
    "ADMIN_TOKENS_FILE_VARIABLE",
    "ADMIN_TOKEN_FILE",
    "ADMIN_TOKEN_FILE_VARIABLE",
    "ADMIN_TOKEN_VARIABLE",
    "DEFAULT_AMQP_URL",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MIN_ADMIN_TOKEN_LENGTH",
    "SIGNING_KEYS_VARIABLE",
    "SIGNING_KEY_FORMAT",
    "VARIABLES",
    "LogFormat",
    "Settings",
    "SigningKeys",
    "admin_token_variable",
    "amqp_urls_usable",
    "parse_keys",
    "signing_keys_of",
]
