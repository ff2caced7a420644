"""Chunking covers every range exactly, and plans expand lazily without duplicates."""

from __future__ import annotations

import itertools
import tracemalloc
import unicodedata
from array import array
from datetime import date, timedelta
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omar_bulk.errors import ManifestError
from omar_bulk.plan import (
    LONGEST_NAME_SUFFIX,
    MAX_ID_BYTES,
    NAME_MAX,
    Chunking,
    Item,
    Plan,
    _repeated_hashes,
    check_id,
    make_pull,
)
from omar_bulk.protocol import relative_key
from omar_bulk.storage import PART_SUFFIX

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


# --- the calendar's edges -------------------------------------------------------------------

near_the_end = st.integers(0, 800).map(lambda n: date.max - timedelta(days=n))
near_the_start = st.integers(0, 800).map(lambda n: date.min + timedelta(days=n))


@given(near_the_end, st.integers(0, 800), st.sampled_from(CHUNKS))
def test_chunks_up_to_the_last_day_there_is(first: date, back: int, chunk: str) -> None:
    """Ranges ending at or near 9999-12-31: covered exactly, with no step past date.max."""
    start = max(date.min, first - timedelta(days=back))
    for end in (first, date.max):
        chunking = Chunking.parse(chunk)
        chunks = list(chunking.split(start, end))
        assert chunks[0][0] == start and chunks[-1][1] == end
        for (_, last), (nxt, _) in itertools.pairwise(chunks):
            assert nxt == last + timedelta(days=1)
        assert chunking.count(start, end) == len(chunks)


@given(near_the_start, st.integers(0, 800), st.sampled_from(CHUNKS))
def test_chunks_from_the_first_day_there_is(start: date, length: int, chunk: str) -> None:
    """Ranges starting at or near 0001-01-01 (a Monday): whole weeks and months from there."""
    end = start + timedelta(days=length)
    chunking = Chunking.parse(chunk)
    chunks = list(chunking.split(start, end))
    assert chunks[0][0] == start and chunks[-1][1] == end
    assert chunking.count(start, end) == len(chunks)


def test_the_last_months_and_weeks_of_the_calendar() -> None:
    assert list(Chunking.parse("month").split(date(9999, 11, 1), date.max)) == [
        (date(9999, 11, 1), date(9999, 11, 30)),
        (date(9999, 12, 1), date(9999, 12, 31)),
    ]
    assert list(Chunking.parse("week").split(date(9999, 12, 20), date.max)) == [
        (date(9999, 12, 20), date(9999, 12, 26)),
        (date(9999, 12, 27), date(9999, 12, 31)),
    ]
    assert list(Chunking.parse("none").split(date.max, date.max)) == [(date.max, date.max)]


# --- ids ------------------------------------------------------------------------------------


def test_ids_are_measured_in_bytes_not_characters() -> None:
    """100 euro signs are 100 characters but 300 bytes: too long for a file name."""
    with pytest.raises(ManifestError, match=r"id longer than 200 bytes in UTF-8 \(300"):
        check_id("€" * 100, "here")
    with pytest.raises(ManifestError, match=r"id longer than 200 bytes in UTF-8 \(201"):
        check_id("€" * 67, "here")
    with pytest.raises(ManifestError, match=r"\(201"):
        check_id("M" * 201, "here")
    assert check_id("€" * 66 + "ab", "here") == "€" * 66 + "ab"  # exactly 200 bytes
    assert check_id("M" * 200, "here") == "M" * 200


def test_the_longest_id_fits_in_every_name_it_goes_into(tmp_path: Path) -> None:
    """An id of MAX_ID_BYTES makes a folder, a .part, a history copy and an error page."""
    ident = check_id("é" * (MAX_ID_BYTES // 2), "here")
    assert len(ident.encode()) == MAX_ID_BYTES
    item = Item("meter", ident, date(2024, 1, 1), date(2024, 1, 31), "mdef", "DST")
    name = PurePosixPath(relative_key(item)).name
    folder = tmp_path / ident
    folder.mkdir()
    for longest in (
        name + PART_SUFFIX,
        f"{name}.20240101T000000Z-9999",  # a history copy, ninth thousand collision
        f"{name}.20240101T000000.html",  # a kept error page
    ):
        assert len(longest.encode()) <= NAME_MAX
        (folder / longest).write_bytes(b"")  # the file system agrees
    assert MAX_ID_BYTES + LONGEST_NAME_SUFFIX <= NAME_MAX


@pytest.mark.parametrize(
    ("ident", "escaped"),
    [
        ("A\u202eB", "\\u202e"),  # right-to-left override
        ("A\u200eB", "\\u200e"),  # left-to-right mark
        ("A\x85B", "\\x85"),  # next line (C1)
        ("A\u2028B", "\\u2028"),  # line separator
        ("A\u2029B", "\\u2029"),  # paragraph separator
        ("A\x1b[31mB", "\\x1b"),  # escape sequence
        ("A\x7fB", "\\x7f"),
        ("A\u200bB", "\\u200b"),  # zero-width space (Cf)
        ("\ufeffAB", "\\ufeff"),
    ],
)
def test_ids_with_control_format_or_separator_characters_are_refused(
    ident: str, escaped: str
) -> None:
    """The message shows the id escaped: nothing raw reaches the terminal."""
    with pytest.raises(ManifestError) as caught:
        check_id(ident, "here")
    message = str(caught.value)
    assert escaped in message and "format or line-separator" in message
    assert ident not in message
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in message)


def test_ids_with_bytes_that_are_not_utf8_are_refused() -> None:
    """A command-line argument with a stray byte arrives as a lone surrogate."""
    with pytest.raises(ManifestError, match="not valid UTF-8"):
        check_id("M\udcff", "here")


# --- memory for any manifest ------------------------------------------------------------------


def test_repeated_series_far_apart_are_still_found_and_dropped() -> None:
    """A series repeated 30,000 pulls later is tracked, and its duplicate month dropped;
    series seen once are not tracked at all."""
    pulls = [pull([f"M{n}"], date(2024, 1, 1), date(2024, 2, 29)) for n in range(30_000)]
    pulls.append(pull(["M7"], date(2024, 2, 1), date(2024, 3, 31)))  # February again
    plan = Plan(lambda: pulls)
    assert plan.survey() == 60_001
    items = list(plan)
    assert len(items) == len(set(items)) == 60_001
    assert [(i.start.month, i.end.month) for i in items if i.id == "M7"] == [(1, 1), (2, 2), (3, 3)]
    assert plan._repeated == frozenset({hash(("meter", "M7", "mdef", "PST"))})


def test_a_shared_hash_only_adds_tracking() -> None:
    """Values seen twice in any bucket are reported once each; the buckets are emptied."""
    buckets = [array("q", [5, -3, 5, 5]), array("q", [7]), array("q", [-3, 2**63 - 1, 2**63 - 1])]
    assert _repeated_hashes(buckets) == {5, 2**63 - 1}
    assert buckets == []


@pytest.mark.parametrize("chunk", ["month", "week", "none", "3d"])
def test_many_ids_share_one_cut_of_the_range(chunk: str) -> None:
    """A pull of many ids yields, for each id in turn, exactly the chunks ``split`` cuts."""
    ids = ["A", "B", "C"]
    start, end = date(2023, 12, 20), date(2024, 3, 10)
    made = list(pull(ids, start, end, chunk).items())
    cuts = list(Chunking.parse(chunk).split(start, end))
    assert [(i.id, i.start, i.end) for i in made] == [(x, a, b) for x in ids for a, b in cuts]


# --- a rolling start rounded down to its chunk ------------------------------------------------

FLOORED = [
    ("month", date(2024, 3, 17), date(2024, 3, 1)),
    ("month", date(2024, 3, 1), date(2024, 3, 1)),
    ("week", date(2024, 3, 17), date(2024, 3, 11)),  # a Sunday: that week's Monday
    ("week", date(2024, 3, 11), date(2024, 3, 11)),
    ("week", date(1, 1, 3), date(1, 1, 1)),  # 0001-01-01 is a Monday
    ("day", date(2024, 3, 17), date(2024, 3, 17)),
    ("7d", date(1970, 1, 1), date(1970, 1, 1)),  # the grid's anchor
    ("7d", date(1970, 1, 7), date(1970, 1, 1)),
    ("7d", date(1970, 1, 8), date(1970, 1, 8)),
    ("7d", date(1969, 12, 31), date(1969, 12, 25)),  # before the anchor: still down
    ("7d", date(2024, 2, 2), date(2024, 2, 1)),  # 19,755 days since 1970: 19,754 is 7 x 2,822
    ("10d", date(2024, 2, 2), date(2024, 1, 28)),  # 19,750 days
    ("99999d", date(1, 1, 10), date.min),  # the grid point lies before the calendar
    ("none", date(2024, 3, 17), date(2024, 3, 17)),
]


@pytest.mark.parametrize(("chunk", "day", "first"), FLOORED)
def test_a_day_rounds_down_to_the_first_day_of_its_chunk(
    chunk: str, day: date, first: date
) -> None:
    """Months to the 1st, weeks to Monday, ``<N>d`` to a grid counted from 1970-01-01."""
    assert Chunking.parse(chunk).floor(day) == first


@given(dates, st.integers(1, 60), st.sampled_from(CHUNKS))
def test_rolling_starts_on_one_grid_begin_the_same_chunks(
    day: date, later: int, chunk: str
) -> None:
    """Two starts a few days apart, both rounded down: the chunks of the later one are chunks
    of the earlier one (bar the first, gone whole), so a window that rolls forward by a day
    keeps its files' names. ``none`` has no grid to keep."""
    chunking = Chunking.parse(chunk)
    end = day + timedelta(days=400)
    first = chunking.floor(day)
    assert first <= day and (chunking.unit == "none" or (day - first).days < 31 + 6 + 45)
    if chunking.unit == "none":
        return
    earlier = set(chunking.split(first, end))
    moved = list(chunking.split(chunking.floor(day + timedelta(days=later)), end))
    assert set(moved) <= earlier


def test_an_item_knows_its_chunking_but_is_the_same_request_without_it() -> None:
    """The chunking is recorded in the journal (only a chunk of the same chunking replaces
    another), yet two chunkings that cut the same range plan one request."""
    pulls = [
        pull(["A"], date(2020, 1, 1), date(2020, 1, 31), chunk="month"),
        pull(["A"], date(2020, 1, 1), date(2020, 1, 31), chunk="none"),
        pull(["A"], date(2020, 1, 1), date(2020, 3, 31), chunk="7d"),
    ]
    items = list(Plan(lambda: pulls))
    assert items[0] == Item("meter", "A", date(2020, 1, 1), date(2020, 1, 31), "mdef", "PST")
    assert [i.chunk for i in items[:2]] == ["month", "7d"]  # the duplicate "none" dropped
    assert {i.chunk for i in items[1:]} == {"7d"}
    assert "7d" not in repr(items[1])
