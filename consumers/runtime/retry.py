"""The retry schedule: fixed delay tiers and a number of attempts. Pure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry after ``delays[0]`` seconds, then ``delays[1]``, ...; dead-letter after
    ``max_attempts`` attempts. The last tier repeats when attempts outnumber tiers."""

    delays: tuple[float, ...] = (5.0, 30.0, 300.0, 1800.0)
    max_attempts: int = 5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_attempts > 1 and not self.delays:
            raise ValueError("retries need at least one delay tier")
        if any(d <= 0 for d in self.delays) or list(self.delays) != sorted(self.delays):
            raise ValueError("delay tiers must be positive and ascending")

    @property
    def tiers_ms(self) -> tuple[int, ...]:
        """Each tier in milliseconds: one delay queue per tier."""
        return tuple(dict.fromkeys(round(d * 1000) for d in self.delays))

    def delay_after(self, failed_attempt: int, *, at_least: float = 0.0) -> int | None:
        """Milliseconds to wait before the next attempt, or None when none is left.

        ``at_least`` (a handler's :class:`~consumers.runtime.errors.Retry`) picks the first
        tier that is long enough (the longest if none is).
        """
        if failed_attempt >= self.max_attempts:
            return None
        tiers = self.tiers_ms
        scheduled = round(self.delays[min(failed_attempt - 1, len(self.delays) - 1)] * 1000)
        wanted = round(at_least * 1000)
        if wanted > scheduled:
            return next((t for t in tiers if t >= wanted), tiers[-1])
        return scheduled


__all__ = ["RetryPolicy"]
