"""One RabbitMQ URL, read once, for every connection the router opens to it.

The topology is declared on an aio-pika (aiormq) connection and webhooks are published on
:class:`~router.amqp.publisher.ConfirmPublisher`; both are opened from the same :class:`AmqpUrl`,
so a URL that one of them would read differently is refused at start instead.

What the URL may say is what aiormq 7 and aio-pika 10 read from it (their
``Connection.__init__`` and ``Connection.PARAMETERS``), with the same meaning:

- user and password (URL-decoded; a missing one is ``guest``, as aiormq's ``PlainAuth``),
  the host, the port (5672, or 5671 for ``amqps://``) and the vhost (the path without its
  first slash, ``%2F`` read as ``/``; an empty path is ``/``);
- ``heartbeat`` (seconds, 0 to 65534; 60 when absent, as aiormq): see :func:`negotiate_heartbeat`;
- ``timeout`` (seconds): aiormq parses and then ignores it; here it bounds connecting to that
  node, for both connections;
- ``name``: the connection's name in RabbitMQ's management UI, for both connections;
- ``auth``: ``plain`` (the default) or ``external`` (a TLS client certificate);
- ``amqps://`` only: ``cafile``, ``capath``, ``cadata`` (base64, as aiormq), ``certfile``,
  ``keyfile``, ``no_verify_ssl`` (``0`` or ``1``); one :class:`ssl.SSLContext` is built from
  them, as aiormq's ``SSLContextProvider`` builds it, and given to both connections;
- ``interleave`` and ``happy_eyeballs_delay``: passed to the socket's connect, as aio-pika.

Anything else (``frame_max``, ``channel_max``, ``connection_timeout``, a misspelling...) is
refused with one line naming it: aiormq would silently ignore it. Values aiormq would quietly
turn into something else (a heartbeat of ``abc`` into 0, ``no_verify_ssl=false`` into *no*
verification) are refused as well. No message here ever holds the password.
"""

from __future__ import annotations

import binascii
import math
import ssl
from base64 import b64decode
from dataclasses import dataclass
from typing import Literal

from multidict import MultiDictProxy
from yarl import URL

from router.errors import ConfigError
from router.secret import redact_url

#: aiormq's heartbeat when the URL sets none (seconds).
DEFAULT_HEARTBEAT = 60
_DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
_TLS_OPTIONS = ("cafile", "capath", "cadata", "certfile", "keyfile", "no_verify_ssl")
_OPTIONS = frozenset(
    ("heartbeat", "timeout", "name", "auth", "interleave", "happy_eyeballs_delay", *_TLS_OPTIONS)
)

Auth = Literal["PLAIN", "EXTERNAL"]
Query = MultiDictProxy[str]


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """What an ``amqps://`` URL says about TLS (aiormq's ``SSLCerts``)."""

    cafile: str | None = None
    capath: str | None = None
    cadata: bytes | None = None
    certfile: str | None = None
    keyfile: str | None = None
    verify: bool = True


@dataclass(frozen=True, slots=True)
class AmqpUrl:
    """A checked RabbitMQ URL: see the module for what each part means."""

    #: The URL as given (holds the password: never log it; use :attr:`redacted`).
    raw: str
    host: str
    port: int
    user: str
    password: str
    vhost: str
    #: The heartbeat this client asks for (seconds; 0: none of its own).
    heartbeat: int
    auth: Auth
    name: str | None = None
    #: Seconds to connect to this node (None: the caller's default).
    connect_timeout: float | None = None
    tls: TlsOptions | None = None
    interleave: int | None = None
    happy_eyeballs_delay: float | None = None

    @classmethod
    def parse(cls, raw: str) -> AmqpUrl:
        """The URL read, or :class:`ConfigError` in one line naming what is wrong."""
        shown = redact(raw)
        try:
            url = URL(raw)
            host, port = url.host, url.port
        except ValueError as error:
            raise ConfigError(f"{shown} is not a valid URL: {error}") from None
        if url.scheme not in _DEFAULT_PORTS:
            raise ConfigError(f"{shown} is not an amqp:// or amqps:// URL")
        if not host:
            raise ConfigError(f"{shown} names no host")
        query = url.query
        for option in query:
            if option not in _OPTIONS:
                raise ConfigError(
                    f"{shown}: the URL option {option!r} is not supported"
                    f" (supported: {', '.join(sorted(_OPTIONS))})"
                )
            if len(query.getall(option)) > 1:
                raise ConfigError(f"{shown}: the URL option {option!r} is given twice")
        secure = url.scheme == "amqps"
        if not secure and (tls_given := [o for o in _TLS_OPTIONS if o in query]):
            raise ConfigError(f"{shown}: the URL option {tls_given[0]!r} needs amqps://")
        auth = query.get("auth", "plain").upper()
        if auth not in ("PLAIN", "EXTERNAL"):
            raise ConfigError(f"{shown}: the URL option 'auth' must be plain or external")
        path = url.path
        heartbeat = _integer(shown, query, "heartbeat", 0, 65534)
        return cls(
            raw=raw,
            host=host,
            port=port or _DEFAULT_PORTS[url.scheme],
            # aiormq's PlainAuth: a URL without a user (or password) logs in as guest (guest)
            user=url.user or "guest",
            password=url.password or "guest",
            vhost="/" if path in ("", "/") else path[1:].replace("%2F", "/"),  # as aiormq
            heartbeat=DEFAULT_HEARTBEAT if heartbeat is None else heartbeat,
            auth="EXTERNAL" if auth == "EXTERNAL" else "PLAIN",
            name=query.get("name") or None,
            connect_timeout=_seconds(shown, query, "timeout"),
            tls=_tls(shown, query) if secure else None,
            interleave=_integer(shown, query, "interleave", 0, 2**31),
            happy_eyeballs_delay=_seconds(shown, query, "happy_eyeballs_delay"),
        )

    @property
    def redacted(self) -> str:
        """The URL without its password, for logs and messages."""
        return redact(self.raw)

    def for_aio_pika(self) -> str:
        """This URL as aio-pika is given it: the query rewritten from the values read here
        (the heartbeat always explicit), TLS options left out (:meth:`ssl_context` is passed
        instead). The connection name is passed as a client property by the caller."""
        query: dict[str, str] = {"heartbeat": str(self.heartbeat), "auth": self.auth.lower()}
        if self.interleave is not None:
            query["interleave"] = str(self.interleave)
        if self.happy_eyeballs_delay is not None:
            query["happy_eyeballs_delay"] = repr(self.happy_eyeballs_delay)
        return str(URL(self.raw).with_query(query))

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of an ``amqps://`` URL (None for ``amqp://``), made as aiormq's
        ``SSLContextProvider._create_context`` makes it; :class:`ConfigError` naming the file
        option that cannot be read."""
        tls = self.tls
        if tls is None:
            return None
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=tls.cafile, capath=tls.capath, cadata=tls.cadata
            )
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"{self.redacted}: cafile/capath/cadata unusable: {error}") from None
        if tls.certfile:
            try:
                context.load_cert_chain(tls.certfile, tls.keyfile)
            except (OSError, ssl.SSLError) as error:
                raise ConfigError(f"{self.redacted}: certfile/keyfile unusable: {error}") from None
        if not tls.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


#: The URL without its password, for logs and messages (also when it cannot be parsed).
redact = redact_url


def negotiate_heartbeat(asked: int, offered: int) -> int:
    """The heartbeat both sides keep: the lower of the two, unless one is 0 (no preference),
    then the other; 0 only when both are 0 (RabbitMQ's documented rule, as its Java client).

    aiormq instead answers Tune with its own value whatever the server offered; the two
    agree whenever the URL's heartbeat is at most the server's and not 0. The declaring
    connection lives for seconds, so only the publisher's heartbeat matters in practice.
    """
    if asked and offered:
        return min(asked, offered)
    return asked or offered


def _integer(shown: str, query: Query, option: str, low: int, high: int) -> int | None:
    raw = query.get(option)
    if raw is None:
        return None
    if not raw.strip().isdigit() or not low <= int(raw) <= high:
        raise ConfigError(
            f"{shown}: the URL option {option!r} must be a whole number from {low} to {high}"
        )
    return int(raw)


def _seconds(shown: str, query: Query, option: str) -> float | None:
    raw = query.get(option)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"{shown}: the URL option {option!r} must be a positive number")
    return seconds


def _tls(shown: str, query: Query) -> TlsOptions:
    verify = query.get("no_verify_ssl", "0")
    if verify not in ("0", "1"):
        # aiormq verifies only when it is exactly "0": "false" would turn verification off
        raise ConfigError(f"{shown}: the URL option 'no_verify_ssl' must be 0 or 1")
    cadata: bytes | None = None
    if raw := query.get("cadata"):
        try:
            cadata = b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{shown}: the URL option 'cadata' must be base64") from None
    if query.get("keyfile") and not query.get("certfile"):
        raise ConfigError(f"{shown}: the URL option 'keyfile' needs 'certfile'")
    return TlsOptions(
        cafile=query.get("cafile") or None,
        capath=query.get("capath") or None,
        cadata=cadata,
        certfile=query.get("certfile") or None,
        keyfile=query.get("keyfile") or None,
        verify=verify == "0",
    )


__all__ = ["DEFAULT_HEARTBEAT", "AmqpUrl", "TlsOptions", "negotiate_heartbeat", "redact"]
