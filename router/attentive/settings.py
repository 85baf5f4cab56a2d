"""Where Attentive's API is and how to call it, read once from ``ATTENTIVE_API_*``.

Each variable is declared once in :data:`VARIABLES` (read and checked by :mod:`router.config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from router import config
from router.config import Variable
from router.errors import ConfigError
from router.secret import Secret, SecretField, SecretText

#: Attentive's API (``ATTENTIVE_API_URL`` overrides it, e.g. for a local fake).
DEFAULT_API_URL = "https://api.attentivemobile.com/v1"
#: The OAuth scope the token needs.
WEBHOOKS_SCOPE = "webhooks:write"
TOKEN_VARIABLE = "ATTENTIVE_API_TOKEN"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True, kw_only=True)
class AttentiveSettings:
    """How to reach Attentive: read once at the edge (:meth:`from_env`), then passed down."""

    #: The OAuth token (a :class:`~router.secret.Secret`: ``.reveal()`` gives it).
    token: SecretText = SecretField(Secret.of)
    base_url: str = DEFAULT_API_URL
    #: Tries per request (the first one included).
    attempts: int = 3
    #: Seconds before the second try; doubled before each further one.
    retry_delay: float = 0.5
    #: No single wait is longer; a longer ``Retry-After`` ends the retries at once.
    max_delay: float = 30.0
    #: Seconds per request.
    timeout: float = 15.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, base_url: str | None = None) -> AttentiveSettings:
        """``ATTENTIVE_API_TOKEN`` (required), ``ATTENTIVE_API_URL``, ``ATTENTIVE_API_ATTEMPTS``,
        ``ATTENTIVE_API_RETRY_DELAY``, ``ATTENTIVE_API_TIMEOUT``; :class:`ConfigError` if wrong.
        """
        if VARIABLES["token"].raw(env) is None:
            raise ConfigError(
                f"no Attentive API token: set {TOKEN_VARIABLE} "
                f"(an OAuth token with the {WEBHOOKS_SCOPE} scope)"
            )
        return config.load(cls, env, VARIABLES, {"base_url": base_url or None})

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that cannot work."""
        config.check_all(self, VARIABLES)


def _one_word(token: str) -> bool:
    return bool(token) and not any(c.isspace() or not c.isprintable() for c in token)


def _secure(url: str) -> bool:
    parts = urlsplit(url)
    loopback = parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
    return bool(parts.hostname) and (parts.scheme == "https" or loopback)


#: The variable each field is read from (field name → variable); ``max_delay`` has none.
VARIABLES: Final[Mapping[str, Variable[Any]]] = {
    # never quoted in an error, not even a wrong one
    "token": config.secret(TOKEN_VARIABLE, accepted="one word without spaces", valid=_one_word),
    "base_url": config.text(
        "ATTENTIVE_API_URL",
        accepted="an https:// URL (plain http only to localhost)",
        valid=_secure,
    ),
    "attempts": config.integer("ATTENTIVE_API_ATTEMPTS", 1, 10),
    "retry_delay": config.seconds("ATTENTIVE_API_RETRY_DELAY", zero=True),
    "timeout": config.seconds("ATTENTIVE_API_TIMEOUT"),
}


__all__ = ["DEFAULT_API_URL", "TOKEN_VARIABLE", "VARIABLES", "WEBHOOKS_SCOPE", "AttentiveSettings"]
