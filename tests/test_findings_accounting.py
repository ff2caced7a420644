"""Findings of a hostile review of the accounting work (journal format 4, intents, empty
refetches, aborted runs, migrations).

Each test states a promise of README.md or docs/RELIABILITY.md and fails on the code as it
stood when the review began; it is meant to pass once the code is fixed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omar_bulk.cli import app
from omar_bulk.standin.certs import DEMO_PASSWORD
from omar_bulk.standin.server import Faults

from .conftest import Cli, standin_args

HERE = Path(__file__).parent
M1_FEB = ["--meter", "M1", "--start", "2024-02-01", "--end", "2024-02-29"]
FEB_FILE = "meter/M1/M1_20240201_20240229_PST.mdef"


def _journal(out: Path) -> sqlite3.Connection:
    return sqlite3.connect(out / ".omar-bulk" / "journal.sqlite3")


def _verify(out: Path) -> tuple[int, list[dict[str, str]]]:
    result = CliRunner().invoke(app, ["verify", str(out), "--json"])
    return result.exit_code, json.loads(result.stdout)["problems"] if result.stdout else []


# A fetch in its own process that SIGKILLs itself at a moment the driver code names, as
# tests/kill_driver.py does for its points.
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

# Between creating the journal's backup file before a migration and copying into it.
_AFTER_CREATING_THE_BACKUP = """
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


def _killed(cli: Cli, patch: str, *args: str) -> None:
    assert cli.server is not None
    command = [
        sys.executable,
        "-c",
        _DRIVER.format(patch=patch),
        "fetch",
        *args,
        "--out",
        str(cli.out),
        *standin_args(cli.server, cli.pki),
        "--no-progress",
        "--retry-wait",
        "0.01",
    ]
    env = {**os.environ, "OMAR_CERT_PASSWORD": DEMO_PASSWORD, "PYTHONPATH": str(HERE.parent)}
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, f"the kill point was never reached: {done.stderr}"


# -- an empty answer where the journal knew data: the month is recorded empty for good ----------


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_an_empty_answer_for_a_month_that_had_data_is_not_recorded_as_done(
    cli: Cli, faults: Faults, damage: str
) -> None:
    """February landed with data; its file is then deleted (or cut short) and the refetch is
    answered with an empty 200. The journal knew this month held data, and "an empty answer
    never replaces a file holding data" (README, Revisits): the month must not become a clean
    `empty`. Today it is recorded `empty`: fetch and status exit 0, every later run skips it
    (0 requests), and a cut-short file stays in OUT with no row, `verify` exit 1 for good."""
    assert cli("fetch", *M1_FEB).exit_code == 0
    path = cli.out / FEB_FILE
    if damage == "deleted":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-10])
    faults.script = {"M1": ["empty"]}
    cli("fetch", *M1_FEB)
    view = cli("status", str(cli.out), "--json", auth=False)
    assert view.exit_code == 1, view.stdout  # not a clean, complete month

    faults.script = {}
    assert cli.server is not None
    before = len(cli.server.state.downloads())
    again = cli("fetch", *M1_FEB)  # an ordinary rerun asks again, and the data settles it
    assert again.exit_code == 0, again.stderr
    assert len(cli.server.state.downloads()) == before + 1
    assert _verify(cli.out) == (0, [])


# -- a migration killed while making its backup loses the backup ------------------------------


def test_a_migration_killed_while_making_its_backup_still_leaves_a_backup(cli: Cli) -> None:
    """A format-3 journal; the run that migrates it is SIGKILLed right after it created
    `journal.sqlite3.v3-backup` and before copying into it (the same happens with a real
    `kill -9` at a random moment during the copy of a large journal: a partial file with a
    hot `-journal`). The next run takes the empty file for "an earlier attempt['s]" backup and
    migrates: the promised copy of the old journal (docs/RELIABILITY.md, "An archive outlives
    the release that wrote it") is an empty file."""
    assert cli("fetch", *M1_FEB).exit_code == 0
    journal = cli.out / ".omar-bulk" / "journal.sqlite3"
    db = sqlite3.connect(journal)
    try:
        db.execute("DROP TABLE landing")
        db.execute("PRAGMA user_version = 3")
        db.commit()
    finally:
        db.close()
    _killed(cli, _AFTER_CREATING_THE_BACKUP, *M1_FEB)
    backup = journal.with_name("journal.sqlite3.v3-backup")
    # What the kill left: an empty file, under the backup's name or a temporary one.
    assert [p for p in journal.parent.iterdir() if p.name.startswith(backup.name)]

    assert cli("fetch", *M1_FEB).exit_code == 0
    copy = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        assert copy.execute("PRAGMA user_version").fetchone()[0] == 3
        assert copy.execute("SELECT path FROM items").fetchall() == [(FEB_FILE,)]
    finally:
        copy.close()


# -- a killed first download after a failure is recovered as a revision ------------------------


def test_a_killed_download_after_a_failure_is_recovered_as_a_download_not_a_revision(
    cli: Cli, faults: Faults
) -> None:
    """February first fails (404), so its row says failed. The next run downloads it and is
    SIGKILLed between the rename and the commit. The rerun must record what an uninterrupted
    run records ("a rerun recovers the truth"): a download, no revision, nothing in
    `versions`. Today it says "a revision landed", counts `revisions` 1, adds a `versions` row
    of the failed attempt (no hash, 0 bytes) and `status` shows February revised."""
    faults.script = {"M1": ["404"]}
    assert cli("fetch", *M1_FEB).exit_code == 1
    faults.script = {}
    _killed(cli, _BEFORE_RECORDING_A_DOWNLOAD, *M1_FEB)
    rerun = cli("fetch", *M1_FEB)
    assert rerun.exit_code == 0, rerun.stderr
    db = _journal(cli.out)
    try:
        status, revisions = db.execute(
            "SELECT status, revisions FROM items WHERE path=?", (FEB_FILE,)
        ).fetchone()
        versions = db.execute("SELECT * FROM versions").fetchall()
    finally:
        db.close()
    assert status == "downloaded"
    assert "revision" not in rerun.stderr
    assert (revisions, versions) == (0, [])
    view = json.loads(cli("status", str(cli.out), "--json", auth=False).stdout)
    assert view["totals"]["revised"] == 0 and view["totals"]["revisions"] == 0


# -- two pulls of one chunk: the shorter file is fetched and archived again, run after run ------


def test_two_pulls_of_one_chunk_do_not_refetch_and_archive_the_shorter_file_forever(
    cli: Cli, tmp_path: Path
) -> None:
    """A manifest with a pull that ends mid-month (a contract's last day) and one that ends
    `yesterday`, for the same meter and chunking. The first run fetches March 01-10 and 01-15;
    thereafter every second run (same day, nothing new) fetches 01-10 again, and the next moves
    it to history again: one more request and one more identical history file every two runs,
    with fetch, status and verify all exit 0. A rerun with nothing due asks for nothing
    (README, the daily recipe)."""
    manifest = tmp_path / "two.toml"
    manifest.write_text(
        '[[pull]]\nmeters = ["M1"]\nstart = 2024-03-01\nend = 2024-03-10\n\n'
        '[[pull]]\nmeters = ["M1"]\nstart = 2024-03-01\nend = "yesterday"\n'
    )
    assert cli("fetch", str(manifest), "--today", "2024-03-16").exit_code == 0
    assert cli.server is not None
    first = len(cli.server.state.downloads())
    for _ in range(3):
        assert cli("fetch", str(manifest), "--today", "2024-03-16").exit_code == 0
    assert len(cli.server.state.downloads()) == first
    history = cli.out / ".omar-bulk" / "history"
    kept = [p.read_bytes() for p in history.rglob("*") if p.is_file()] if history.exists() else []
    assert len(kept) == len({hashlib.sha256(b).hexdigest() for b in kept}), (
        "the same bytes kept twice"
    )


# -- verify after a full disk names a move that never happened --------------------------------


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


def test_verify_after_a_full_disk_names_no_file_that_was_never_moved(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while the first file is written (exit 4, nothing lands). Every data file
    on disk has its row, as docs/RELIABILITY.md promises; yet `verify` exits 1 naming the file
    that never landed: "a run was stopped while putting this file in place ... remove nothing
    meanwhile" (the intent committed before the write is never withdrawn)."""
    torn = _full_for(monkeypatch, ".part")
    outcome = cli("fetch", *M1_FEB)
    assert outcome.exit_code == 4 and torn, outcome.stderr
    monkeypatch.undo()
    assert not (cli.out / FEB_FILE).exists()
    code, problems = _verify(cli.out)
    assert [p for p in problems if p["path"] == FEB_FILE] == []
    assert code == 0, problems


def test_a_history_copy_cut_by_a_full_disk_is_not_left_behind(
    cli: Cli, faults: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where hard links are not possible (SMB/CIFS, exFAT, many FUSE mounts: `Storage.keep`
    copies instead) the disk fills while a revision keeps the old version in history. The run
    stops (exit 4) and the file in place is the old one, but half a copy stays under
    `history/`; the rerun keeps it (it is not the same file as the one in place) and writes the
    real history file beside it, so `verify` exits 1 for good on a file no row lists."""
    assert cli("fetch", *M1_FEB).exit_code == 0
    faults.revision = 1

    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    torn = _full_for(monkeypatch, "/history/")
    outcome = cli("fetch", *M1_FEB, "--overwrite")
    assert outcome.exit_code == 4 and torn, outcome.stderr
    monkeypatch.undo()
    assert cli("fetch", *M1_FEB).exit_code == 0
    assert _verify(cli.out) == (0, [])


# -- without hard links, a revision killed after keeping the old version leaves a stray copy ----

_NO_LINKS_THEN_AFTER_KEEP = """
import errno
sys.path.insert(0, {tests!r})
def no_links(*args, **kwargs):
    raise OSError(errno.EPERM, "Operation not permitted")
os.link = no_links
import kill_driver
kill_driver.install("after-keep")
"""


def test_a_revision_killed_after_keeping_a_copy_leaves_no_unlisted_history_file(
    cli: Cli, faults: Faults
) -> None:
    """On a file system without hard links (SMB/CIFS, exFAT, sshfs: `Storage.keep` copies),
    `--overwrite` brings revised February and is SIGKILLed after the old version was copied
    into history, before the new one was renamed into place (kill_driver's `after-keep`). The
    rerun's settle removes the history file only when it is the same inode as the file in
    place, so the complete copy stays, listed in no `versions` row: `verify` exits 1 ("a
    history file that no row of the journal's versions lists") after the rerun."""
    assert cli("fetch", *M1_FEB).exit_code == 0
    faults.revision = 1
    _killed(cli, _NO_LINKS_THEN_AFTER_KEEP.format(tests=str(HERE)), *M1_FEB, "--overwrite")
    history = cli.out / ".omar-bulk" / "history"
    assert [p for p in history.rglob("*") if p.is_file()]  # the copy the kill left
    assert cli("fetch", *M1_FEB).exit_code == 0
    assert _verify(cli.out) == (0, [])


# -- a body cut short counts as a login that served a download ----------------------------------


def test_retries_0_is_one_attempt_when_the_only_data_ever_sent_was_cut_short(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    """The server sends January's headers and half its body, then drops the connection, and
    answers every later request with a login page. No download was ever served, so under
    `--retries 0` each file gets one attempt (README, Retries: "Until a login of the run has
    served a download ... every expiry counts against --retries: at most N+1 attempts").
    Today the cut body's headers count as a served download (`Session.served_one`), so the
    login pages for February are free relogins: 3 attempts and 3 logins."""
    faults.script = {"M1": ["cut", "login*"]}
    report = tmp_path / "r.json"
    two_months = ["--meter", "M1", "--start", "2023-01-01", "--end", "2023-02-28"]
    outcome = cli(
        "fetch", *two_months, "--retries", "0", "--concurrency", "1", "--report", str(report)
    )
    assert outcome.exit_code == 1, outcome.stderr
    items = json.loads(report.read_text())["items"]
    assert [i["attempts"] for i in items] == [1, 1], items
