"""Which earlier files a longer one of the same chunk replaces, and the skip rule for them.

A chunk that ends ``yesterday`` grows every day, and so does its file's name; ``superseded``
picks the files the longer one stands for. Pure tables, fast enough for every mutant of
policy.py (``make mutation``); the end-to-end daily runs are in test_daily.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from omar_bulk.journal import Entry
from omar_bulk.plan import Item
from omar_bulk.policy import decide, superseded
from omar_bulk.protocol import relative_key
from omar_bulk.results import Status

NOW = Item("meter", "M1", date(2024, 1, 1), date(2024, 1, 20), "mdef", "PST", chunk="month")
KEY = relative_key(NOW)


def entry(item: Item, status: Status = Status.DOWNLOADED, **fields: object) -> Entry:
    made = Entry(relative_key(item), status, 10, "ab" * 32, 1, chunk="month")
    return replace(made, **fields)  # type: ignore[arg-type]


def shorter(days: int, **fields: str) -> Item:
    values = {"kind": "meter", "id": "M1", "format": "mdef", "time_type": "PST", **fields}
    return Item(
        values["kind"],
        values["id"],
        date(2024, 1, 1),
        date(2024, 1, days),
        values["format"],
        values["time_type"],
        chunk="month",
    )


def test_shorter_files_of_the_same_chunk_are_replaced_in_order() -> None:
    earlier = [entry(shorter(18)), entry(shorter(19), Status.EMPTY), entry(shorter(5))]
    assert superseded(NOW, KEY, earlier) == earlier


@pytest.mark.parametrize(
    "other",
    [
        entry(NOW),  # itself
        entry(shorter(20, format="csv")),  # another series of the same id: the same length
        entry(shorter(19, format="csv")),
        entry(shorter(19, time_type="DST")),
        entry(shorter(19, kind="group")),
        entry(Item("meter", "M1", date(2024, 1, 1), date(2024, 1, 31), "mdef", "PST")),  # longer
        entry(Item("meter", "M1", date(2024, 1, 2), date(2024, 1, 19), "mdef", "PST")),  # later
        entry(shorter(19), superseded_by="meter/M1/M1_20240101_20240119_PST.mdef"),
        entry(shorter(19), Status.SUPERSEDED),
        Entry("meter/M1/notes.txt", Status.DOWNLOADED, 1, None, None),  # not a data file
        Entry("meter/M1/M1_20240101_20240119_PST.mdef/x", Status.DOWNLOADED, 1, None, None),
    ],
    ids=[
        "itself", "other-format-same-length", "other-format", "other-time-type", "other-kind",
        "longer", "later-start", "already-superseded", "superseded-status", "not-data",
        "too-deep",
    ],
)  # fmt: skip
def test_what_a_longer_file_does_not_replace(other: Entry) -> None:
    assert superseded(NOW, KEY, [other]) == []


def test_one_entry_left_alone_does_not_stop_the_others_being_replaced() -> None:
    kept = [
        entry(NOW),
        entry(shorter(19), superseded_by="x"),
        entry(shorter(19), Status.SUPERSEDED),
        Entry("meter/M1/notes.txt", Status.DOWNLOADED, 1, None, None),
        entry(shorter(19, format="csv")),
    ]
    replaced = entry(shorter(10))
    for position in range(len(kept) + 1):
        entries = [*kept[:position], replaced, *kept[position:]]
        assert superseded(NOW, KEY, entries) == [replaced]


def test_a_failed_shorter_file_is_replaced_too() -> None:
    failed = entry(shorter(3), Status.FAILED, sha256=None, error="HTTP 500")
    assert superseded(NOW, KEY, [failed]) == [failed]


def test_ids_with_dots_and_underscores_are_matched_by_their_whole_name() -> None:
    now = Item("group", "G_1.a", date(2024, 1, 1), date(2024, 1, 20), "csv", "DST", chunk="month")
    old = Item("group", "G_1.a", date(2024, 1, 1), date(2024, 1, 19), "csv", "DST")
    other_id = Item("group", "G_1", date(2024, 1, 1), date(2024, 1, 19), "csv", "DST")
    assert superseded(now, relative_key(now), [entry(old), entry(other_id)]) == [entry(old)]


# --- the skip rule for a superseded file ----------------------------------------------------


OLD = entry(shorter(19), Status.SUPERSEDED, superseded_by=KEY)


@pytest.mark.parametrize("on_disk", [True, False])
@pytest.mark.parametrize("revisit_from", [None, date(2024, 1, 1)])
def test_a_superseded_file_planned_again_is_fetched_again(
    on_disk: bool, revisit_from: date | None
) -> None:
    """Its file is in history: a skipped item must have its file on disk."""
    due = decide(shorter(19), OLD, on_disk, overwrite=False, revisit_from=revisit_from)
    assert due.fetch is True and due.previous is None


def test_overwrite_fetches_a_superseded_file_again() -> None:
    for on_disk in (True, False):
        due = decide(shorter(19), OLD, on_disk, overwrite=True, revisit_from=None)
        assert due.fetch is True and due.previous is None


def test_a_file_not_superseded_is_judged_by_the_ordinary_rule() -> None:
    plain = entry(shorter(19))
    due = decide(shorter(19), plain, False, overwrite=False, revisit_from=None)
    assert due.fetch is True and due.previous is None
    due = decide(shorter(19), plain, True, overwrite=False, revisit_from=None)
    assert due.fetch is False and due.previous is plain


def test_a_shorter_file_of_another_or_unknown_chunking_stays() -> None:
    other = entry(shorter(19), chunk="none")
    assert superseded(NOW, KEY, [other]) == []
    unknown_whole_week = entry(shorter(7), chunk=None)  # 2024-01-07 is a Sunday
    unknown_partial = entry(shorter(10), chunk=None)
    assert superseded(NOW, KEY, [unknown_whole_week, unknown_partial]) == [unknown_partial]
