"""How the console shows times and numbers: UTC with a relative age, counts with separators."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utc(moment: datetime | None) -> str:
    """``2026-12-07 08:15:02 UTC`` (an empty string for None)."""
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago ``moment`` was: ``just now``, ``42 s ago``, ``5 min ago``, ``3 h ago``,
    ``2 d ago`` (``in 5 min`` for a moment still to come)."""
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return duration((now or datetime.now(UTC)) - moment, suffix=True)


def seconds(value: float | None) -> str:
    """A span of seconds, short: ``42 s``, ``5 min``, ``3 h 20 min``, ``2 d 4 h``."""
    if value is None:
        return ""
    return duration(timedelta(seconds=value))


def duration(span: timedelta, *, suffix: bool = False) -> str:
    """``span`` short (with ``suffix``: ``... ago`` or ``in ...``)."""
    total = int(span.total_seconds())
    future = total < 0
    total = abs(total)
    if suffix and total < 2:
        return "just now"
    if total < 60:
        text = f"{total} s"
    elif total < 3600:
        text = f"{total // 60} min"
    elif total < 86_400:
        hours, minutes = divmod(total // 60, 60)
        text = f"{hours} h {minutes} min" if minutes and not suffix else f"{hours} h"
    else:
        days, hours = divmod(total // 3600, 24)
        text = f"{days} d {hours} h" if hours and not suffix else f"{days} d"
    if not suffix:
        return text
    return f"in {text}" if future else f"{text} ago"


def count(value: int | float | None) -> str:
    """``1,234,567``; ``12.5`` for a fraction; ``—`` for unknown."""
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def rate(value: float | None) -> str:
    """Events a second: ``12.5/s``; ``—`` for unknown."""
    return "—" if value is None else f"{value:,.1f}/s"


#: The filters every template gets.
FILTERS = {"utc": utc, "age": age, "count": count, "rate": rate, "seconds": seconds}

__all__ = ["FILTERS", "age", "count", "duration", "rate", "seconds", "utc"]
