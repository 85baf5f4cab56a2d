"""Every error the router raises on purpose, under one root."""

from __future__ import annotations


class RouterError(Exception):
    """Root of the router's own errors."""


class ConfigError(RouterError):
    """Raised when settings from the environment or flags are missing or malformed."""


class PublishFailed(RouterError):
    """Raised when the broker did not confirm a message: down, blocked, nacked or too slow."""


__all__ = ["ConfigError", "PublishFailed", "RouterError"]
