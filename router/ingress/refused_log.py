"""Lines about requests that are no authentic webhook, bounded in size and in number.

The webhook port faces the internet: anyone can send it requests by the thousand (unsigned,
to any path, cut off half-way), and each would otherwise write a line as long as its path.
So a line about such a request carries its path cut to :data:`PATH_CHARS` characters (and a
marker saying how many were cut), and one :class:`RefusedLog` per ingress process lets
through at most ``rate`` of them a second, after a burst of :data:`BURST_SECONDS` seconds'
worth (a token bucket). The lines it holds back are counted by kind (the request's
``outcome``, or the connection's event), and one ``log_lines_dropped`` line says how many of
each at most every :data:`SUMMARY_EVERY` seconds, and when the ingress stops: nothing is lost
from the operator's view without a trace. The request counters of ``/metrics`` count every
request either way.

Lines about authentic webhooks (accepted, quarantined, refused for their company, or not
confirmed by RabbitMQ) and about the ingress's own errors never go through it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

#: The most characters of a path a line carries.
PATH_CHARS = 64
#: Lines a second about refused requests unless configured otherwise
#: (``ROUTER_REFUSED_LOG_RATE``).
DEFAULT_RATE = 10
#: The bucket holds this many seconds' worth of lines: a short burst is logged whole.
BURST_SECONDS = 10
#: Seconds between two ``log_lines_dropped`` lines, at most one per period.
SUMMARY_EVERY = 5.0

log = structlog.get_logger("router.ingress")


def cut_path(path: str) -> str:
    """``path``, or its first :data:`PATH_CHARS` characters and ``…(+N)`` for the ``N``
    characters cut."""
    if len(path) <= PATH_CHARS:
        return path
    return f"{path[:PATH_CHARS]}…(+{len(path) - PATH_CHARS})"


class RefusedLog:
    """Whether a line about a refused request is written now: a token bucket of ``rate``
    lines a second, holding ``BURST_SECONDS * rate`` (``rate`` 0: none; summaries only)."""

    __slots__ = ("_clock", "_dropped", "_last", "_since", "_summary", "_tokens", "burst", "rate")

    def __init__(
        self, rate: int = DEFAULT_RATE, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate < 0:
            raise ValueError("rate must be 0 or more")
        self.rate = rate
        self.burst = BURST_SECONDS * rate
        self._clock = clock
        self._tokens = float(self.burst)
        self._last = clock()
        #: Lines held back since the last summary, by kind.
        self._dropped: dict[str, int] = {}
        self._since = 0.0
        self._summary: asyncio.TimerHandle | None = None

    def allow(self, kind: str) -> bool:
        """Take a token for a line of ``kind``; if there is none, count the line as dropped
        (and see that a summary follows) and say no."""
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        dropped = self._dropped
        if not dropped:
            self._since = now
            self._summarize_later()
        dropped[kind] = dropped.get(kind, 0) + 1
        return False

    @property
    def dropped(self) -> dict[str, int]:
        """The lines held back since the last summary, by kind."""
        return dict(self._dropped)

    def flush(self) -> None:
        """Write the summary of the lines held back now, if any were (the ingress calls it
        as it stops)."""
        if self._summary is not None:
            self._summary.cancel()
            self._summary = None
        dropped, self._dropped = self._dropped, {}
        if dropped:
            log.warning(
                "log_lines_dropped",
                dropped=dict(sorted(dropped.items())),
                total=sum(dropped.values()),
                seconds=round(self._clock() - self._since, 3),
                rate=self.rate,
            )

    def _summarize_later(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # (no loop: the summary waits for the next flush)
            return
        self._summary = loop.call_later(SUMMARY_EVERY, self.flush)


__all__ = [
    "BURST_SECONDS",
    "DEFAULT_RATE",
    "PATH_CHARS",
    "SUMMARY_EVERY",
    "RefusedLog",
    "cut_path",
]
