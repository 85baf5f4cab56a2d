"""What a handler raises to choose an outcome, and the runtime's own errors.

:class:`Reject` and :class:`Retry` are outcomes a handler chooses, settled by the runtime.
The runtime's errors are also each of one kind of :mod:`router.errors`, which decides the
``worker`` command's exit code.
"""

from __future__ import annotations

from router.errors import Conflict, InvalidInput


class ConsumerError(Exception):
    """Root of the worker runtime's errors."""


class Reject(ConsumerError):
    """Raise in a handler to dead-letter the event at once: bad data no retry will fix."""


class NoHandler(Reject):
    """The worker has no handler for an event it received (its claims changed under it)."""


class Retry(ConsumerError):
    """Raise in a handler to retry after at least ``delay`` seconds (the tier that fits).

    Any other exception retries too, with the policy's delay for the attempt; this one only
    asks for a longer wait. It still counts as an attempt.
    """

    def __init__(self, reason: str = "retry requested", *, delay: float = 0.0) -> None:
        super().__init__(reason)
        self.delay = delay


class ClaimRefused(ConsumerError, Conflict):
    """Raised at start-up when the router refuses a claim: another application holds it."""


class WorkerConfigError(ConsumerError, InvalidInput):
    """Raised when a worker is defined or configured wrongly (bad pattern, no admin token)."""


__all__ = ["ClaimRefused", "ConsumerError", "NoHandler", "Reject", "Retry", "WorkerConfigError"]
