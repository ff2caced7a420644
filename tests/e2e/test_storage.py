"""The output folder against whoever else can write into it: links planted inside OUT are
never followed, so nothing outside OUT is written, truncated, linked or chmodded."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from omar_bulk.standin.server import Faults

from ..conftest import Cli, data_files, expected_body, journal_rows, untouched, victim

TWO_METERS = ["--meter", "M1", "--meter", "M2", "--start", "2024-01-01", "--end", "2024-02-29"]
M1_JAN = "meter/M1/M1_20240101_20240131_PST.mdef"


# --- unit: every way into the disk ----------------------------------------------------------


# --- end to end: the run goes on, the link and its target are left alone --------------------


def test_a_planted_part_link_fails_one_item_and_the_run_goes_on(cli: Cli, tmp_path: Path) -> None:
    target = victim(tmp_path)
    folder = cli.out / "meter" / "M1"
    folder.mkdir(parents=True)
    (folder / (Path(M1_JAN).name + ".part")).symlink_to(target)
    outcome = cli("fetch", *TWO_METERS)
    assert outcome.exit_code == 1, outcome.stderr
    assert "symbolic link" in outcome.stderr and "Traceback" not in outcome.stderr
    assert "3 downloaded" in outcome.stderr and "1 failed" in outcome.stderr
    assert untouched(target)
    # the words match what happens: the link is gone after the run, and the rerun fetches
    assert "the run removes it at its end" in outcome.stderr and "left" not in outcome.stderr
    assert not (folder / (Path(M1_JAN).name + ".part")).is_symlink()
    again = cli("fetch", *TWO_METERS)
    assert again.exit_code == 0 and "1 downloaded" in again.stderr, again.stderr
    assert untouched(target)


def test_a_linked_id_folder_gets_no_data_files(cli: Cli, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (cli.out / "meter").mkdir(parents=True)
    (cli.out / "meter" / "M1").symlink_to(outside, target_is_directory=True)
    outcome = cli("fetch", *TWO_METERS)
    assert outcome.exit_code == 1 and "2 failed" in outcome.stderr
    assert "meter/M1 is a symbolic link" in outcome.stderr
    assert list(outside.iterdir()) == []
    assert sorted(p.name[:2] for p in data_files(cli.out)) == ["M2", "M2"]


def test_a_data_file_swapped_for_a_link_is_replaced_not_followed_on_revisit(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    """The link points at an exact copy, so the file still verifies through it: the revisit
    must still neither hard-link nor chmod the copy, and puts a real file in the link's place."""
    assert cli("fetch", *TWO_METERS, "--today", "2024-02-29").exit_code == 0
    final = cli.out / M1_JAN
    target = victim(tmp_path)
    target.write_bytes(final.read_bytes())
    copy = target.read_bytes()
    final.unlink()
    final.symlink_to(target)
    faults.revision = 1
    outcome = cli("fetch", *TWO_METERS, "--today", "2024-02-29", "--revisit-days", "60")
    assert outcome.exit_code == 0, outcome.stderr
    assert "symbolic link" in outcome.stderr
    info = target.stat()
    assert target.read_bytes() == copy and stat.S_IMODE(info.st_mode) == 0o644
    assert info.st_nlink == 1
    assert not final.is_symlink()
    from datetime import date

    fresh = expected_body("meter", "M1", date(2024, 1, 1), date(2024, 1, 31), faults=faults)
    assert final.read_bytes() == fresh
    assert journal_rows(cli.out)[M1_JAN][2] == hashlib.sha256(fresh).hexdigest()


@pytest.mark.parametrize("planted", ["link", "shared"])
def test_a_state_folder_others_control_stops_the_run_with_exit_4(
    cli: Cli, tmp_path: Path, planted: str
) -> None:
    """``OUT/.omar-bulk`` as a link, or writable by others: exit 4 before anything is sent,
    and nothing is written where the link points."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    cli.out.mkdir()
    state = cli.out / ".omar-bulk"
    if planted == "link":
        state.symlink_to(outside, target_is_directory=True)
    else:
        state.mkdir()
        state.chmod(0o777)
    outcome = cli("fetch", *TWO_METERS)
    assert outcome.exit_code == 4, outcome.stderr
    assert ".omar-bulk" in outcome.stderr and "Traceback" not in outcome.stderr
    assert list(outside.iterdir()) == []
    assert cli.server is not None and cli.server.state.downloads() == []


# --- the report ----------------------------------------------------------------------------


def test_report_folders_are_private_under_a_permissive_umask(cli: Cli, tmp_path: Path) -> None:
    """``--report`` into folders that do not exist yet, with umask 000: each made 0700."""
    report = tmp_path / "reports" / "daily" / "r.json"
    previous = os.umask(0)
    try:
        outcome = cli("fetch", *TWO_METERS, "--report", str(report))
    finally:
        os.umask(previous)
    assert outcome.exit_code == 0, outcome.stderr
    for folder in (report.parent, report.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE(report.stat().st_mode) == 0o600


def test_the_reports_temporary_file_is_never_a_planted_link(cli: Cli, tmp_path: Path) -> None:
    """The old fixed temporary name, planted as a link beside the report, is left alone and its
    target is not overwritten; no temporary file is left behind."""
    target = victim(tmp_path)
    report = tmp_path / "reports" / "r.json"
    report.parent.mkdir()
    planted = report.parent / ".r.json.tmp"
    planted.symlink_to(target)
    outcome = cli("fetch", *TWO_METERS, "--report", str(report))
    assert outcome.exit_code == 0, outcome.stderr
    assert untouched(target) and planted.is_symlink()
    assert sorted(p.name for p in report.parent.iterdir()) == [".r.json.tmp", "r.json"]
    assert '"items"' in report.read_text()


@pytest.mark.parametrize("mode", [0o770, 0o730, 0o707, 0o703])
def test_a_state_folder_writable_by_its_group_or_by_all_stops_the_run(cli: Cli, mode: int) -> None:
    """Writable by the group alone is as unsafe as writable by all: exit 4, nothing sent.
    (Readable by others is only private data shown, not a way to plant links: 0755 runs.)"""
    cli.out.mkdir()
    state = cli.out / ".omar-bulk"
    state.mkdir()
    state.chmod(mode)
    outcome = cli("fetch", *TWO_METERS)
    assert outcome.exit_code == 4, outcome.stderr
    assert "can be written by other users" in outcome.stderr
    assert cli.server is not None and cli.server.state.downloads() == []


def test_a_state_folder_others_may_only_read_is_used(cli: Cli) -> None:
    cli.out.mkdir()
    state = cli.out / ".omar-bulk"
    state.mkdir()
    state.chmod(0o755)
    outcome = cli("fetch", *TWO_METERS)
    assert outcome.exit_code == 0, outcome.stderr


M1_Q1 = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-03-31"]


@pytest.mark.parametrize(
    "target", [".omar-bulk/journal.sqlite3", "meter/M1/M1_20240101_20240131_PST.mdef"]
)
def test_the_report_never_overwrites_a_file_omar_bulk_owns(cli: Cli, target: str) -> None:
    """``--report`` naming the journal or a data file replaced it with the JSON report: the
    journal was then set aside as damaged, and a data file held JSON while ``status`` said
    complete. Files under OUT that omar-bulk owns are not a place for the report."""
    assert cli("fetch", *M1_Q1).exit_code == 0
    victim = cli.out / target
    before = victim.read_bytes()
    cli("fetch", *M1_Q1, "--report", str(victim))
    assert victim.read_bytes() == before
