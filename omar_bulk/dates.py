"""Trade dates as users write them in manifests and on the command line."""

from __future__ import annotations

from datetime import date, datetime


def parse_date(value: object) -> date:
    """A ``date`` from a TOML date or a ``YYYY-MM-DD`` string; ValueError saying why not."""
    if isinstance(value, datetime):
        raise ValueError(f"{value.isoformat()} has a time of day; give a date (YYYY-MM-DD)")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) != 10:
                raise ValueError
            return date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"bad date {value!r}: use YYYY-MM-DD") from None
    raise ValueError(f"bad date {value!r}: use YYYY-MM-DD")
