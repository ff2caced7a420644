"""The journal outlives the release that wrote it, and is never taken for damaged when it is
only out of reach."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from omar_bulk.journal import JOURNAL_NAME, format_version
from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import Faults, ServerThread

from ..conftest import (
    FIXTURE_0_1_0,
    Cli,
    assert_verified,
    rows,
    standin_args,
    state_of,
    user_version,
)
from ..fixtures.make_out_0_1_0 import MANIFEST

TODAY = ["--today", "2024-03-02"]
ONE = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-02-29"]


@pytest.fixture
def old_out(cli: Cli, tmp_path: Path) -> Path:
    """A copy of the output folder release 0.1.0 wrote, where ``cli`` writes."""
    shutil.copytree(FIXTURE_0_1_0, cli.out)
    # As a fresh clone leaves it: every time stamp new (so the journal's are stale and each file
    # is re-hashed), and folders as git made them; 0.1.0 had made them 0700.
    for path in cli.out.rglob("*"):
        os.utime(path)
        if path.is_dir():
            path.chmod(0o700)
    manifest = tmp_path / "fixture.toml"
    manifest.write_text(MANIFEST)
    return manifest


# --- format versions ------------------------------------------------------------------------


def test_a_0_1_0_folder_is_migrated_after_a_backup_and_a_rerun_asks_for_nothing(
    cli: Cli, old_out: Path
) -> None:
    journal = state_of(cli.out) / JOURNAL_NAME
    before = rows(journal)
    assert user_version(journal) == 0
    outcome = cli("fetch", str(old_out), *TODAY)
    assert outcome.exit_code == 0, outcome.stderr
    assert "0 downloaded, 7 skipped" in outcome.stderr
    assert cli.server is not None and cli.server.state.downloads() == []
    assert user_version(journal) == format_version() >= 1
    backup = journal.with_name(f"{JOURNAL_NAME}.v0-backup")
    assert user_version(backup) == 0 and rows(backup) == before
    assert [row[:11] for row in rows(journal)] == [row[:11] for row in before]


def test_a_revisit_over_a_0_1_0_folder_still_archives_into_history(
    cli: Cli, faults: Faults, old_out: Path
) -> None:
    faults.revision = 2
    outcome = cli("fetch", str(old_out), *TODAY, "--revisit-days", "1")
    assert outcome.exit_code == 0, outcome.stderr
    assert "2 revised" in outcome.stderr
    journal = state_of(cli.out) / JOURNAL_NAME
    assert user_version(journal) == format_version()
    versions = rows(journal, "versions")
    assert len(versions) == 4  # the two 0.1.0 kept, and the two replaced now
    for path, _, sha, size, archived_as in versions:
        kept = cli.out / str(archived_as)
        assert kept.is_file() and kept.stat().st_size == size, path
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == sha
    assert len(list((state_of(cli.out) / "history").rglob("*.mdef.*"))) == 4


def test_a_journal_from_a_newer_release_stops_the_run_with_exit_2(cli: Cli) -> None:
    """Nothing sent, nothing renamed or backed up, the journal byte for byte as it was; a dry
    run says the same."""
    assert cli("fetch", *ONE).exit_code == 0
    journal = state_of(cli.out) / JOURNAL_NAME
    db = sqlite3.connect(journal)
    db.execute(f"PRAGMA user_version = {format_version() + 1}")
    db.close()
    before = journal.read_bytes()
    assert cli.server is not None
    asked = len(cli.server.state.downloads())
    for extra in (["--overwrite"], ["--dry-run"]):
        outcome = cli("fetch", *ONE, *extra)
        assert outcome.exit_code == 2, outcome.stderr
        assert "newer omar-bulk" in outcome.stderr and "Traceback" not in outcome.stderr
    assert journal.read_bytes() == before
    assert list(state_of(cli.out).glob(f"{JOURNAL_NAME}.*")) == []  # no backup, nothing aside
    assert len(cli.server.state.downloads()) == asked


# --- a state folder out of reach is not a damaged journal -----------------------------------


def _chattr(flag: str, path: Path) -> bool:
    chattr = shutil.which("chattr")
    if chattr is None:
        return False
    done = subprocess.run([chattr, flag, str(path)], capture_output=True, check=False)
    return done.returncode == 0


def test_an_immutable_state_folder_is_exit_4_and_the_journal_stays(cli: Cli) -> None:
    """``chattr +i`` on ``OUT/.omar-bulk`` (even root cannot create the journal's ``-wal`` and
    ``-shm`` there): exit 4 with a clear message, nothing renamed aside."""
    assert cli("fetch", *ONE).exit_code == 0
    state = state_of(cli.out)
    before = sorted((p.name, p.read_bytes()) for p in state.iterdir() if p.is_file())
    if not _chattr("+i", state):
        pytest.skip("chattr +i is not available here (needs root and ext2/3/4, xfs or btrfs)")
    try:
        outcome = cli("fetch", *ONE, "--overwrite")
    finally:
        _chattr("-i", state)
    assert outcome.exit_code == 4, outcome.stderr
    assert "cannot write the journal" in outcome.stderr and "Traceback" not in outcome.stderr
    assert sorted((p.name, p.read_bytes()) for p in state.iterdir() if p.is_file()) == before


def test_a_read_only_journal_is_exit_4_and_stays(
    cli: Cli, pki: TestPKI, server: ServerThread
) -> None:
    """The journal on a read-only bind mount, in a private mount namespace (nothing stays
    mounted): exit 4, "read-only file system", no traceback, the journal untouched."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is missing")
    assert cli("fetch", *ONE).exit_code == 0
    journal = state_of(cli.out) / JOURNAL_NAME
    before = journal.read_bytes()
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    command = [unshare, "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        command.append("--map-root-user")
    probe = subprocess.run(
        [*command, "sh", "-c", script, "sh", str(journal), "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"no read-only bind mount here: {probe.stderr.decode(errors='replace')}")
    fetch = [sys.executable, "-m", "omar_bulk", "fetch", *ONE, "--overwrite", "--no-progress"]
    fetch += ["--out", str(cli.out), *standin_args(server, pki)]
    done = subprocess.run(
        [*command, "sh", "-c", script, "sh", str(journal), *fetch],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"OMAR_CERT_PASSWORD": DEMO_PASSWORD, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 4, done.stderr
    assert "read-only file system" in done.stderr and "Traceback" not in done.stderr
    assert journal.read_bytes() == before
    assert not list(state_of(cli.out).glob("*damaged*"))


@pytest.mark.parametrize("data", [False, True], ids=["first-run", "beside-data"])
def test_a_journal_without_tables_is_taken_for_no_journal_by_every_reader_and_the_run(
    cli: Cli, data: bool
) -> None:
    """A journal file with no tables (a run killed, or a disk that filled, right after
    creating it) is read as no journal by status, verify, the dry run and the run alike."""
    if data:
        assert cli("fetch", *ONE).exit_code == 0
    state_of(cli.out).mkdir(parents=True, exist_ok=True, mode=0o700)
    journal = state_of(cli.out) / JOURNAL_NAME
    for side in ("", "-wal", "-shm"):
        Path(f"{journal}{side}").unlink(missing_ok=True)
    journal.touch(mode=0o600)
    for reader in ("status", "verify"):
        seen = cli(reader, str(cli.out), auth=False)
        assert seen.exit_code == 2, seen.stdout + seen.stderr
        assert "has no omar-bulk journal" in seen.stderr and "cannot read" not in seen.stderr
    dry = cli("fetch", *ONE, "--dry-run")
    assert dry.exit_code == 0 and "set it aside" not in dry.stderr, dry.stderr
    assert dry.stdout.count("https://") == (0 if data else 2)
    assert cli.server is not None
    before = len(cli.server.state.downloads())
    run = cli("fetch", *ONE)
    assert run.exit_code == 0, run.stderr
    assert len(cli.server.state.downloads()) == before + (0 if data else 2)
    assert not list(state_of(cli.out).glob("*damaged*"))
    assert_verified(cli.out)


def test_the_dry_run_over_a_0_1_0_archive_is_not_a_traceback(cli: Cli) -> None:
    """README step 4 says: see what a run would do (``--dry-run``), then do it. After an
    upgrade the journal is still format 0 (only a real run migrates it), and the dry run
    dies with ``sqlite3.OperationalError: no such column: superseded_by`` (a traceback,
    exit 1): ``journal.get`` selects a column that format 0 and 1 journals lack."""
    shutil.copytree(FIXTURE_0_1_0, cli.out)
    outcome = cli(
        "fetch", "--out", str(cli.out), "--meter", "M1", "--start", "2024-03-01",
        "--end", "2024-03-01", "--chunk", "day", "--dry-run", auth=False,
    )  # fmt: skip
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit)
    assert outcome.exit_code == 0
    assert outcome.stdout == ""  # the 0.1.0 run fetched that day: nothing is due
