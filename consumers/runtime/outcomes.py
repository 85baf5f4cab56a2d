"""What became of one delivery; the runtime settles each with the broker in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Handled:
    """The handler returned: ack."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """Not handled on purpose (already handled within the idempotency window): ack."""

    reason: str


@dataclass(frozen=True, slots=True)
class Deferred:
    """Another delivery of the same message id is being handled (by this replica or another):
    publish to the shortest delay tier without counting an attempt, then ack, so it comes
    back once that handling is done (and is then skipped) or abandoned (and is then handled).
    """


@dataclass(frozen=True, slots=True)
class RetryLater:
    """The handler failed; publish to the delay tier, then ack."""

    delay_ms: int
    error: BaseException


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """No retry is left or can help; publish to the dead-letter queue, then ack."""

    #: ``exhausted``, ``rejected`` or ``no-handler``.
    reason: str
    error: BaseException


Outcome = Handled | Skipped | Deferred | RetryLater | DeadLetter

__all__ = ["DeadLetter", "Deferred", "Handled", "Outcome", "RetryLater", "Skipped"]
