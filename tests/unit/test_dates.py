"""Dates at the calendar's edges and relative dates: parsed, or refused with a message naming
what was given, never an overflow. (The same edges through the CLI: e2e/test_dates.py.)"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omar_bulk.dates import california_today, is_relative, month_end, parse_date


def test_december_9999_is_a_whole_month() -> None:
    """The last month there is ends on 9999-12-31, not on a day after date.max."""
    assert parse_date("9999-12", end=True) == date(9999, 12, 31)
    assert parse_date("9999-12") == date(9999, 12, 1)
    assert parse_date("9999-11", end=True) == date(9999, 11, 30)


def test_year_0000_is_refused() -> None:
    """There is no year 0 in the calendar Python uses."""
    with pytest.raises(ValueError, match="0001 to 9999"):
        parse_date("0000-12")


@pytest.mark.parametrize("text", ["yesterday", "-1d", "-99999d"])
def test_relative_dates_before_the_first_day_are_refused(text: str) -> None:
    """Counting back from 0001-01-01 has nowhere to go: a ValueError saying so."""
    with pytest.raises(ValueError, match="falls before 0001-01-01"):
        parse_date(text, today=date.min)


def test_relative_dates_that_land_on_the_first_day_are_fine() -> None:
    assert parse_date("today", today=date.min) == date.min
    assert parse_date("-1d", today=date(1, 1, 2)) == date.min


@given(st.dates(), st.integers(0, 99999))
def test_counting_back_gives_the_date_or_a_value_error(base: date, days: int) -> None:
    """Never an OverflowError, whatever today is and however far back."""
    try:
        got = parse_date(f"-{days}d", today=base)
    except ValueError as exc:
        assert "falls before 0001-01-01" in str(exc)
        assert days > (base - date.min).days
    else:
        assert got == base - timedelta(days=days)


@given(st.dates())
def test_month_end_is_the_last_day_of_every_month(day: date) -> None:
    last = month_end(day)
    assert (last.year, last.month) == (day.year, day.month)
    assert last == date.max or (last + timedelta(days=1)).day == 1


def test_every_refusal_says_what_was_wrong_and_what_to_write() -> None:
    """The message of each refused date, word for word: it is all the user gets."""
    cases = {
        "2024-13": "bad month '2024-13': use YYYY-MM",
        "2024-00": "bad month '2024-00': use YYYY-MM",
        "0000-05": "bad month '0000-05': years run from 0001 to 9999",
        "2024-1-5": "bad date '2024-1-5': use YYYY-MM-DD, YYYY-MM, today, yesterday or -Nd",
    }
    for text, message in cases.items():
        with pytest.raises(ValueError) as refused:
            parse_date(text, today=date(2024, 3, 10))
        assert str(refused.value) == message
    with pytest.raises(ValueError, match=r"^bad date 20240101: use YYYY-MM-DD$"):
        parse_date(20240101)
    with pytest.raises(ValueError, match=r"^2024-01-01T05:00:00 has a time of day; give a date"):
        parse_date(datetime(2024, 1, 1, 5))
    with pytest.raises(ValueError, match=r"^'yesterday' counted back from 0001-01-01"):
        parse_date("yesterday", today=date.min)


def test_relative_words_and_months_resolve_against_today() -> None:
    today = date(2024, 3, 1)
    assert parse_date("today", today=today) == today
    assert parse_date(" Yesterday ", today=today) == date(2024, 2, 29)
    assert parse_date("-1d", today=today) == date(2024, 2, 29)
    assert parse_date("2024-12") == date(2024, 12, 1)
    assert parse_date("2024-12", end=True) == date(2024, 12, 31)
    assert parse_date("0001-01") == date(1, 1, 1)


def test_the_trade_date_is_californias() -> None:
    """06:00 UTC on 10 March is still 9 March in California, whatever the machine's zone."""
    assert california_today(datetime(2024, 3, 10, 6, 0, tzinfo=UTC)) == date(2024, 3, 9)
    assert california_today(datetime(2024, 3, 10, 9, 0, tzinfo=UTC)) == date(2024, 3, 10)


@pytest.mark.parametrize(
    ("value", "relative"),
    [
        ("today", True),
        (" Today ", True),
        ("YESTERDAY", True),
        ("-1d", True),
        ("-60d", True),
        ("-99999d", True),
        ("-100000d", False),
        ("-1w", False),
        ("60d", False),
        ("tomorrow", False),
        ("2024-01", False),
        ("2024-01-01", False),
        ("", False),
        (date(2024, 1, 1), False),
        (None, False),
        (5, False),
    ],
)
def test_which_dates_count_from_today(value: object, relative: bool) -> None:
    assert is_relative(value) is relative


def test_counting_back_past_the_calendar_names_what_was_given() -> None:
    with pytest.raises(ValueError) as caught:
        parse_date(" -99999d ", today=date(200, 1, 1))
    assert str(caught.value) == "' -99999d ' counted back from 0200-01-01 falls before 0001-01-01"
