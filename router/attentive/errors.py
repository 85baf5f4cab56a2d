"""What goes wrong talking to Attentive's Webhooks API, one error class each.

:class:`AttentiveError` is the root of the failures of a call; each failure is also of one
kind of :mod:`router.errors`, which decides how the command line reports it.
"""

from __future__ import annotations

from router.errors import InvalidInput, NotFound, RouterError, Unavailable, UpstreamFailed


class AttentiveError(RouterError):
    """Root of the failures of a call to Attentive; its message is one line without the token."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        #: Attentive's HTTP status, when it answered.
        self.status = status


class AttentiveAuthError(AttentiveError, UpstreamFailed):
    """401 or 403: the token is wrong, expired, or lacks the ``webhooks:write`` scope."""


class AttentiveNotFound(AttentiveError, NotFound):
    """404, or no webhook with that id in the listing."""


class AttentiveRejected(AttentiveError, UpstreamFailed):
    """400 (or another 4xx): Attentive refused the request; its own message is quoted."""


class AttentiveUnavailable(AttentiveError, Unavailable):
    """429, 5xx, a timeout or a network failure, still so after the last try."""


class AttentiveProtocolError(AttentiveError, UpstreamFailed):
    """An answer the client cannot read, or a created webhook it cannot identify."""


class InvalidWebhookInput(InvalidInput):
    """A webhook URL or event list refused before anything is sent."""


__all__ = [
    "AttentiveAuthError",
    "AttentiveError",
    "AttentiveNotFound",
    "AttentiveProtocolError",
    "AttentiveRejected",
    "AttentiveUnavailable",
    "InvalidWebhookInput",
]
