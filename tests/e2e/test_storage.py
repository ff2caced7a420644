"""The output folder against whoever else can write into it: links planted inside OUT are
never followed, so nothing outside OUT is written, truncated, linked or chmodded."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from pathlib import Path

import pytest

from omar_bulk.errors import UnsafePathError
from omar_bulk.standin.server import Faults
from omar_bulk.storage import Storage

from ..conftest import Cli, data_files, expected_body, journal_rows

TWO_METERS = ["--meter", "M1", "--meter", "M2", "--start", "2024-01-01", "--end", "2024-02-29"]
M1_JAN = "meter/M1/M1_20240101_20240131_PST.mdef"
SECRET = b"root's precious file\n"


def victim(tmp_path: Path, mode: int = 0o644) -> Path:
    """A file outside OUT that a planted link points at."""
    target = tmp_path / "elsewhere" / "precious"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(SECRET)
    target.chmod(mode)
    return target


def untouched(target: Path, mode: int = 0o644) -> bool:
    info = target.stat()
    return (
        target.read_bytes() == SECRET
        and stat.S_IMODE(info.st_mode) == mode
        and (info.st_nlink == 1)
    )


def storage_in(tmp_path: Path) -> Storage:
    storage = Storage(tmp_path / "out")
    storage.prepare()
    return storage


# --- unit: every way into the disk ----------------------------------------------------------


def test_a_part_name_planted_as_a_link_is_refused_not_truncated(tmp_path: Path) -> None:
    """write_whole and open_part never open a ``.part`` link; a stale regular ``.part`` is
    simply replaced."""
    storage = storage_in(tmp_path)
    target = victim(tmp_path)
    storage.make_dirs(storage.final(M1_JAN).parent)
    storage.part(M1_JAN).symlink_to(target)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        storage.write_whole(M1_JAN, b"data")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        asyncio.run(storage.open_part(M1_JAN))
    assert untouched(target) and storage.part(M1_JAN).is_symlink()
    assert not storage.final(M1_JAN).exists()

    stale = "meter/M1/M1_20240201_20240229_PST.mdef"
    storage.part(stale).write_bytes(b"left by a killed run")
    storage.write_whole(stale, b"fresh")
    assert storage.final(stale).read_bytes() == b"fresh" and not storage.part(stale).exists()


def test_an_id_folder_planted_as_a_link_receives_nothing(tmp_path: Path) -> None:
    """A link where the id folder (or the kind folder) belongs fails the item; nothing lands
    in the folder it points at."""
    storage = storage_in(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (storage.root / "meter").mkdir(mode=0o700)
    (storage.root / "meter" / "M1").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="meter/M1 is a symbolic link"):
        storage.write_whole(M1_JAN, b"data")
    with pytest.raises(UnsafePathError):
        asyncio.run(storage.open_part(M1_JAN))
    (storage.root / "group").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="group is a symbolic link"):
        storage.write_whole("group/G1/G1_20240101_20240131_PST.mdef", b"data")
    assert list(outside.iterdir()) == []


def test_a_data_file_swapped_for_a_link_is_not_archived_through_it(tmp_path: Path) -> None:
    """keep and retire refuse a link at the data file's name: its target is not hard-linked,
    copied or chmodded into history, and the link stays where it is."""
    storage = storage_in(tmp_path)
    target = victim(tmp_path)
    storage.write_whole(M1_JAN, b"version one")
    storage.final(M1_JAN).unlink()
    storage.final(M1_JAN).symlink_to(target)
    archive = storage.history_path(M1_JAN, 1_700_000_000.0)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        storage.write_whole(M1_JAN, b"version two", archive)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        storage.retire(M1_JAN, archive)
    assert untouched(target)
    assert storage.final(M1_JAN).is_symlink() and not os.path.lexists(archive)
    assert not storage.part(M1_JAN).exists()


def test_history_and_errors_folders_planted_as_links_receive_nothing(tmp_path: Path) -> None:
    """``.omar-bulk/history`` and ``.omar-bulk/errors`` as links: the archive and the error
    page fail the item instead of landing elsewhere."""
    storage = storage_in(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    storage.history.symlink_to(outside, target_is_directory=True)
    storage.errors.symlink_to(outside, target_is_directory=True)
    storage.write_whole(M1_JAN, b"version one")
    with pytest.raises(UnsafePathError, match="history is a symbolic link"):
        storage.write_whole(M1_JAN, b"two", storage.history_path(M1_JAN, 1_700_000_000.0))
    with pytest.raises(UnsafePathError, match="errors is a symbolic link"):
        storage.save_error_page(M1_JAN, b"<html><title>oops</title></html>")
    assert list(outside.rglob("*")) == []
    assert storage.final(M1_JAN).read_bytes() == b"version one"


def test_the_sweep_removes_part_links_but_never_their_targets_or_linked_folders(
    tmp_path: Path,
) -> None:
    """A stale ``.part`` that is a link is removed (the link, not its target); a folder that
    is a link is not entered, so ``.part`` files elsewhere survive."""
    storage = storage_in(tmp_path)
    target = victim(tmp_path)
    storage.make_dirs(storage.final(M1_JAN).parent)
    storage.part(M1_JAN).symlink_to(target)
    storage.sweep_parts("meter/M1")
    assert not os.path.lexists(storage.part(M1_JAN)) and untouched(target)

    outside = tmp_path / "other"
    outside.mkdir()
    (outside / "someone.part").write_bytes(b"not ours")
    (storage.root / "meter" / "M2").symlink_to(outside, target_is_directory=True)
    storage.sweep_parts("meter/M2")
    assert (outside / "someone.part").read_bytes() == b"not ours"


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
