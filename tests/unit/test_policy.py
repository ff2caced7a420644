"""The skip rule and revision comparison, as tables; and the dry run obeys the same rule."""

from __future__ import annotations

from datetime import date

import pytest

from omar_bulk.journal import Entry
from omar_bulk.plan import Item
from omar_bulk.policy import compare, decide, needs_disk_check
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
