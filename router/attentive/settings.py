"""Where Attentive's API is and how to call it, read once from ``ATTENTIVE_API_*``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from router.errors import ConfigError

#: Attentive's API (``ATTENTIVE_API_URL`` overrides it, e.g. for a local fake).
DEFAULT_API_URL = "https://api.attentivemobile.com/v1"
#: The OAuth scope the token needs.
WEBHOOKS_SCOPE = "webhooks:write"
TOKEN_VARIABLE = "ATTENTIVE_API_TOKEN"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True, slots=True, kw_only=True)
class AttentiveSettings:
    """How to reach Attentive: read once at the edge (:meth:`from_env`), then passed down."""

    token: str = field(repr=False)
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
        token = env.get(TOKEN_VARIABLE, "").strip()
        if not token:
            raise ConfigError(
                f"no Attentive API token: set {TOKEN_VARIABLE} "
                f"(an OAuth token with the {WEBHOOKS_SCOPE} scope)"
            )
        settings = cls(
            token=token,
            base_url=base_url or env.get("ATTENTIVE_API_URL", "").strip() or DEFAULT_API_URL,
            attempts=_env_number(env, "ATTENTIVE_API_ATTEMPTS", 3, int),
            retry_delay=_env_number(env, "ATTENTIVE_API_RETRY_DELAY", 0.5, float),
            timeout=_env_number(env, "ATTENTIVE_API_TIMEOUT", 15.0, float),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that cannot work."""
        if not self.token or any(c.isspace() or not c.isprintable() for c in self.token):
            # never quote the token, not even a wrong one
            raise ConfigError(f"{TOKEN_VARIABLE} must be one word without spaces")
        parts = urlsplit(self.base_url)
        secure = parts.scheme == "https" or (
            parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
        )
        if not secure or not parts.hostname:
            raise ConfigError(
                "ATTENTIVE_API_URL must be an https:// URL (plain http only to localhost), "
                f"not {self.base_url!r}"
            )
        if not 1 <= self.attempts <= 10:
            raise ConfigError("ATTENTIVE_API_ATTEMPTS must be between 1 and 10")
        if not (math.isfinite(self.retry_delay) and self.retry_delay >= 0):
            raise ConfigError("ATTENTIVE_API_RETRY_DELAY must be a number of seconds (>= 0)")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigError("ATTENTIVE_API_TIMEOUT must be a positive number of seconds")


_N = TypeVar("_N", int, float)


def _env_number(env: Mapping[str, str], name: str, default: _N, kind: Callable[[str], _N]) -> _N:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None


__all__ = ["DEFAULT_API_URL", "TOKEN_VARIABLE", "WEBHOOKS_SCOPE", "AttentiveSettings"]
