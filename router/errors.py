"""Every error the router raises on purpose, under one root."""

from __future__ import annotations


class RouterError(Exception):
    """Root of the router's own errors."""


class ConfigError(RouterError):
    """Raised when settings from the environment or flags are missing or malformed."""


class PublishFailed(RouterError):
    """Raised when the broker did not confirm a message: down, blocked, nacked or too slow."""


class InvalidClaim(RouterError):
    """Raised when a claim's application name, event pattern or company is malformed."""


class ClaimStoreError(RouterError):
    """Raised when the claims database cannot be reached or used."""


__all__ = ["ClaimStoreError", "ConfigError", "InvalidClaim", "PublishFailed", "RouterError"]
