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


Outcome = Handled | Skipped | RetryLater | DeadLetter

__all__ = ["DeadLetter", "Handled", "Outcome", "RetryLater", "Skipped"]
