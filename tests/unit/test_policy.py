"""The skip rule and revision comparison, as tables; which earlier files a longer one of the
same chunk replaces, and the files an empty answer may not retire.

A chunk that ends ``yesterday`` grows every day, and so does its file's name; ``superseded``
picks the files the longer one stands for. The end-to-end daily runs are in e2e/test_daily."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from omar_bulk.journal import Entry
from omar_bulk.plan import Item
from omar_bulk.policy import (
    OnDisk,
    compare,
    decide,
    held_by_empty,
    needs_disk_check,
    superseded,
)
from omar_bulk.protocol import relative_key
from omar_bulk.results import Status

ITEM = Item("meter", "M1", date(2024, 1, 1), date(2024, 1, 31), "mdef", "PST")
DONE = Entry("meter/M1/x.mdef", Status.DOWNLOADED, 10, "ab" * 32, 1)
EMPTY = Entry("meter/M1/x.mdef", Status.EMPTY, 0, None, None)
FAILED = Entry("meter/M1/x.mdef", Status.FAILED, 0, None, None)


@pytest.mark.parametrize(
    ("entry", "on_disk", "overwrite", "revisit_from", "fetch", "previous"),
    [
        (None, False, False, None, True, None),
        (FAILED, False, False, None, True, None),
        (DONE, True, False, None, False, DONE),
        (EMPTY, True, False, None, False, EMPTY),
        (DONE, False, False, None, True, None),  # file gone or changed: a plain download
        (DONE, True, True, None, True, DONE),  # --overwrite: compare with what is there
        (DONE, True, False, date(2024, 1, 31), True, DONE),  # ends on the cut-off: revisited
        (DONE, True, False, date(2024, 2, 1), False, DONE),  # ends before it: skipped
        (EMPTY, True, False, date(2024, 1, 1), True, EMPTY),
        (FAILED, False, True, date(2024, 1, 1), True, None),
    ],
)
def test_the_skip_rule(
    entry: Entry | None,
    on_disk: bool,
    overwrite: bool,
    revisit_from: date | None,
    fetch: bool,
    previous: Entry | None,
) -> None:
    due = decide(ITEM, entry, on_disk, overwrite=overwrite, revisit_from=revisit_from)
    assert due.fetch is fetch
    assert due.previous == (previous if fetch else entry)


def test_only_entries_that_stand_for_a_file_need_the_disk() -> None:
    assert needs_disk_check(DONE) and needs_disk_check(EMPTY)
    assert not needs_disk_check(FAILED) and not needs_disk_check(None)


@pytest.mark.parametrize(
    ("previous", "digest", "status", "keep"),
    [
        (None, "cd" * 32, Status.DOWNLOADED, False),
        (None, None, Status.EMPTY, False),
        (DONE, "ab" * 32, Status.UNCHANGED, False),
        (DONE, "cd" * 32, Status.REVISED, True),  # the old file goes to history
        (DONE, None, Status.FAILED, False),  # an empty answer never replaces data
        (EMPTY, None, Status.UNCHANGED, False),
        (EMPTY, "cd" * 32, Status.REVISED, False),  # nothing on disk to keep
    ],
)
def test_a_refetched_body_against_the_version_it_replaces(
    previous: Entry | None, digest: str | None, status: Status, keep: bool
) -> None:
    assert compare(previous, digest) == (status, keep)


def test_statuses_are_the_strings_reports_store() -> None:
    assert [s.value for s in Status] == [
        "downloaded",
        "skipped",
        "empty",
        "failed",
        "revised",
        "unchanged",
        "missing",
        "superseded",
        "interrupted",
    ]
    assert f"{Status.FAILED}" == "failed" and Status("revised") is Status.REVISED


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


GROWN = Item("meter", "M1", date(2024, 3, 1), date(2024, 3, 31), "mdef", "PST", chunk="month")


GROWN_KEY = relative_key(GROWN)


def grown_entry(end: int, status: Status, chunk: str | None = "month") -> Entry:
    item = replace(GROWN, end=date(2024, 3, end))
    return Entry(relative_key(item), status, 10, "ab" * 32, 1, chunk=chunk)


def test_files_with_data_an_empty_answer_may_not_retire() -> None:
    empty_now = Entry(GROWN_KEY, Status.EMPTY, 0, None, None, chunk="month")
    data = grown_entry(14, Status.DOWNLOADED)
    assert held_by_empty(GROWN, GROWN_KEY, [empty_now, data]) == [data]
    assert held_by_empty(GROWN, GROWN_KEY, [data, empty_now]) == [data]
    assert held_by_empty(GROWN, GROWN_KEY, [empty_now, grown_entry(14, Status.EMPTY)]) == []
    assert (
        held_by_empty(GROWN, GROWN_KEY, [empty_now, grown_entry(14, Status.DOWNLOADED, "7d")]) == []
    )


def test_without_an_empty_answer_nothing_is_held() -> None:
    landed = Entry(GROWN_KEY, Status.DOWNLOADED, 10, "cd" * 32, 1, chunk="month")
    assert held_by_empty(GROWN, GROWN_KEY, [landed, grown_entry(14, Status.DOWNLOADED)]) == []
    assert held_by_empty(GROWN, GROWN_KEY, [grown_entry(14, Status.DOWNLOADED)]) == []


def test_the_disk_check_hashes_only_when_allowed_and_says_what_it_did(tmp_path: Path) -> None:
    """A file whose time stamp moved: without leave to hash the answer is "cannot tell"
    (None, not hashed); with it, the hash decides, and the result says it was hashed and,
    when the bytes changed, why the file is fetched again."""
    from omar_bulk.policy import on_disk

    final = tmp_path / "M1.mdef"
    final.write_bytes(b"data")
    digest = hashlib.sha256(b"data").hexdigest()
    moved = Entry("k", Status.DOWNLOADED, 4, digest, final.stat().st_mtime_ns - 1)
    assert on_disk(moved, final, may_hash=False) == OnDisk(None, None, rehashed=False)
    assert on_disk(moved, final, may_hash=True) == OnDisk(True, None, rehashed=True)
    same_stamp = replace(moved, mtime_ns=final.stat().st_mtime_ns)
    assert on_disk(same_stamp, final, may_hash=True) == OnDisk(True, None, rehashed=False)
    final.write_bytes(b"DATA")  # same size, other bytes
    changed = on_disk(replace(moved, mtime_ns=0), final, may_hash=True)
    assert changed.good is False and changed.rehashed is True
    assert changed.reason == f"{final} changed since it was fetched; fetching it again"
