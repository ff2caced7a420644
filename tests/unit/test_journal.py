"""The journal's rows and its word on the files on disk, on a temporary folder: no server.

What ``Journal.record`` writes for each outcome, and when ``vouches`` / ``hash_matches`` trust a
file, and each migration step on a copy of 0.1.0's folder, fast enough for every mutant of
journal.py (``make mutation``). Runs over old and damaged journals are in e2e/test_journal and
e2e/test_reliability.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from omar_bulk import journal as journal_module
from omar_bulk.errors import LocalWriteError
from omar_bulk.journal import JOURNAL_NAME, Entry, Journal, _salvage_journal, format_version
from omar_bulk.plan import Item
from omar_bulk.policy import _hash_check as hash_matches
from omar_bulk.policy import _stat_check as vouches
from omar_bulk.protocol import relative_key
from omar_bulk.results import ItemResult, Status

from ..conftest import FIXTURE_0_1_0, rows, state_of, user_version

ITEM = Item("meter", "M1", date(2024, 1, 1), date(2024, 1, 31), "mdef", "PST")
KEY = relative_key(ITEM)
URL = "https://omar.example/getMDEF.jsp?x=1"
ONE = "1" * 64
TWO = "2" * 64


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = Journal.open(tmp_path)
    opened.begin_run()
    yield opened
    opened.close()


def result(
    status: Status,
    *,
    size: int = 0,
    sha256: str | None = None,
    attempts: int = 1,
    error: str | None = None,
    url: str = URL,
) -> ItemResult:
    return ItemResult(ITEM, url, Path("/x") / KEY, status, size, sha256, attempts, error)


def row(journal: Journal, key: str = KEY) -> dict[str, object]:
    db = sqlite3.connect(journal.path)
    db.row_factory = sqlite3.Row
    try:
        found = db.execute("SELECT * FROM items WHERE path=?", (key,)).fetchone()
        return dict(found) if found else {}
    finally:
        db.close()


def backdate(journal: Journal, when: float, key: str = KEY) -> None:
    db = sqlite3.connect(journal.path)
    with db:
        db.execute("UPDATE items SET fetched_at=?, checked_at=? WHERE path=?", (when, when, key))
    db.close()


# --- record: the row of each outcome -------------------------------------------------------------


def test_a_download_is_recorded_with_everything_that_identifies_it(journal: Journal) -> None:
    journal.record(KEY, result(Status.DOWNLOADED, size=10, sha256=ONE, attempts=2), 123)
    got = row(journal)
    assert {k: got[k] for k in ("path", "kind", "id", "start", "end", "format", "time_type")} == {
        "path": KEY,
        "kind": "meter",
        "id": "M1",
        "start": "2024-01-01",
        "end": "2024-01-31",
        "format": "mdef",
        "time_type": "PST",
    }
    assert (got["url"], got["status"], got["bytes"], got["sha256"], got["attempts"]) == (
        URL,
        "downloaded",
        10,
        ONE,
        2,
    )
    assert got["error"] is None and got["mtime_ns"] == 123 and got["superseded_by"] is None
    assert got["run_id"] == journal.run_id and got["revisions"] == 0
    fetched = got["fetched_at"]
    assert isinstance(fetched, float) and fetched == got["checked_at"]
    assert journal.get(KEY) == Entry(KEY, "downloaded", 10, ONE, 123, fetched)
    assert journal.versions(KEY) == []


@pytest.mark.parametrize(
    ("status", "sha256", "stored"),
    [(Status.EMPTY, None, "empty"), (Status.FAILED, None, "failed")],
)
def test_an_empty_or_failed_first_outcome_is_its_own_status(
    journal: Journal, status: Status, sha256: str | None, stored: str
) -> None:
    error = "HTTP 500" if status == Status.FAILED else None
    journal.record(KEY, result(status, sha256=sha256, attempts=4, error=error), None)
    got = row(journal)
    assert (got["status"], got["error"], got["attempts"], got["mtime_ns"]) == (
        stored,
        error,
        4,
        None,
    )


@pytest.mark.parametrize("status", [Status.FAILED, Status.UNCHANGED])
def test_a_failed_or_unchanged_refetch_leaves_the_verified_file_in_place(
    journal: Journal, status: Status
) -> None:
    journal.record(KEY, result(Status.DOWNLOADED, size=10, sha256=ONE), 123)
    backdate(journal, 1000.0)
    journal.begin_run()
    previous = journal.get(KEY)
    error = "timed out" if status == Status.FAILED else None
    outcome = result(status, size=99, sha256=TWO, attempts=5, error=error, url="https://other/")
    journal.record(KEY, outcome, 456, previous=previous)
    got = row(journal)
    # The file's own facts stay; the attempt is noted.
    assert (got["status"], got["bytes"], got["sha256"], got["mtime_ns"], got["url"]) == (
        "downloaded",
        10,
        ONE,
        123,
        URL,
    )
    assert got["fetched_at"] == 1000.0 and got["checked_at"] > 1000.0  # type: ignore[operator]
    assert (got["attempts"], got["error"], got["run_id"]) == (5, error, journal.run_id)
    assert got["revisions"] == 0 and journal.versions(KEY) == []


def test_a_successful_refetch_clears_the_error_of_a_failed_one(journal: Journal) -> None:
    journal.record(KEY, result(Status.DOWNLOADED, size=10, sha256=ONE), 123)
    journal.record(KEY, result(Status.FAILED, error="boom"), None, previous=journal.get(KEY))
    assert row(journal)["error"] == "boom"
    journal.record(KEY, result(Status.DOWNLOADED, size=11, sha256=TWO), 124)
    got = row(journal)
    assert (got["error"], got["bytes"], got["sha256"], got["mtime_ns"]) == (None, 11, TWO, 124)


def test_a_failure_without_a_verified_file_replaces_the_row(journal: Journal) -> None:
    journal.record(KEY, result(Status.FAILED, error="first"), None)
    journal.record(KEY, result(Status.FAILED, error="second", attempts=3), None)
    got = row(journal)
    assert (got["status"], got["error"], got["attempts"]) == ("failed", "second", 3)


def test_a_revision_keeps_the_old_version_and_counts_itself(journal: Journal) -> None:
    journal.record(KEY, result(Status.DOWNLOADED, size=10, sha256=ONE), 123)
    backdate(journal, 1000.0)
    previous = journal.get(KEY)
    journal.record(
        KEY,
        result(Status.REVISED, size=12, sha256=TWO),
        456,
        previous=previous,
        archived_as="history/one",
    )
    got = row(journal)
    assert (got["status"], got["bytes"], got["sha256"], got["mtime_ns"], got["revisions"]) == (
        "downloaded",
        12,
        TWO,
        456,
        1,
    )
    assert got["fetched_at"] > 1000.0  # type: ignore[operator]
    assert journal.versions(KEY) == [(1000.0, ONE, 10, "history/one")]
    # A second revision: both old versions, oldest first, and two revisions counted.
    backdate(journal, 2000.0)
    journal.record(KEY, result(Status.REVISED, size=0), None, previous=journal.get(KEY))
    got = row(journal)
    assert (got["status"], got["sha256"], got["revisions"]) == ("empty", None, 2)
    assert journal.versions(KEY) == [(1000.0, ONE, 10, "history/one"), (2000.0, TWO, 12, None)]


def test_a_plain_refetch_does_not_count_as_a_revision(journal: Journal) -> None:
    journal.record(KEY, result(Status.DOWNLOADED, size=10, sha256=ONE), 1)
    journal.record(KEY, result(Status.REVISED, size=10, sha256=TWO), 2, previous=journal.get(KEY))
    journal.record(KEY, result(Status.DOWNLOADED, size=10, sha256=ONE), 3)
    assert row(journal)["revisions"] == 1
    assert [r.revisions for r in journal.records()] == [1]


def test_a_record_in_another_run_carries_that_runs_id(journal: Journal) -> None:
    first = journal.run_id
    second = journal.begin_run()
    assert second != first
    journal.record(KEY, result(Status.EMPTY), None)
    assert row(journal)["run_id"] == second


def test_a_row_is_committed_at_once(journal: Journal, tmp_path: Path) -> None:
    journal.record(KEY, result(Status.DOWNLOADED, size=1, sha256=ONE), 1)
    journal.record(KEY, result(Status.REVISED, size=2, sha256=TWO), 2, previous=journal.get(KEY))
    other = sqlite3.connect(tmp_path / JOURNAL_NAME)
    try:
        assert other.execute("SELECT bytes, revisions FROM items").fetchall() == [(2, 1)]
        assert other.execute("SELECT count(*) FROM versions").fetchone() == (1,)
    finally:
        other.close()


# --- policy.on_disk: its stat check and its hash check ---------------------------------------


def on_disk(tmp_path: Path, body: bytes) -> tuple[Path, Entry]:
    final = tmp_path / "data.mdef"
    final.write_bytes(body)
    info = final.stat()
    entry = Entry("k", "downloaded", len(body), hashlib.sha256(body).hexdigest(), info.st_mtime_ns)
    return final, entry


def test_an_untouched_file_is_vouched_for(tmp_path: Path) -> None:
    final, entry = on_disk(tmp_path, b"some data")
    assert vouches(entry, final) == (True, None)


def test_a_file_with_a_new_time_stamp_needs_its_hash_checked(tmp_path: Path) -> None:
    final, entry = on_disk(tmp_path, b"some data")
    os.utime(final, ns=(1, entry.mtime_ns + 1))  # type: ignore[operator]
    assert vouches(entry, final) == (None, None)
    assert hash_matches(entry, final) == (True, None)


def test_a_file_of_another_size_is_fetched_again(tmp_path: Path) -> None:
    final, entry = on_disk(tmp_path, b"some data")
    final.write_bytes(b"some data, longer")
    os.utime(final, ns=(1, entry.mtime_ns))  # type: ignore[arg-type]
    assert vouches(entry, final) == (
        False,
        f"{final} has 17 bytes, the journal says 9; fetching it again",
    )


def test_a_missing_file_is_fetched_again(tmp_path: Path) -> None:
    final, entry = on_disk(tmp_path, b"x")
    final.unlink()
    assert vouches(entry, final) == (False, f"{final} is missing; fetching it again")


def test_a_file_swapped_for_a_link_is_never_vouched_for(tmp_path: Path) -> None:
    final, entry = on_disk(tmp_path, b"some data")
    real = tmp_path / "real"
    final.rename(real)
    final.symlink_to(real)
    assert vouches(entry, final) == (
        False,
        f"{final} is a symbolic link, not the file fetched; fetching it again",
    )


@pytest.mark.parametrize(
    ("status", "verdict"),
    [("empty", True), ("failed", False), ("superseded", False), ("skipped", False)],
)
def test_only_downloaded_files_are_looked_at(tmp_path: Path, status: str, verdict: bool) -> None:
    # No file at all: an empty answer has none, and the others are not trusted anyway.
    entry = Entry("k", status, 0, None, None)
    assert vouches(entry, tmp_path / "nothing") == (verdict, None)


def test_changed_bytes_of_the_same_size_are_found_by_the_hash(tmp_path: Path) -> None:
    body = os.urandom(2_500_000)  # more than one read block
    final, entry = on_disk(tmp_path, body)
    assert hash_matches(entry, final) == (True, None)
    changed = bytearray(body)
    changed[-1] ^= 1
    final.write_bytes(bytes(changed))
    assert hash_matches(entry, final) == (
        False,
        f"{final} changed since it was fetched; fetching it again",
    )
    changed = bytearray(body)
    changed[0] ^= 1
    final.write_bytes(bytes(changed))
    assert hash_matches(entry, final)[0] is False


def test_a_file_that_cannot_be_read_is_fetched_again(tmp_path: Path) -> None:
    final, entry = on_disk(tmp_path, b"x")
    final.unlink()
    assert hash_matches(entry, final) == (False, f"{final} cannot be read; fetching it again")
    final.mkdir()
    assert hash_matches(entry, final) == (False, f"{final} cannot be read; fetching it again")


@pytest.mark.parametrize("status", [Status.DOWNLOADED, Status.REVISED, Status.FAILED])
def test_a_row_that_cannot_be_written_is_a_local_write_error_naming_the_journal(
    tmp_path: Path, status: Status
) -> None:
    journal = Journal.open(tmp_path)
    journal.record(KEY, result(Status.DOWNLOADED, size=1, sha256=ONE), 1)
    previous = journal.get(KEY)
    journal.close()
    with pytest.raises(LocalWriteError) as caught:
        journal.record(KEY, result(status, size=2, sha256=TWO), 2, previous=previous)
    assert str(caught.value) == (
        f"cannot write the journal {tmp_path / JOURNAL_NAME}: Cannot operate on a closed database."
    )


def test_a_failing_migration_leaves_the_journal_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    shutil.copytree(FIXTURE_0_1_0, out)
    journal = state_of(out) / JOURNAL_NAME
    before = rows(journal)

    def breaks(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x)")
        raise sqlite3.OperationalError("a step that fails half-way")

    monkeypatch.setattr(journal_module, "MIGRATIONS", [*journal_module.MIGRATIONS, breaks])
    with pytest.raises(LocalWriteError, match="left as it was"):
        Journal.open(state_of(out), data_root=out)
    assert user_version(journal) == 0 and rows(journal) == before
    db = sqlite3.connect(journal)
    assert db.execute("SELECT 1 FROM sqlite_master WHERE name='half_done'").fetchone() is None
    db.close()
    assert (journal.with_name(f"{JOURNAL_NAME}.v0-backup")).exists()
    assert not list(state_of(out).glob("*damaged*"))


def test_journal_paths_may_be_relative_or_hold_uri_characters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dry run and the damage salvage open the journal read-only by URI; a relative path
    (the default folder) or one with ``?``, ``#`` or ``%`` must work too."""
    folder = tmp_path / "odd?name#with%25" / ".omar-bulk"
    folder.mkdir(parents=True)
    Journal.open(folder).close()
    monkeypatch.chdir(tmp_path)
    relative = Path("odd?name#with%25") / ".omar-bulk"
    readonly = Journal.open_readonly(relative)
    assert readonly is not None
    try:
        assert readonly.is_empty()
    finally:
        readonly.close()
    assert _salvage_journal(relative / JOURNAL_NAME) == []


def test_a_disk_io_error_on_a_full_disk_is_said_to_be_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's "disk I/O error" where the disk has no free block is "the disk is full"."""
    error = sqlite3.OperationalError("disk I/O error")
    error.sqlite_errorcode = 4874  # type: ignore[attr-defined]  # SQLITE_IOERR_SHMSIZE
    full = os.statvfs_result((4096, 4096, 256, 0, 0, 64, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda _path: full)
    said = journal_module._access_error(error, tmp_path / JOURNAL_NAME)
    assert said is not None and str(said).startswith("the disk is full"), said


@pytest.mark.parametrize("version", range(format_version()))
def test_a_journal_of_every_older_format_gets_every_later_step(
    tmp_path: Path, version: int
) -> None:
    """A journal left at format N (0.1.0's brought up to N by the first N steps, as that
    release wrote it) gains every column of the steps after N, not only of the last one."""
    out = tmp_path / "out"
    shutil.copytree(FIXTURE_0_1_0, out)
    journal = state_of(out) / JOURNAL_NAME
    db = sqlite3.connect(journal)
    for step in journal_module.MIGRATIONS[:version]:
        step(db)
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()
    Journal.open(state_of(out), data_root=out).close()
    assert user_version(journal) == format_version()
    db = sqlite3.connect(journal)
    try:
        items = {row[1] for row in db.execute("PRAGMA table_info(items)")}
        versions = {row[1] for row in db.execute("PRAGMA table_info(versions)")}
    finally:
        db.close()
    assert {"superseded_by", "chunk"} <= items and "archived_as" in versions
    assert journal.with_name(f"{JOURNAL_NAME}.v{version}-backup").exists()
