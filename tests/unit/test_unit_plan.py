"""The plan's rules as tables: chunk names, chunk edges, counts, ids, pulls, duplicates.

Pure and quick, so every mutant of plan.py runs them first (``make mutation``); the properties
over random ranges and the memory of a huge plan stay in test_plan.
"""

from __future__ import annotations

import tracemalloc
from datetime import date, timedelta

import pytest

from omar_bulk.errors import ManifestError
from omar_bulk.plan import MAX_ID_BYTES, Chunking, Item, Plan, Pull, check_id, make_pull

D = date
MAX = date.max


# --- chunk names ---------------------------------------------------------------------------------


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


# --- chunk edges ---------------------------------------------------------------------------------


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


# --- items of a pull -----------------------------------------------------------------------------


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


# --- ids -----------------------------------------------------------------------------------------


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


# --- the plan: duplicates, counts, re-reading ----------------------------------------------------


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
