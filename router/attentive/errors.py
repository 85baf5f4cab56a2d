"""What goes wrong talking to Attentive's Webhooks API, one error class each."""

from __future__ import annotations

from router.errors import RouterError


class AttentiveError(RouterError):
    """Root of the failures of a call to Attentive; its message is one line without the token."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        #: Attentive's HTTP status, when it answered.
        self.status = status


class AttentiveAuthError(AttentiveError):
    """401 or 403: the token is wrong, expired, or lacks the ``webhooks:write`` scope."""


class AttentiveNotFound(AttentiveError):
    """404, or no webhook with that id in the listing."""


class AttentiveRejected(AttentiveError):
    """400 (or another 4xx): Attentive refused the request; its own message is quoted."""


class AttentiveUnavailable(AttentiveError):
    """429, 5xx, a timeout or a network failure, still so after the last try."""


class AttentiveProtocolError(AttentiveError):
    """An answer the client cannot read, or a created webhook it cannot identify."""


class InvalidWebhookInput(RouterError):
    """A webhook URL or event list refused before anything is sent (CLI exit code 2)."""


__all__ = [
    "AttentiveAuthError",
    "AttentiveError",
    "AttentiveNotFound",
    "AttentiveProtocolError",
    "AttentiveRejected",
    "AttentiveUnavailable",
    "InvalidWebhookInput",
]
