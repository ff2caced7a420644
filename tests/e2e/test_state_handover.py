"""A state folder outside OUT (``--state-dir``, or the local default for an OUT on a share)
never starts an archive afresh by mistake: it takes over the journal already in
``OUT/.omar-bulk``, serves one output folder only, is named by a pointer in OUT that commands
without ``--state-dir`` obey, and never receives a report or metrics file over its journal.
Readers (the dry run, ``status``) see an older journal in the current format without
changing it."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from omar_bulk import Settings, archive
from omar_bulk.archive import POINTER_NAME, SERVES_NAME, copy_journal, state_folder
from omar_bulk.errors import UsageError
from omar_bulk.journal import format_version
from omar_bulk.manifest import Defaults, adhoc_plan
from omar_bulk.metrics import check_target
from omar_bulk.storage import claimed

from ..conftest import FIXTURE_0_1_0, Cli, assert_verified

JANUARY = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-01-31"]
JOURNAL = "journal.sqlite3"


def _flat(text: str) -> str:
    """stderr with its line breaks undone (messages are wrapped to the terminal)."""
    return " ".join(text.split())


def _downloads(cli: Cli) -> int:
    assert cli.server is not None
    return len(cli.server.state.downloads())


def _pretend_share(monkeypatch: pytest.MonkeyPatch, share: Path) -> None:
    """Everything under ``share`` is on NFS; everything else as it really is."""
    real = archive.network_filesystem
    prefix = str(share)

    def fake(path: Path | str) -> str | None:
        return "NFS" if os.path.abspath(path).startswith(prefix) else real(path)

    monkeypatch.setattr(archive, "network_filesystem", fake)


def _user_version(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


# -- taking over the journal in OUT/.omar-bulk ---------------------------------------------------


def test_a_first_state_dir_takes_over_the_journal_in_out(cli: Cli, tmp_path: Path) -> None:
    """An archive fetched with its journal in OUT/.omar-bulk, then run with --state-dir for
    the first time: nothing is fetched again; the journal and the last report are copied into
    the state folder, the notice says where the journal lives now and that the old one is no
    longer used, and the old one is left byte for byte as it was."""
    assert cli("fetch", *JANUARY).exit_code == 0
    inside = cli.out / ".omar-bulk"
    before = (inside / JOURNAL).read_bytes()
    asked = _downloads(cli)
    state = tmp_path / "state"

    moved = cli("fetch", *JANUARY, "--state-dir", str(state))

    assert moved.exit_code == 0, moved.stderr
    assert _downloads(cli) == asked
    said = _flat(moved.stderr)
    assert f"now lives in {state / JOURNAL}" in said
    assert f"{inside / JOURNAL}, which is no longer used" in said
    assert (inside / JOURNAL).read_bytes() == before
    assert (state / JOURNAL).is_file() and (state / "last-run.json").is_file()
    assert (state / SERVES_NAME).read_text() == os.path.realpath(cli.out) + "\n"
    assert (inside / POINTER_NAME).read_text() == os.path.realpath(state) + "\n"
    assert oct((state / JOURNAL).stat().st_mode & 0o777) == "0o600"

    again = cli("fetch", *JANUARY, "--state-dir", str(state))
    assert again.exit_code == 0 and _downloads(cli) == asked
    assert "no longer used" not in again.stderr  # taken over once
    assert_verified(cli.out, state_dir=state)


def test_the_copy_includes_what_is_still_in_the_wal(tmp_path: Path) -> None:
    """The journal is copied through SQLite's backup API: a commit still in the ``-wal`` file
    (another connection open, no checkpoint) is in the copy; the source is not changed."""
    source, target = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"
    writer = sqlite3.connect(source, isolation_level=None)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("CREATE TABLE t (x)")
        writer.execute("INSERT INTO t VALUES (42)")
        assert Path(f"{source}-wal").stat().st_size > 0
        copy_journal(source, target)
    finally:
        writer.close()
    copy = sqlite3.connect(target)
    try:
        assert copy.execute("SELECT x FROM t").fetchall() == [(42,)]
    finally:
        copy.close()
    assert not Path(f"{target}.copying").exists()


def test_a_0_1_0_archive_on_a_share_is_taken_over_and_migrated_in_the_state_folder(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OUT on a share with a 0.1.0 journal: the dry run reads that journal (and says the next
    run moves it), the run asks for nothing, migrates the copy after its own backup, and leaves
    the journal on the share at format 0; status then reads the state folder."""
    from ..fixtures.make_out_0_1_0 import MANIFEST

    shutil.copytree(FIXTURE_0_1_0, cli.out)
    _pretend_share(monkeypatch, cli.out)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    state = state_folder(cli.out, None)[0]
    manifest = tmp_path / "old.toml"
    manifest.write_text(MANIFEST)
    where = [str(manifest), "--today", "2024-03-02"]

    dry = cli("fetch", *where, "--out", str(cli.out), "--dry-run", auth=False)
    assert (dry.exit_code, dry.stdout) == (0, ""), dry.stderr
    assert f"the next run copies it to {state}" in _flat(dry.stderr)

    run = cli("fetch", *where)
    assert run.exit_code == 0, run.stderr
    assert _downloads(cli) == 0
    assert "0 downloaded, 7 skipped" in run.stderr
    assert _user_version(state / JOURNAL) == format_version()
    assert (state / f"{JOURNAL}.v0-backup").is_file()
    assert _user_version(cli.out / ".omar-bulk" / JOURNAL) == 0

    view = cli("status", str(cli.out), "--json", auth=False)
    assert view.exit_code == 0, view.stderr
    totals = json.loads(view.stdout)["totals"]
    assert totals["downloaded"] + totals["revised"] == 7
    assert_verified(cli.out)


def test_an_out_reached_through_a_link_has_the_same_state_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default state folder of an OUT on a share is named by OUT's real path: a link to
    it (or a relative path) finds the same journal."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(archive, "_statfs_type", lambda path: 0x6969)
    out = tmp_path / "share" / "out"
    out.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(out)
    monkeypatch.chdir(tmp_path / "share")
    assert state_folder(link, None)[0] == state_folder(out, None)[0]
    assert state_folder(Path("out"), None)[0] == state_folder(out, None)[0]


# -- one state folder, one output folder ---------------------------------------------------------


def test_a_state_folder_of_another_out_is_refused_by_every_command(
    cli: Cli, tmp_path: Path
) -> None:
    """A state folder that serves OUT A, given for OUT B: fetch, the dry run and status all
    stop with exit 2, naming both folders, and nothing is fetched into B."""
    state, first, second = tmp_path / "state", tmp_path / "first", tmp_path / "second"
    assert cli("fetch", *JANUARY, "--out", str(first), "--state-dir", str(state)).exit_code == 0
    asked = _downloads(cli)
    other = ["--out", str(second), "--state-dir", str(state)]

    for outcome in (
        cli("fetch", *JANUARY, *other),
        cli("fetch", *JANUARY, *other, "--dry-run", auth=False),
        cli("status", str(second), "--state-dir", str(state), auth=False),
    ):
        assert outcome.exit_code == 2
        said = _flat(outcome.stderr)
        assert str(first) in said and str(second) in said, said
    assert _downloads(cli) == asked
    assert not (second / "meter").exists()
    assert_verified(first, state_dir=state)


# -- the pointer in OUT/.omar-bulk ---------------------------------------------------------------


def test_a_fetch_without_the_state_dir_refuses_instead_of_starting_afresh(
    cli: Cli, tmp_path: Path
) -> None:
    """After runs with --state-dir S, a fetch without it (cron without OMAR_STATE_DIR), or
    with another folder that exists, stops with exit 2 and says which folder to give;
    nothing is fetched again."""
    state, elsewhere = tmp_path / "state", tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert cli("fetch", *JANUARY, "--state-dir", str(state)).exit_code == 0
    asked = _downloads(cli)

    for outcome in (
        cli("fetch", *JANUARY),
        cli("fetch", *JANUARY, "--state-dir", str(elsewhere)),
    ):
        assert outcome.exit_code == 2
        said = _flat(outcome.stderr)
        assert f"give --state-dir {os.path.realpath(state)}" in said, said
        assert "OMAR_STATE_DIR" in said
    assert _downloads(cli) == asked
    assert not (elsewhere / JOURNAL).exists()
    assert_verified(cli.out, state_dir=state)


def test_a_pointer_to_a_folder_that_is_gone_is_said_and_the_run_goes_on(
    cli: Cli, tmp_path: Path
) -> None:
    """The state folder was deleted: the run without --state-dir says so, goes on with
    OUT/.omar-bulk (nothing vouches for the files: all fetched again) and removes the
    pointer, so the next commands work there quietly."""
    state = tmp_path / "state"
    assert cli("fetch", *JANUARY, "--state-dir", str(state)).exit_code == 0
    shutil.rmtree(state)
    asked = _downloads(cli)

    outcome = cli("fetch", *JANUARY)

    assert outcome.exit_code == 0, outcome.stderr
    assert "which no longer exists" in _flat(outcome.stderr)
    assert _downloads(cli) == asked + 1
    assert not (cli.out / ".omar-bulk" / POINTER_NAME).exists()
    again = cli("fetch", *JANUARY)
    assert again.exit_code == 0 and "no longer exists" not in again.stderr
    assert cli("status", str(cli.out), auth=False).exit_code == 0
    assert_verified(cli.out)


# -- report and metrics off the state folder -----------------------------------------------------


def test_claimed_covers_the_state_folder_wherever_it_is(tmp_path: Path) -> None:
    """Any file inside the state folder in use is omar-bulk's; outside both, nothing is."""
    out, state = tmp_path / "out", tmp_path / "state"
    assert claimed(out, state / JOURNAL, state)
    assert claimed(out, state / "sub" / "x.json", state)
    assert not claimed(out, state / JOURNAL)  # without the state folder: not under OUT
    assert not claimed(out, tmp_path / "report.json", state)
    assert claimed(out, out / ".omar-bulk" / JOURNAL, state)


def test_report_and_metrics_are_checked_against_the_state_folder(tmp_path: Path) -> None:
    """Settings refuse a report in the state folder, except its own default report; the
    metrics check refuses the state folder's files too."""
    state = tmp_path / "state"
    plan = adhoc_plan(meters=["M1"], groups=[], start="2024-01-01", end="2024-01-31",
                      defaults=Defaults())  # fmt: skip
    common = {"plan": plan, "base_url": "https://127.0.0.1:1/", "out_dir": tmp_path / "out"}
    with pytest.raises(UsageError, match="state folder"):
        Settings(**common, state_dir=state, report=state / JOURNAL)  # type: ignore[arg-type]
    settings = Settings(**common, state_dir=state, report=state / "last-run.json")  # type: ignore[arg-type]
    assert settings.default_report() == state / "last-run.json"
    with pytest.raises(UsageError, match="state folder"):
        check_target(state / "lock", tmp_path / "out", None, state)


# -- readers over an older journal -----------------------------------------------------------------


def test_status_and_dry_run_over_a_0_1_0_journal_leave_it_as_it_was(cli: Cli) -> None:
    """``status`` and the dry run read a format-0 journal through a migrated copy in memory:
    the right answers, no traceback, and the file is unchanged (no migration, no backup)."""
    shutil.copytree(FIXTURE_0_1_0, cli.out)
    journal = cli.out / ".omar-bulk" / JOURNAL
    before = journal.read_bytes()

    view = cli("status", str(cli.out), "--json", auth=False)
    dry = cli(
        "fetch", "--out", str(cli.out), "--meter", "M1", "--start", "2024-02-29",
        "--end", "2024-03-02", "--chunk", "day", "--dry-run", auth=False,
    )  # fmt: skip

    assert view.exit_code == 0, view.stderr
    totals = json.loads(view.stdout)["totals"]
    assert (totals["downloaded"], totals["revised"], totals["failed"]) == (5, 2, 0)
    assert dry.exit_code == 0, dry.stderr
    due = dry.stdout.splitlines()
    assert len(due) == 1 and "startDate=03%2F02%2F2024" in due[0]  # 0.1.0 fetched the rest
    assert journal.read_bytes() == before
    assert _user_version(journal) == 0
    assert list(journal.parent.glob(f"{JOURNAL}.v*-backup")) == []
    assert_verified(cli.out)
