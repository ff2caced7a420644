"""Chunking covers every range exactly, and plans expand lazily without duplicates."""

from __future__ import annotations

import itertools
import tracemalloc
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omar_bulk.errors import ManifestError
from omar_bulk.plan import Chunking, Plan, make_pull

CHUNKS = ["month", "week", "day", "1d", "7d", "10d", "45d", "none"]
dates = st.dates(min_value=date(1990, 1, 1), max_value=date(2060, 12, 31))


@given(dates, st.integers(0, 1500), st.sampled_from(CHUNKS))
def test_chunks_never_overlap_and_cover_the_range_exactly(
    start: date, length: int, chunk: str
) -> None:
    end = start + timedelta(days=length)
    chunking = Chunking.parse(chunk)
    chunks = list(chunking.split(start, end))
    assert chunks[0][0] == start
    assert chunks[-1][1] == end
    for (_, last), (first, _) in itertools.pairwise(chunks):
        assert first == last + timedelta(days=1)  # contiguous: no gap, no overlap
    for first, last in chunks:
        assert first <= last
    assert chunking.count(start, end) == len(chunks)


@given(dates, st.integers(0, 1500), st.sampled_from(CHUNKS))
def test_chunks_respect_the_chunk_size(start: date, length: int, chunk: str) -> None:
    end = start + timedelta(days=length)
    chunking = Chunking.parse(chunk)
    for first, last in chunking.split(start, end):
        if chunking.unit == "month":
            assert (first.year, first.month) == (last.year, last.month)
            assert first.day == 1 or first == start
            assert (last + timedelta(days=1)).day == 1 or last == end
        elif chunking.unit == "week":
            assert (last - first).days <= 6
            assert first.weekday() == 0 or first == start
            assert last.weekday() == 6 or last == end
        elif chunking.unit == "days":
            assert (last - first).days + 1 <= chunking.days
            assert (last - first).days + 1 == chunking.days or last == end


def test_calendar_months_with_partial_ends_and_a_leap_day() -> None:
    chunks = list(Chunking.parse("month").split(date(2024, 1, 15), date(2024, 3, 2)))
    assert chunks == [
        (date(2024, 1, 15), date(2024, 1, 31)),
        (date(2024, 2, 1), date(2024, 2, 29)),
        (date(2024, 3, 1), date(2024, 3, 2)),
    ]


def test_month_ends_and_year_boundaries() -> None:
    chunks = list(Chunking.parse("month").split(date(2023, 11, 30), date(2024, 1, 1)))
    assert chunks == [
        (date(2023, 11, 30), date(2023, 11, 30)),
        (date(2023, 12, 1), date(2023, 12, 31)),
        (date(2024, 1, 1), date(2024, 1, 1)),
    ]


def test_a_range_shorter_than_one_chunk_is_one_chunk() -> None:
    for chunk in ("month", "week", "30d", "none"):
        assert list(Chunking.parse(chunk).split(date(2024, 2, 27), date(2024, 2, 28))) == [
            (date(2024, 2, 27), date(2024, 2, 28))
        ]


@pytest.mark.parametrize("bad", ["fortnight", "0d", "-3d", "d", "3 days", ""])
def test_unknown_chunks_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown chunk"):
        Chunking.parse(bad)


def pull(ids: list[str], start: date, end: date, chunk: str = "month", kind: str = "meter"):
    return make_pull(
        kind=kind,
        ids=ids,
        start=start,
        end=end,
        format="mdef",
        time_type="PST",
        chunk=chunk,
        where="test",
    )


def test_exact_duplicates_are_planned_once() -> None:
    pulls = [
        pull(["A", "B"], date(2020, 1, 1), date(2020, 3, 31)),
        pull(["A"], date(2020, 2, 1), date(2020, 2, 29)),  # A's February again
        pull(["A", "A"], date(2020, 1, 1), date(2020, 1, 31)),  # A's January twice more
    ]
    plan = Plan(lambda: pulls)
    items = list(plan)
    assert len(items) == len(set(items)) == 6
    assert plan.survey() == 6


def test_a_plan_that_plans_nothing_is_an_error() -> None:
    with pytest.raises(ManifestError, match="nothing to fetch"):
        Plan(lambda: []).survey()


def test_a_huge_plan_is_expanded_lazily() -> None:
    """252,000 items (1,000 meters x 21 years x 12 months) without holding them in memory."""
    ids = [f"MTR{n:04d}" for n in range(1000)]
    pulls = [pull(ids, date(2000, 1, 1), date(2020, 12, 31))]
    plan = Plan(lambda: pulls)
    tracemalloc.start()
    try:
        assert plan.survey() == 252_000
        count = sum(1 for _ in plan)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 252_000
    assert peak < 5_000_000, f"expansion held {peak} bytes"
