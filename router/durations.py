"""Spans and sizes as people write them: ``7d``, ``36h``, ``90m``, ``20GB``.

Pure parsing, shared by the settings (the archive's retention), the CLI and the admin API
(``--since 1h``: an hour ago).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_SPAN_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?)b?\s*$", re.IGNORECASE)
_SIZE_FACTOR = {
    "": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}


def parse_span(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit (s, m, h, d, w); ``ValueError``
    when it is none, or not positive."""
    found = _SPAN.match(text)
    if found is None:
        raise ValueError(f"not a span such as 90s, 30m, 6h, 7d: {text!r}")
    seconds = float(found.group(1)) * _SPAN_SECONDS[found.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"not a positive span: {text!r}")
    return seconds


def parse_size(text: str) -> int:
    """Bytes in ``text``: a whole number with an optional unit (KB, MB, GB, TB: powers of
    1000; KiB, MiB, GiB, TiB: of 1024); ``ValueError`` when it is none, or not positive."""
    found = _SIZE.match(text)
    if found is None:
        raise ValueError(f"not a size such as 500MB or 20GB: {text!r}")
    size = int(float(found.group(1)) * _SIZE_FACTOR[found.group(2).lower()])
    if size <= 0:
        raise ValueError(f"not a positive size: {text!r}")
    return size


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """The moment ``text`` names: an ISO 8601 time (UTC unless it says otherwise), or a span
    before ``now`` (``1h``: an hour ago); ``ValueError`` when it is neither."""
    now = now or datetime.now(UTC)
    try:
        return now - timedelta(seconds=parse_span(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (ISO 8601 such as 2026-11-26T09:00Z, or a span ago: 1h)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def span_words(seconds: float) -> str:
    """``seconds`` in the largest unit that divides it: ``7d``, ``36h``, ``90s``."""
    whole = int(seconds)
    for unit in ("w", "d", "h", "m"):
        size = _SPAN_SECONDS[unit]
        if whole and whole % size == 0 and whole == seconds:
            return f"{whole // size}{unit}"
    return f"{seconds:g}s"


__all__ = ["parse_moment", "parse_size", "parse_span", "span_words"]
