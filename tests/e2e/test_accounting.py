"""Accounting: every request that went out is in the report and the journal, however the run
ends, and every data file on disk has its journal row, so a rerun asks only for what is
missing."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omar_bulk.cli import app
from omar_bulk.errors import LocalWriteError
from omar_bulk.journal import Journal, format_version
from omar_bulk.results import Status
from omar_bulk.standin.certs import DEMO_PASSWORD
from omar_bulk.standin.server import Faults

from ..conftest import Cli, assert_verified, standin_args
from ..fixtures.make_out_0_1_0 import MANIFEST

# Six items, in plan order M1's three months, then M2's.
ADHOC = ["--meter", "M1", "--meter", "M2", "--start", "2024-01-15", "--end", "2024-03-02"]


def _journal_rows(out: Path) -> dict[str, tuple[str, str | None]]:
    db = sqlite3.connect(out / ".omar-bulk" / "journal.sqlite3")
    try:
        return {p: (s, e) for p, s, e in db.execute("SELECT path, status, error FROM items")}
    finally:
        db.close()


def _data_files(out: Path) -> set[str]:
    return {
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and ".omar-bulk" not in p.parts
    }


@pytest.mark.parametrize("refusal", ["403", "401"])
def test_a_403_midway_accounts_for_every_request_that_went_out(
    cli: Cli, faults: Faults, tmp_path: Path, refusal: str
) -> None:
    """A 403 (or 401) while other requests are in flight: exit 3, and the report lists the
    refused item as failed and the ones in flight as interrupted, so that its attempts add up
    to the requests the server saw and ``not_attempted`` counts only items never sent; the
    journal holds the refusal. The rerun asks only for the items not on disk."""
    faults.stall_seconds = 2.0  # in flight when the refusal lands, then cancelled
    faults.script = {"M2": ["stall", f"{refusal}*"]}
    report = tmp_path / "r.json"
    outcome = cli("fetch", *ADHOC, "--concurrency", "2", "--report", str(report))
    assert outcome.exit_code == 3, outcome.stderr
    assert cli.server is not None
    sent = len(cli.server.state.downloads())
    data = json.loads(report.read_text())
    items, summary = data["items"], data["summary"]
    attempted = [i for i in items if i["status"] != "skipped"]
    assert sum(i["attempts"] for i in attempted) == sent
    assert summary["not_attempted"] == 6 - len(attempted)
    refused = [i for i in attempted if i["status"] == "failed"]
    assert refused and all(refusal in i["error"] for i in refused)
    assert all(i["status"] in ("downloaded", "failed", "interrupted") for i in attempted)
    rows = _journal_rows(cli.out)
    for item in refused:
        key = Path(item["path"]).relative_to(cli.out).as_posix()
        assert rows[key][0] == "failed" and refusal in str(rows[key][1])
    on_disk = _data_files(cli.out)
    assert on_disk == {k for k, (s, _) in rows.items() if s == "downloaded"}

    faults.script = {}
    again = cli("fetch", *ADHOC, "--concurrency", "2")
    assert again.exit_code == 0, again.stderr
    assert len(cli.server.state.downloads()) - sent == 6 - len(on_disk)


def test_a_data_file_that_landed_when_the_journal_could_not_be_written_keeps_its_row(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up just as a file lands: its journal write fails (exit 4). Once the
    run has removed its ``.part`` files the row is written after all, so the rerun does not
    fetch that file again."""
    original = Journal.record
    failed = []

    def record(self: Journal, key: str, result: object, *args: object, **kwargs: object) -> None:
        if not failed and getattr(result, "status", None) == Status.DOWNLOADED:
            failed.append(key)
            raise LocalWriteError(f"the disk is full: cannot write the journal {self.path}")
        original(self, key, result, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Journal, "record", record)
    outcome = cli("fetch", *ADHOC, "--concurrency", "1")
    assert outcome.exit_code == 4, outcome.stderr
    assert "the disk is full" in outcome.stderr
    assert failed, "the injected failure was never reached"
    on_disk = _data_files(cli.out)
    assert failed[0] in on_disk
    rows = _journal_rows(cli.out)
    assert on_disk == {k for k, (s, _) in rows.items() if s == "downloaded"}

    assert cli.server is not None
    before = len(cli.server.state.downloads())
    again = cli("fetch", *ADHOC, "--concurrency", "1")
    assert again.exit_code == 0, again.stderr
    asked = [s.raw_query for s in cli.server.state.downloads()[before:]]
    assert len(asked) == 6 - len(on_disk)


# -- an empty answer never replaces data -------------------------------------------------------

M1_FEB = ["--meter", "M1", "--start", "2024-02-01", "--end", "2024-02-29"]
FEB_FILE = "meter/M1/M1_20240201_20240229_PST.mdef"


@pytest.mark.parametrize(
    "again", [["--overwrite"], ["--revisit-days", "30", "--today", "2024-03-05"]]
)
def test_an_empty_answer_to_any_refetch_leaves_the_data_in_place_until_data_comes(
    cli: Cli, faults: Faults, again: list[str]
) -> None:
    """February lands with data; a refetch of it is answered with an empty 200. The file
    stays in place (nothing in history), the run names it and exits 1, ``status`` counts it
    as failed, not as a clean revision; the next run asks again, and the answer with data
    (revised meanwhile) settles it: the first version goes to history, status exit 0."""
    assert cli("fetch", *M1_FEB).exit_code == 0
    path = cli.out / FEB_FILE
    first = path.read_bytes()
    assert first

    faults.script = {"M1": ["empty"]}
    empty = cli("fetch", *M1_FEB, *again)
    assert empty.exit_code == 1, empty.stderr
    assert "answered empty" in empty.stderr and FEB_FILE.rpartition("/")[2] in empty.stderr
    assert path.read_bytes() == first
    assert not (cli.out / ".omar-bulk" / "history").exists() or not any(
        p.is_file() for p in (cli.out / ".omar-bulk" / "history").rglob("*")
    )
    view = cli("status", str(cli.out), "--json", auth=False)
    assert view.exit_code == 1, view.stdout
    assert json.loads(view.stdout)["totals"]["revisions"] == 0
    assert_verified(cli.out)  # the file kept is the one its row stands for

    assert cli.server is not None
    before = len(cli.server.state.downloads())
    faults.revision = 1
    settled = cli("fetch", *M1_FEB)  # no refetch option: the row's error asks again
    assert settled.exit_code == 0, settled.stderr
    assert len(cli.server.state.downloads()) == before + 1
    assert path.read_bytes() != first and path.read_bytes()
    history = [p for p in cli.out.rglob(f"{FEB_FILE.rpartition('/')[2]}.*") if p.is_file()]
    assert [p.read_bytes() for p in history] == [first]
    view = cli("status", str(cli.out), "--json", auth=False)
    assert view.exit_code == 0, view.stdout
    assert_verified(cli.out)


# -- kill -9 between a rename and its journal commit ------------------------------------------

HERE = Path(__file__).parent.parent


def _killed_at(point: str, cli: Cli, *args: str) -> None:
    """Run ``fetch ARGS`` in a process that SIGKILLs itself at ``point`` (kill_driver.py)."""
    assert cli.server is not None
    command = [
        sys.executable,
        str(HERE / "kill_driver.py"),
        point,
        "fetch",
        *args,
        "--out",
        str(cli.out),
        *standin_args(cli.server, cli.pki),
        "--no-progress",
        "--retry-wait",
        "0.01",
    ]
    env = {
        **os.environ,
        "OMAR_CERT_PASSWORD": DEMO_PASSWORD,
        "PYTHONPATH": str(HERE.parent),
        "OMAR_OFFLOAD": "inline",
    }
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, f"{point} was never reached: {done.stderr}"


def _assert_journal_agrees_with_disk(out: Path) -> dict[str, tuple[str, int, str | None]]:
    """Every downloaded row's file has its size and hash, every data file has such a row,
    and the history folder holds exactly the files ``versions`` lists, with their bytes."""
    db = sqlite3.connect(out / ".omar-bulk" / "journal.sqlite3")
    try:
        items = {
            p: (s, r, h)
            for p, s, r, h in db.execute("SELECT path, status, revisions, sha256 FROM items")
        }
        versions = db.execute(
            "SELECT path, sha256, archived_as FROM versions WHERE archived_as IS NOT NULL"
        ).fetchall()
    finally:
        db.close()
    for path, (status, _, sha) in items.items():
        if status == "downloaded":
            assert hashlib.sha256((out / path).read_bytes()).hexdigest() == sha, path
    assert _data_files(out) == {p for p, (s, _, _) in items.items() if s == "downloaded"}
    history = out / ".omar-bulk" / "history"
    kept = {p.relative_to(out).as_posix() for p in history.rglob("*") if p.is_file()}
    assert kept == {archived for _, _, archived in versions}, "history and versions disagree"
    for _, sha, archived in versions:
        assert hashlib.sha256((out / archived).read_bytes()).hexdigest() == sha, archived
    return items


@pytest.mark.parametrize("point", ["before-keep", "after-keep", "before-record"])
def test_a_revision_killed_at_any_step_is_recovered_by_the_rerun(
    cli: Cli, faults: Faults, point: str
) -> None:
    """``--overwrite`` brings revised February; the process is SIGKILLed at each step
    between keeping the old version and committing the new one. The rerun (no
    ``--overwrite``) asks for nothing and leaves a journal that agrees with the disk: if the
    new file landed, its row is a revision and the old version's history file is listed in
    ``versions``; if not, no stray history file is left."""
    assert cli("fetch", *M1_FEB).exit_code == 0
    path = cli.out / FEB_FILE
    first = path.read_bytes()
    faults.revision = 1
    _killed_at(point, cli, *M1_FEB, "--overwrite")
    # verify, before the rerun: a stopped move is named as such, with the rerun as its fix,
    # never as a history file "no run needs"; a move that never happened is no problem, but
    # the history link made for it is named, with the rerun that removes it
    checked = CliRunner().invoke(app, ["verify", str(cli.out), "--json"])
    problems = json.loads(checked.stdout)["problems"]
    if point == "before-keep":
        assert (checked.exit_code, problems) == (0, []), checked.stdout
    elif point == "after-keep":
        assert checked.exit_code == 1, checked.stdout
        assert [p["path"].startswith(".omar-bulk/history/") for p in problems] == [True]
        assert "never did" in problems[0]["problem"]
        assert problems[0]["fix"].startswith("run the same fetch again: it removes")
    else:
        assert checked.exit_code == 1, checked.stdout
        assert [p["path"] for p in problems] == [FEB_FILE]
        assert "a run was stopped" in problems[0]["problem"]
        assert problems[0]["fix"].startswith("run the same fetch again: it records")
    dry = cli("fetch", *M1_FEB, "--dry-run")
    assert dry.exit_code == 0 and "https://" not in dry.stdout  # as the rerun: nothing due
    assert cli.server is not None
    before = len(cli.server.state.downloads())
    rerun = cli("fetch", *M1_FEB)
    assert rerun.exit_code == 0, rerun.stderr
    assert len(cli.server.state.downloads()) == before  # nothing fetched again
    items = _assert_journal_agrees_with_disk(cli.out)
    assert_verified(cli.out)
    status, revisions, _ = items[FEB_FILE]
    assert status == "downloaded"
    if path.read_bytes() == first:
        assert point != "before-record"
        assert revisions == 0
    else:
        assert revisions == 1
        assert "revision landed" in rerun.stderr


@pytest.mark.parametrize("point", ["before-retire", "retire-linked", "before-supersede"])
def test_a_retired_shorter_file_killed_at_any_step_is_recovered_by_the_rerun(
    cli: Cli, tmp_path: Path, point: str
) -> None:
    """March 01-14 lands on 03-15; on 03-16 March 01-15 lands and the shorter file is moved
    to history, with the process SIGKILLed at each step of that move. The rerun leaves the
    shorter file in history, listed in ``versions`` under the longer one, its row superseded,
    and a journal that agrees with the disk."""
    manifest = tmp_path / "daily.toml"
    manifest.write_text('[[pull]]\nmeters = ["M1"]\nstart = 2024-03-01\nend = "yesterday"\n')
    assert cli("fetch", str(manifest), "--today", "2024-03-15").exit_code == 0
    _killed_at(point, cli, str(manifest), "--today", "2024-03-16")
    rerun = cli("fetch", str(manifest), "--today", "2024-03-16")
    assert rerun.exit_code == 0, rerun.stderr
    items = _assert_journal_agrees_with_disk(cli.out)
    assert_verified(cli.out)
    shorter = "meter/M1/M1_20240301_20240314_PST.mdef"
    longer = "meter/M1/M1_20240301_20240315_PST.mdef"
    assert items[shorter][0] == "superseded" and items[longer][0] == "downloaded"
    db = sqlite3.connect(cli.out / ".omar-bulk" / "journal.sqlite3")
    try:
        listed = db.execute("SELECT archived_as FROM versions WHERE path=?", (longer,)).fetchall()
    finally:
        db.close()
    assert len(listed) == 1 and listed[0][0] is not None


# -- journal format 4: the intents table ------------------------------------------------------


def _tables(path: Path) -> tuple[int, set[str]]:
    db = sqlite3.connect(path)
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return version, names
    finally:
        db.close()


def test_a_format_3_journal_gains_the_landing_table_and_recovers_a_killed_revision(
    cli: Cli, faults: Faults
) -> None:
    """A journal of format 3 (no ``landing``) is backed up and migrated by the next run,
    which is killed between renaming a revision into place and committing it; the rerun
    recovers the revision from the intent the migrated journal took."""
    assert cli("fetch", *M1_FEB).exit_code == 0
    journal = cli.out / ".omar-bulk" / "journal.sqlite3"
    db = sqlite3.connect(journal)
    try:
        db.execute("DROP TABLE landing")
        db.execute("PRAGMA user_version = 3")
        db.commit()
    finally:
        db.close()
    faults.revision = 1
    _killed_at("before-record", cli, *M1_FEB, "--overwrite")
    backup = journal.with_name("journal.sqlite3.v3-backup")
    version, names = _tables(backup)
    assert version == 3 and "landing" not in names
    version, names = _tables(journal)
    assert version == format_version() == 4 and "landing" in names
    rerun = cli("fetch", *M1_FEB)
    assert rerun.exit_code == 0, rerun.stderr
    items = _assert_journal_agrees_with_disk(cli.out)
    assert_verified(cli.out)
    assert items[FEB_FILE][1] == 1  # a revision, with its earlier version in history


def test_a_0_1_0_journal_is_migrated_to_format_4(cli: Cli, tmp_path: Path) -> None:
    """The 0.1.0 archive's journal (format 0) gains every table up to ``landing``."""
    shutil.copytree(HERE / "fixtures" / "out-0.1.0", cli.out)
    manifest = tmp_path / "fixture.toml"
    manifest.write_text(MANIFEST)
    outcome = cli("fetch", str(manifest), "--today", "2024-03-02")
    assert outcome.exit_code == 0, outcome.stderr
    version, names = _tables(cli.out / ".omar-bulk" / "journal.sqlite3")
    assert version == 4 and {"items", "versions", "folders", "runs", "landing"} <= names
    assert _tables(cli.out / ".omar-bulk" / "journal.sqlite3.v0-backup")[0] == 0


# -- an empty answer where the journal knew data, whatever became of the file -------------------


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_an_empty_answer_for_a_month_whose_file_was_lost_is_not_recorded_empty(
    cli: Cli, faults: Faults, damage: str
) -> None:
    """A file deleted or cut short, then answered empty: failed until data comes again."""
    assert cli("fetch", *M1_FEB).exit_code == 0
    path = cli.out / FEB_FILE
    size = path.stat().st_size
    if damage == "deleted":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-10])
    faults.script = {"M1": ["empty"]}
    empty = cli("fetch", *M1_FEB)
    assert empty.exit_code == 1, empty.stderr
    assert f"held {size} bytes when it was fetched" in empty.stderr
    rows = _journal_rows(cli.out)
    assert rows[FEB_FILE][0] == "downloaded" and "answered empty" in str(rows[FEB_FILE][1])
    view = cli("status", str(cli.out), "--json", auth=False)
    assert view.exit_code == 1, view.stdout  # not a clean, complete month

    faults.script = {}
    assert cli.server is not None
    before = len(cli.server.state.downloads())
    again = cli("fetch", *M1_FEB)  # an ordinary rerun asks again, and the data settles it
    assert again.exit_code == 0, again.stderr
    assert len(cli.server.state.downloads()) == before + 1
    assert_verified(cli.out)


# -- a kill at moments of the run that tests/kill_driver.py does not name ----------------------

# A fetch in its own process that SIGKILLs itself where ``patch`` says.
_DRIVER = """
import os, signal, sys
sys.argv = ["omar-bulk", *sys.argv[1:]]
def die():
    os.kill(os.getpid(), signal.SIGKILL)
{patch}
from omar_bulk._entry import main
main()
"""

# Between renaming a first download into place and committing its outcome.
_BEFORE_RECORDING_A_DOWNLOAD = """
from omar_bulk.journal import Journal
record = Journal.record
def patched(self, key, result, *args, **kwargs):
    if result.sha256:
        die()
    return record(self, key, result, *args, **kwargs)
Journal.record = patched
"""

# While a migration copies the journal into its backup (as a kill -9 during the copy of a
# large journal would leave it: a file of that name holding nothing usable).
_WHILE_COPYING_THE_BACKUP = """
import sqlite3, types
import omar_bulk.journal as journal
shim = types.ModuleType("sqlite3")
shim.__dict__.update(sqlite3.__dict__)
def connect(path, *args, **kwargs):
    if "-backup" in str(path):
        die()
    return sqlite3.connect(path, *args, **kwargs)
shim.connect = connect
journal.sqlite3 = shim
"""

# Where hard links are not possible (SMB/CIFS, exFAT, sshfs: Storage.keep copies), at one of
# kill_driver's points.
_NO_LINKS_THEN = """
import errno
sys.path.insert(0, {tests!r})
def no_links(*args, **kwargs):
    raise OSError(errno.EPERM, "Operation not permitted")
os.link = no_links
import kill_driver
kill_driver.install({point!r})
"""


def _killed(cli: Cli, patch: str, *args: str) -> None:
    assert cli.server is not None
    command = [sys.executable, "-c", _DRIVER.format(patch=patch), "fetch", *args]
    command += ["--out", str(cli.out), *standin_args(cli.server, cli.pki)]
    command += ["--no-progress", "--retry-wait", "0.01"]
    env = {**os.environ, "OMAR_CERT_PASSWORD": DEMO_PASSWORD, "PYTHONPATH": str(HERE.parent)}
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, f"the kill point was never reached: {done.stderr}"


def _make_format_3(out: Path) -> Path:
    journal = out / ".omar-bulk" / "journal.sqlite3"
    db = sqlite3.connect(journal)
    try:
        db.execute("DROP TABLE landing")
        db.execute("PRAGMA user_version = 3")
        db.commit()
    finally:
        db.close()
    return journal


def _assert_backup_of_format_3(journal: Path) -> None:
    backup = journal.with_name("journal.sqlite3.v3-backup")
    copy = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        assert copy.execute("PRAGMA user_version").fetchone()[0] == 3
        assert copy.execute("SELECT path FROM items").fetchall() == [(FEB_FILE,)]
    finally:
        copy.close()


def test_a_migration_killed_while_copying_its_backup_leaves_a_whole_backup_after_the_rerun(
    cli: Cli,
) -> None:
    """A backup copy cut short by a kill is never taken for the backup by the next run."""
    assert cli("fetch", *M1_FEB).exit_code == 0
    journal = _make_format_3(cli.out)
    _killed(cli, _WHILE_COPYING_THE_BACKUP, *M1_FEB)
    backup = journal.with_name("journal.sqlite3.v3-backup")
    # what the kill left: an empty file, under the backup's name or a temporary one
    assert [p for p in journal.parent.iterdir() if p.name.startswith(backup.name)]
    assert cli("fetch", *M1_FEB).exit_code == 0
    assert [p.name for p in journal.parent.iterdir() if p.name.startswith(backup.name)] == [
        backup.name
    ]  # nothing else left beside it
    _assert_backup_of_format_3(journal)


def test_an_empty_backup_left_by_an_earlier_release_is_made_again(cli: Cli) -> None:
    """An empty backup file (an earlier release killed while copying) is replaced by a copy."""
    assert cli("fetch", *M1_FEB).exit_code == 0
    journal = _make_format_3(cli.out)
    journal.with_name("journal.sqlite3.v3-backup").touch(mode=0o600)
    assert cli("fetch", *M1_FEB).exit_code == 0
    _assert_backup_of_format_3(journal)


def test_a_killed_download_after_a_failure_is_recovered_as_a_download_not_a_revision(
    cli: Cli, faults: Faults
) -> None:
    """A first download killed before its commit, after a 404, is recorded as a download."""
    faults.script = {"M1": ["404"]}
    assert cli("fetch", *M1_FEB).exit_code == 1
    faults.script = {}
    _killed(cli, _BEFORE_RECORDING_A_DOWNLOAD, *M1_FEB)
    rerun = cli("fetch", *M1_FEB)
    assert rerun.exit_code == 0, rerun.stderr
    assert "a download landed" in rerun.stderr and "revision" not in rerun.stderr
    db = sqlite3.connect(cli.out / ".omar-bulk" / "journal.sqlite3")
    try:
        status, revisions = db.execute(
            "SELECT status, revisions FROM items WHERE path=?", (FEB_FILE,)
        ).fetchone()
        versions = db.execute("SELECT * FROM versions").fetchall()
    finally:
        db.close()
    assert (status, revisions, versions) == ("downloaded", 0, [])
    view = json.loads(cli("status", str(cli.out), "--json", auth=False).stdout)
    assert view["totals"]["revised"] == 0 and view["totals"]["revisions"] == 0
    assert_verified(cli.out)


# -- history copies where hard links are not possible, and a disk that fills -------------------


def _no_links(*args: object, **kwargs: object) -> None:
    raise OSError(errno.EPERM, "Operation not permitted")


def _full_for(monkeypatch: pytest.MonkeyPatch, marker: str) -> list[str]:
    """Make every write to a file whose path holds ``marker`` keep half and fail with ENOSPC."""
    real_write = os.write
    torn: list[str] = []

    def write(fd: int, data: bytes) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if marker in target:
            real_write(fd, bytes(data[: len(data) // 2]))
            torn.append(target)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    return torn


@pytest.mark.parametrize("point", ["after-keep", "retire-linked"])
def test_a_move_killed_after_copying_into_history_leaves_no_unlisted_history_file(
    cli: Cli, faults: Faults, tmp_path: Path, point: str
) -> None:
    """Without hard links, a history copy made for a move a kill stopped is settled, not left."""
    manifest = tmp_path / "daily.toml"
    manifest.write_text('[[pull]]\nmeters = ["M1"]\nstart = 2024-03-01\nend = "yesterday"\n')
    if point == "after-keep":  # a revision of February
        first, rerun = M1_FEB, M1_FEB
        then = [*M1_FEB, "--overwrite"]
    else:  # March grows from 01-14 to 01-15: the shorter file goes to history
        first = [str(manifest), "--today", "2024-03-15"]
        then = rerun = [str(manifest), "--today", "2024-03-16"]
    assert cli("fetch", *first).exit_code == 0
    faults.revision = 1
    _killed(cli, _NO_LINKS_THEN.format(tests=str(HERE), point=point), *then)
    history = cli.out / ".omar-bulk" / "history"
    assert [p for p in history.rglob("*") if p.is_file()]  # the copy the kill left
    assert cli("fetch", *rerun).exit_code == 0
    _assert_journal_agrees_with_disk(cli.out)
    assert_verified(cli.out)


def test_a_history_copy_cut_by_a_full_disk_is_not_left_behind(
    cli: Cli, faults: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy into history cut short by a full disk is removed; the rerun leaves verify clean."""
    assert cli("fetch", *M1_FEB).exit_code == 0
    faults.revision = 1
    monkeypatch.setattr(os, "link", _no_links)
    torn = _full_for(monkeypatch, "/history/")
    outcome = cli("fetch", *M1_FEB, "--overwrite")
    assert outcome.exit_code == 4 and torn, outcome.stderr
    monkeypatch.undo()
    history = cli.out / ".omar-bulk" / "history"
    assert not [p for p in history.rglob("*") if p.is_file()]
    assert cli("fetch", *M1_FEB).exit_code == 0
    assert_verified(cli.out)


# -- verify names only the moves that happened -------------------------------------------------


def test_verify_after_a_full_disk_names_no_file_that_was_never_moved(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk before the first file lands leaves nothing for verify to name."""
    torn = _full_for(monkeypatch, ".part")
    outcome = cli("fetch", *M1_FEB)
    assert outcome.exit_code == 4 and torn, outcome.stderr
    monkeypatch.undo()
    assert not (cli.out / FEB_FILE).exists()
    assert_verified(cli.out)


def test_verify_names_a_changed_file_whose_move_a_stopped_run_never_made(
    cli: Cli, faults: Faults
) -> None:
    """A stopped run's intent never hides what else is wrong with its file (a changed hash)."""
    assert cli("fetch", *M1_FEB).exit_code == 0
    faults.revision = 1
    _killed_at("before-keep", cli, *M1_FEB, "--overwrite")
    path = cli.out / FEB_FILE
    body = bytearray(path.read_bytes())
    body[0] ^= 1
    path.write_bytes(bytes(body))
    checked = CliRunner().invoke(app, ["verify", str(cli.out), "--json"])
    assert checked.exit_code == 1, checked.stdout
    problems = json.loads(checked.stdout)["problems"]
    assert [p["path"] for p in problems] == [FEB_FILE]
    assert "SHA-256" in problems[0]["problem"], problems
