"""Trade dates as users write them in manifests and on the command line.

Besides ``YYYY-MM-DD`` (or a TOML date), a date may be ``today``, ``yesterday``, ``-Nd`` (N days
before today) or ``YYYY-MM`` (a whole month: its first day as a start, its last as an end).
"Today" is the date in California, where the trade day is defined, unless a caller injects
another (``--today``, or the ``today`` argument in the library).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

CALIFORNIA = "America/Los_Angeles"
_RELATIVE = re.compile(r"^-(\d{1,5})d$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def california_today(now: datetime | None = None) -> date:
    """Today's trade date in California."""
    from zoneinfo import ZoneInfo

    return (now or datetime.now(tz=ZoneInfo(CALIFORNIA))).astimezone(ZoneInfo(CALIFORNIA)).date()


def month_end(day: date) -> date:
    """The last day of ``day``'s month; December 9999 included (no step past ``date.max``)."""
    if day.month == 12:
        return date(day.year, 12, 31)
    return date(day.year, day.month + 1, 1) - timedelta(days=1)


def days_before(base: date, days: int, value: object) -> date:
    """``base`` minus ``days``, or ValueError naming ``value`` when that falls before 0001-01-01."""
    if days > (base - date.min).days:
        raise ValueError(f"{value!r} counted back from {base.isoformat()} falls before 0001-01-01")
    return base - timedelta(days=days)


def is_relative(value: object) -> bool:
    """Does ``value`` count from today (``today``, ``yesterday``, ``-Nd``)? Such a date moves
    every day; ``YYYY-MM``, ``YYYY-MM-DD`` and TOML dates do not."""
    if not isinstance(value, str):
        return False
    text = value.strip().lower()
    return text in ("today", "yesterday") or _RELATIVE.match(text) is not None


def parse_date(value: object, *, end: bool = False, today: date | None = None) -> date:
    """A ``date`` from any accepted form; ValueError saying why not.

    ``end`` picks the last day of a ``YYYY-MM`` month instead of the first.
    """
    if isinstance(value, datetime):
        raise ValueError(f"{value.isoformat()} has a time of day; give a date (YYYY-MM-DD)")
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise ValueError(f"bad date {value!r}: use YYYY-MM-DD")
    text = value.strip().lower()
    if text in ("today", "yesterday") or _RELATIVE.match(text):
        base = today or california_today()
        if text == "today":
            return base
        if text == "yesterday":
            return days_before(base, 1, value)
        days = int(_RELATIVE.match(text).group(1))  # type: ignore[union-attr]
        return days_before(base, days, value)
    month = _MONTH.match(text)
    if month:
        year, number = int(month.group(1)), int(month.group(2))
        if not 1 <= number <= 12:
            raise ValueError(f"bad month {value!r}: use YYYY-MM")
        if year < 1:
            raise ValueError(f"bad month {value!r}: years run from 0001 to 9999")
        if not end:
            return date(year, number, 1)
        return month_end(date(year, number, 1))
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"bad date {value!r}: use YYYY-MM-DD, YYYY-MM, today, yesterday or -Nd"
        ) from None


__all__ = [
    "CALIFORNIA",
    "california_today",
    "days_before",
    "is_relative",
    "month_end",
    "parse_date",
]
