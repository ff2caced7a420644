"""Fast tables for the rules added late in 0.2.0 (relative starts, the chunking an item
carries, files an empty answer may not retire): part of the mutation run's selection."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from omar_bulk.dates import is_relative
from omar_bulk.journal import Entry
from omar_bulk.plan import Chunking, Item, Pull
from omar_bulk.policy import held_by_empty
from omar_bulk.protocol import relative_key
from omar_bulk.results import Status


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


GROWN = Item("meter", "M1", date(2024, 3, 1), date(2024, 3, 31), "mdef", "PST", chunk="month")
KEY = relative_key(GROWN)


def entry(end: int, status: Status, chunk: str | None = "month") -> Entry:
    item = replace(GROWN, end=date(2024, 3, end))
    return Entry(relative_key(item), status, 10, "ab" * 32, 1, chunk=chunk)


def test_files_with_data_an_empty_answer_may_not_retire() -> None:
    empty_now = Entry(KEY, Status.EMPTY, 0, None, None, chunk="month")
    data = entry(14, Status.DOWNLOADED)
    assert held_by_empty(GROWN, KEY, [empty_now, data]) == [data]
    assert held_by_empty(GROWN, KEY, [data, empty_now]) == [data]
    assert held_by_empty(GROWN, KEY, [empty_now, entry(14, Status.EMPTY)]) == []
    assert held_by_empty(GROWN, KEY, [empty_now, entry(14, Status.DOWNLOADED, "7d")]) == []


def test_without_an_empty_answer_nothing_is_held() -> None:
    landed = Entry(KEY, Status.DOWNLOADED, 10, "cd" * 32, 1, chunk="month")
    assert held_by_empty(GROWN, KEY, [landed, entry(14, Status.DOWNLOADED)]) == []
    assert held_by_empty(GROWN, KEY, [entry(14, Status.DOWNLOADED)]) == []
