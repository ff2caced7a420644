"""The plan's rules: chunking covers every range exactly (properties over random ranges and
tables of chunk names, edges and counts), ids, pulls, and plans that expand lazily without
duplicates. Pure and quick: every mutant of plan.py runs them (``make mutation``)."""

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
    Pull,
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


D = date


MAX = date.max


@pytest.mark.parametrize(
    ("text", "unit", "days", "shown"),
    [
        ("month", "month", 0, "month"),
        ("week", "week", 0, "week"),
        ("none", "none", 0, "none"),
        (" Month ", "month", 0, "month"),
        ("WEEK", "week", 0, "week"),
        ("day", "days", 1, "1d"),
        ("Day", "days", 1, "1d"),
        ("1d", "days", 1, "1d"),
        ("7d", "days", 7, "7d"),
        ("10d", "days", 10, "10d"),
        (" 30D ", "days", 30, "30d"),
        ("99999d", "days", 99999, "99999d"),
    ],
)
def test_chunk_names(text: str, unit: str, days: int, shown: str) -> None:
    chunking = Chunking.parse(text)
    assert (chunking.unit, chunking.days) == (unit, days)
    assert str(chunking) == shown
    assert Chunking.parse(str(chunking)) == chunking


@pytest.mark.parametrize(
    "bad", ["", "0d", "07d", "100000d", "d", "7", "-7d", "7 d", "days", "months", "7dd", "x7d"]
)
def test_unknown_chunk_names_say_what_is_accepted(bad: str) -> None:
    with pytest.raises(ValueError, match=r"unknown chunk .*: use month, week, day, <N>d"):
        Chunking.parse(bad)


def test_a_default_chunking_has_no_days() -> None:
    assert Chunking("month").days == 0


@pytest.mark.parametrize(
    ("chunk", "start", "end", "chunks"),
    [
        (
            "month",
            D(2024, 1, 15),
            D(2024, 3, 10),
            [
                (D(2024, 1, 15), D(2024, 1, 31)),
                (D(2024, 2, 1), D(2024, 2, 29)),
                (D(2024, 3, 1), D(2024, 3, 10)),
            ],
        ),
        (
            "month",
            D(2023, 12, 31),
            D(2024, 1, 1),
            [(D(2023, 12, 31), D(2023, 12, 31)), (D(2024, 1, 1), D(2024, 1, 1))],
        ),
        ("month", D(2024, 2, 1), D(2024, 2, 29), [(D(2024, 2, 1), D(2024, 2, 29))]),
        # 2024-01-03 is a Wednesday: ISO weeks run Monday to Sunday.
        (
            "week",
            D(2024, 1, 3),
            D(2024, 1, 16),
            [
                (D(2024, 1, 3), D(2024, 1, 7)),
                (D(2024, 1, 8), D(2024, 1, 14)),
                (D(2024, 1, 15), D(2024, 1, 16)),
            ],
        ),
        (
            "week",
            D(2024, 1, 7),
            D(2024, 1, 8),
            [(D(2024, 1, 7), D(2024, 1, 7)), (D(2024, 1, 8), D(2024, 1, 8))],
        ),
        ("week", D(2024, 1, 8), D(2024, 1, 14), [(D(2024, 1, 8), D(2024, 1, 14))]),
        (
            "3d",
            D(2024, 1, 1),
            D(2024, 1, 7),
            [
                (D(2024, 1, 1), D(2024, 1, 3)),
                (D(2024, 1, 4), D(2024, 1, 6)),
                (D(2024, 1, 7), D(2024, 1, 7)),
            ],
        ),
        (
            "day",
            D(2024, 2, 28),
            D(2024, 3, 1),
            [
                (D(2024, 2, 28), D(2024, 2, 28)),
                (D(2024, 2, 29), D(2024, 2, 29)),
                (D(2024, 3, 1), D(2024, 3, 1)),
            ],
        ),
        (
            "2d",
            D(2024, 1, 1),
            D(2024, 1, 4),
            [(D(2024, 1, 1), D(2024, 1, 2)), (D(2024, 1, 3), D(2024, 1, 4))],
        ),
        ("none", D(2020, 1, 1), D(2024, 12, 31), [(D(2020, 1, 1), D(2024, 12, 31))]),
        ("none", D(2024, 5, 5), D(2024, 5, 5), [(D(2024, 5, 5), D(2024, 5, 5))]),
        ("7d", D(2024, 5, 5), D(2024, 5, 5), [(D(2024, 5, 5), D(2024, 5, 5))]),
        ("month", D(2024, 5, 5), D(2024, 5, 4), []),
        ("week", D(2024, 5, 5), D(2024, 5, 4), []),
        ("3d", D(2024, 5, 5), D(2024, 5, 4), []),
        ("none", D(2024, 5, 5), D(2024, 5, 4), []),
        # The last days of the calendar: no step past date.max.
        (
            "month",
            D(9999, 11, 20),
            MAX,
            [(D(9999, 11, 20), D(9999, 11, 30)), (D(9999, 12, 1), MAX)],
        ),
        ("week", D(9999, 12, 27), MAX, [(D(9999, 12, 27), MAX)]),
        ("3d", D(9999, 12, 28), MAX, [(D(9999, 12, 28), D(9999, 12, 30)), (MAX, MAX)]),
        ("99999d", D(9999, 1, 1), MAX, [(D(9999, 1, 1), MAX)]),
        ("day", MAX, MAX, [(MAX, MAX)]),
        ("none", date.min, MAX, [(date.min, MAX)]),
    ],
)
def test_chunk_edges(chunk: str, start: date, end: date, chunks: list[tuple[date, date]]) -> None:
    chunking = Chunking.parse(chunk)
    assert list(chunking.split(start, end)) == chunks
    assert chunking.count(start, end) == len(chunks)


@pytest.mark.parametrize("chunk", ["month", "week", "none", "day", "2d", "5d", "31d"])
@pytest.mark.parametrize(
    ("start", "end"),
    [
        (D(2024, 1, 1), D(2024, 1, 1)),
        (D(2023, 12, 25), D(2024, 1, 2)),
        (D(2023, 1, 31), D(2024, 3, 1)),
        (D(2024, 1, 6), D(2024, 1, 22)),  # Saturday to Monday
        (D(2024, 1, 1), D(2024, 1, 7)),  # exactly one ISO week
        (D(2020, 2, 29), D(2021, 2, 28)),
        (D(2024, 2, 1), D(2024, 1, 31)),  # empty
    ],
)
def test_count_agrees_with_split(chunk: str, start: date, end: date) -> None:
    chunking = Chunking.parse(chunk)
    assert chunking.count(start, end) == len(list(chunking.split(start, end)))


@pytest.mark.parametrize(
    ("chunk", "start", "end", "count"),
    [
        ("month", D(2023, 11, 30), D(2024, 2, 1), 4),
        ("month", D(2020, 1, 1), D(2024, 12, 31), 60),
        ("week", D(2024, 1, 7), D(2024, 1, 8), 2),
        ("week", D(2024, 1, 1), D(2024, 12, 29), 52),
        ("7d", D(2024, 1, 1), D(2024, 1, 7), 1),
        ("7d", D(2024, 1, 1), D(2024, 1, 8), 2),
        ("none", D(2000, 1, 1), D(2024, 1, 1), 1),
        ("none", D(2000, 1, 2), D(2000, 1, 1), 0),
        ("day", D(2024, 1, 1), D(2024, 12, 31), 366),
    ],
)
def test_chunk_counts(chunk: str, start: date, end: date, count: int) -> None:
    assert Chunking.parse(chunk).count(start, end) == count


def a_pull(ids: list[str], start: date, end: date, chunk: str = "month", **fields: str) -> Pull:
    values = {"kind": "meter", "format": "mdef", "time_type": "PST", **fields}
    return make_pull(ids=ids, start=start, end=end, chunk=chunk, where="here", **values)


def test_a_pull_yields_each_id_chunk_by_chunk() -> None:
    pull = a_pull(
        ["B", "A"], D(2024, 1, 20), D(2024, 2, 10), kind="group", format="csv", time_type="DST"
    )
    assert list(pull.items()) == [
        Item("group", "B", D(2024, 1, 20), D(2024, 1, 31), "csv", "DST"),
        Item("group", "B", D(2024, 2, 1), D(2024, 2, 10), "csv", "DST"),
        Item("group", "A", D(2024, 1, 20), D(2024, 1, 31), "csv", "DST"),
        Item("group", "A", D(2024, 2, 1), D(2024, 2, 10), "csv", "DST"),
    ]
    assert Item("group", "A", D(2024, 1, 1), D(2024, 1, 2), "csv", "DST").series == (
        "group",
        "A",
        "csv",
        "DST",
    )


def test_make_pull_normalises_and_keeps_every_field() -> None:
    pull = a_pull(
        [" M1".strip(), "M2"],
        D(2024, 1, 1),
        D(2024, 1, 31),
        chunk=" Week ",
        format=" CSV ",
        time_type=" dst ",
    )
    assert pull == Pull(
        "meter", ("M1", "M2"), D(2024, 1, 1), D(2024, 1, 31), "csv", "DST", Chunking("week"), "here"
    )
    given = Chunking("days", 4)
    assert a_pull(["M1"], D(2024, 1, 1), D(2024, 1, 1), chunk=given).chunking is given  # type: ignore[arg-type]
    # One day is a valid range.
    assert a_pull(["M1"], D(2024, 1, 1), D(2024, 1, 1)).end == D(2024, 1, 1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "meters"}, "here: unknown kind 'meters': use meter or group"),
        ({"kind": "Meter"}, "here: unknown kind 'Meter': use meter or group"),
        ({"format": "xml"}, "here: unknown format 'xml': use mdef or csv"),
        ({"time_type": "UTC"}, "here: unknown time type 'UTC': use PST or DST"),
        ({"chunk": "fortnight"}, "here: unknown chunk 'fortnight': use month, week, day"),
    ],
)
def test_make_pull_refuses_bad_fields_saying_where(fields: dict[str, str], message: str) -> None:
    values = {"kind": "meter", "format": "mdef", "time_type": "PST", "chunk": "month", **fields}
    with pytest.raises(ManifestError) as caught:
        make_pull(ids=["M1"], start=D(2024, 1, 1), end=D(2024, 1, 2), where="here", **values)
    assert str(caught.value).startswith(message)
    assert caught.value.where == "here"


def test_make_pull_refuses_an_end_before_the_start() -> None:
    with pytest.raises(ManifestError, match=r"^here: end 2024-01-01 is before start 2024-01-02$"):
        a_pull(["M1"], D(2024, 1, 2), D(2024, 1, 1))


def test_make_pull_checks_every_id() -> None:
    with pytest.raises(ManifestError, match=r"^here: empty id$"):
        a_pull(["M1", ""], D(2024, 1, 1), D(2024, 1, 2))


@pytest.mark.parametrize(
    "good",
    [
        "M1",
        "a.b",
        "x-y_z~",
        "Zähler",
        "…",
        "a" * MAX_ID_BYTES,
        "é" * (MAX_ID_BYTES // 2),
        "a.",
        ".a",
        "a.b.c",
    ],
)
def test_ids_that_make_good_names(good: str) -> None:
    assert check_id(good, "here") == good


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "here: empty id"),
        ("a/b", "holds '/', '\\' or '..'"),
        ("a\\b", "holds '/', '\\' or '..'"),
        ("..", "holds '/', '\\' or '..'"),
        ("a..b", "holds '/', '\\' or '..'"),
        (".", "holds '/', '\\' or '..'"),
        ("a\nb", "holds control, format or line-separator characters"),
        ("a\u202eb", "holds control, format or line-separator characters"),
        ("a\udcffb", "is not valid UTF-8 text"),
        ("a" * (MAX_ID_BYTES + 1), f"id longer than {MAX_ID_BYTES} bytes in UTF-8 (201"),
        ("é" * 101, f"id longer than {MAX_ID_BYTES} bytes in UTF-8 (202"),
    ],
)
def test_ids_that_cannot_be_names_are_refused(bad: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        check_id(bad, "here")
    assert message in str(caught.value) and caught.value.where == "here"


def test_a_refused_id_is_shown_escaped_and_named() -> None:
    with pytest.raises(ManifestError) as caught:
        check_id("M\x1b[31m1", "here")
    text = str(caught.value)
    assert "\x1b" not in text and "'M" in text
    assert "(\\x1b)" in text or "\\x1b" in text
    with pytest.raises(ManifestError, match="255-byte file name"):
        check_id("b" * 300, "here")


class Source:
    """Pulls for a plan, counting how often the plan reads them."""

    def __init__(self, *pulls: Pull) -> None:
        self.pulls = list(pulls)
        self.reads = 0

    def __call__(self) -> list[Pull]:
        self.reads += 1
        return self.pulls


def test_a_plan_without_repeats_counts_without_expanding() -> None:
    source = Source(
        a_pull(["A", "B"], D(2024, 1, 1), D(2024, 3, 31)),
        a_pull(["A"], D(2024, 1, 1), D(2024, 1, 31), format="csv"),
        a_pull(["C"], D(2024, 1, 1), D(2024, 1, 14), chunk="week"),
    )
    plan = Plan(source, name="m.toml")
    assert plan.name == "m.toml"
    assert plan.survey() == 6 + 1 + 2
    assert source.reads == 1
    assert plan.survey() == 9 and source.reads == 1  # counted once
    assert len(list(plan)) == 9 and source.reads == 2


def test_repeated_series_are_planned_once_per_item() -> None:
    source = Source(
        a_pull(["A", "B"], D(2024, 1, 1), D(2024, 2, 29)),
        a_pull(["A"], D(2024, 2, 1), D(2024, 3, 31)),  # February again, then March
        a_pull(["B"], D(2024, 1, 1), D(2024, 1, 31), format="csv"),  # another series
    )
    plan = Plan(source)
    items = list(plan)  # iterating first surveys first
    assert [(i.id, i.start.month, i.format) for i in items] == [
        ("A", 1, "mdef"),
        ("A", 2, "mdef"),
        ("B", 1, "mdef"),
        ("B", 2, "mdef"),
        ("A", 3, "mdef"),
        ("B", 1, "csv"),
    ]
    assert plan.survey() == 6
    assert list(plan) == items  # re-iterable, the same each time


def test_the_same_id_twice_in_one_pull_is_planned_once() -> None:
    plan = Plan(lambda: [a_pull(["A", "A"], D(2024, 1, 1), D(2024, 1, 31))])
    assert plan.survey() == 1
    assert len(list(plan)) == 1


def test_a_repeated_series_with_other_chunks_keeps_both() -> None:
    # Only exact duplicates go: a week inside a planned month is another file.
    plan = Plan(
        lambda: [
            a_pull(["A"], D(2024, 1, 1), D(2024, 1, 31)),
            a_pull(["A"], D(2024, 1, 1), D(2024, 1, 7), chunk="week"),
        ]
    )
    assert plan.survey() == 2 and len(list(plan)) == 2


def test_a_plan_of_nothing_is_refused_with_its_name() -> None:
    with pytest.raises(ManifestError, match=r"^m\.toml: nothing to fetch$"):
        Plan(lambda: [], name="m.toml").survey()
    with pytest.raises(ManifestError, match=r"^plan: nothing to fetch$"):
        list(Plan(lambda: []))


def test_a_bad_pull_is_raised_by_the_survey() -> None:
    def source() -> list[Pull]:
        raise ManifestError("m.toml:3", "bad")

    with pytest.raises(ManifestError, match=r"m\.toml:3: bad"):
        Plan(source).survey()


def test_long_ranges_count_exactly() -> None:
    start = D(2000, 1, 1)
    end = start + timedelta(days=9999)
    plan = Plan(lambda: [a_pull(["A", "B", "C"], start, end, chunk="10d")])
    assert plan.survey() == 3 * 1000


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            "a" * 100 + "\n",
            f"here: id '{'a' * 59}…' holds control, format or line-separator characters (\\n):"
            " ids become file names and are printed",
        ),
        (
            "x\x02\x01y\x02",
            "here: id 'x\\x02\\x01y\\x02' holds control, format or line-separator characters"
            " (\\x01, \\x02): ids become file names and are printed",
        ),
        ("a\ud800b", "here: id 'a\\ud800b' is not valid UTF-8 text"),
        ("a\udfffb", "here: id 'a\\udfffb' is not valid UTF-8 text"),
        ("\udc80", "here: id '\\udc80' is not valid UTF-8 text"),
    ],
)
def test_the_message_for_a_bad_id_shows_it_and_its_bad_characters(bad: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        check_id(bad, "here")
    assert str(caught.value) == message


@pytest.mark.parametrize("chunk", ["month", "week", "none", "day", "3d"])
def test_chunk_counts_are_whole_numbers(chunk: str) -> None:
    count = Chunking.parse(chunk).count(D(2024, 1, 3), D(2024, 3, 17))
    assert type(count) is int


def test_only_repeated_series_are_tracked_for_duplicates() -> None:
    """One id planned twice must not make the plan remember every other item it yields."""
    ids = [f"M{n:03d}" for n in range(200)]
    many = a_pull(ids, D(2024, 1, 1), D(2024, 8, 31), chunk="day")  # 48,800 items
    again = a_pull(["M000"], D(2024, 1, 1), D(2024, 1, 2), chunk="day")
    plan = Plan(lambda: [many, again])
    assert plan.survey() == 200 * 244
    tracemalloc.start()
    try:
        count = sum(1 for _ in plan)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200 * 244
    assert peak < 500_000  # tracking all 48,800 items would take several megabytes


@pytest.mark.parametrize(
    ("chunk", "start", "end", "expected"),
    [
        ("month", date(2024, 1, 1), date(2024, 1, 31), [(date(2024, 1, 1), date(2024, 1, 31))]),
        (
            "month",
            date(2024, 1, 15),
            date(2024, 3, 2),
            [
                (date(2024, 1, 15), date(2024, 1, 31)),
                (date(2024, 2, 1), date(2024, 2, 29)),
                (date(2024, 3, 1), date(2024, 3, 2)),
            ],
        ),
        (
            "7d",
            date(2024, 1, 1),
            date(2024, 1, 10),
            [(date(2024, 1, 1), date(2024, 1, 7)), (date(2024, 1, 8), date(2024, 1, 10))],
        ),
        ("none", date(2024, 1, 1), date(2024, 6, 30), [(date(2024, 1, 1), date(2024, 6, 30))]),
    ],
)
def test_every_item_of_a_pull_carries_its_chunking(
    chunk: str, start: date, end: date, expected: list[tuple[date, date]]
) -> None:
    chunking = Chunking.parse(chunk)
    pull = Pull("meter", ("A", "B"), start, end, "mdef", "PST", chunking)
    items = list(pull.items())
    assert [(i.id, i.start, i.end) for i in items] == [
        (ident, first, last) for ident in ("A", "B") for first, last in expected
    ]
    assert {i.chunk for i in items} == {str(chunking)}
    assert {(i.kind, i.format, i.time_type) for i in items} == {("meter", "mdef", "PST")}


def test_a_pull_of_more_chunks_than_are_shared_gives_the_same_items() -> None:
    """Day chunks over 12 years (more than a pull cuts once for all ids)."""
    chunking = Chunking.parse("day")
    pull = Pull("group", ("G1", "G2"), date(2010, 1, 1), date(2021, 12, 31), "csv", "DST", chunking)
    items = list(pull.items())
    days = (date(2021, 12, 31) - date(2010, 1, 1)).days + 1
    assert len(items) == 2 * days
    assert items[0] == Item("group", "G1", date(2010, 1, 1), date(2010, 1, 1), "csv", "DST")
    assert items[days] == Item("group", "G2", date(2010, 1, 1), date(2010, 1, 1), "csv", "DST")
    assert items[-1].end == date(2021, 12, 31) and items[-1].id == "G2"
    assert {i.chunk for i in items} == {"1d"}
