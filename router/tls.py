"""TLS on the admin plane: the listener's certificate, and the CA its clients trust.

The admin API carries a token that can purge, replay and reveal parked events, so between
machines it is served over TLS: ``ROUTER_ADMIN_TLS_CERT`` and ``ROUTER_ADMIN_TLS_KEY`` (PEM
files) turn it on for the listener; its clients (the CLI, a worker claiming its events) are
given an ``https://`` ``ROUTER_ADMIN_URL`` and, for a certificate of a private CA (or a
self-signed one), ``ROUTER_ADMIN_CA``. Every refusal is one line naming the variables.
"""

from __future__ import annotations

import ssl

from router.errors import ConfigError

CERT_VARIABLE = "ROUTER_ADMIN_TLS_CERT"
KEY_VARIABLE = "ROUTER_ADMIN_TLS_KEY"
CA_VARIABLE = "ROUTER_ADMIN_CA"


def server_context(cert: str, key: str) -> ssl.SSLContext | None:
    """The admin listener's TLS context from the PEM files ``cert`` (the chain) and ``key``;
    None when neither is given (plain HTTP). :class:`ConfigError` when only one is given or
    they cannot be loaded together."""
    check_pair(cert, key)
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except OSError as error:  # (ssl.SSLError is one)
        raise ConfigError(
            f"{CERT_VARIABLE} / {KEY_VARIABLE}: cannot load {cert} with {key}: "
            f"{error.strerror or error}"
        ) from None
    return context


def check_pair(cert: str, key: str) -> None:
    """:class:`ConfigError` when only one of the certificate and the key is given."""
    if bool(cert) != bool(key):
        given, missing = (CERT_VARIABLE, KEY_VARIABLE) if cert else (KEY_VARIABLE, CERT_VARIABLE)
        raise ConfigError(f"{given} is set but {missing} is not: TLS needs both")


def client_context(ca_file: str = "") -> ssl.SSLContext:
    """The context a client of an ``https://`` admin API verifies it with: the system's CAs,
    or only ``ca_file`` (PEM) when given; the host name is checked either way."""
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except OSError as error:
        raise ConfigError(
            f"{CA_VARIABLE}: cannot load {ca_file}: {error.strerror or error}"
        ) from None


__all__ = [
    "CA_VARIABLE",
    "CERT_VARIABLE",
    "KEY_VARIABLE",
    "check_pair",
    "client_context",
    "server_context",
]
