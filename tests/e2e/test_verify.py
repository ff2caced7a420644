"""``omar-bulk verify``: each promise of an archive that can break is named, with its path and
its fix; a whole archive passes; bad input is exit 2; nothing is written."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from omar_bulk.archive import SERVES_NAME
from omar_bulk.verify import verify

from ..conftest import Cli, assert_verified

TWO_MONTHS = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-02-29"]
JANUARY_FILE = "meter/M1/M1_20240101_20240131_PST.mdef"
FEBRUARY_FILE = "meter/M1/M1_20240201_20240229_PST.mdef"


@pytest.fixture
def fetched(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two months fetched into ``out`` (the working folder is ``tmp_path``)."""
    monkeypatch.chdir(tmp_path)
    cli.out = Path("out")
    assert cli("fetch", *TWO_MONTHS).exit_code == 0
    return Path("out")


def _problems(cli: Cli, *argv: str) -> tuple[int, list[dict[str, str]]]:
    outcome = cli("verify", *argv, "--json")
    return outcome.exit_code, json.loads(outcome.stdout)["problems"] if outcome.stdout else []


def _everything(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file's size and time, but SQLite's own index beside a journal it read."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file() and not p.name.endswith(("-shm", "-wal"))
    }


def test_a_whole_archive_verifies_and_nothing_is_written(cli: Cli, fetched: Path) -> None:
    """Exit 0, every file and byte counted, the same files (sizes, times) before and after."""
    before = _everything(fetched)
    outcome = cli("verify", "out")
    assert outcome.exit_code == 0, outcome.stdout + outcome.stderr
    assert "2 data files and 0 history files" in outcome.stdout and "all hold" in outcome.stdout
    found = json.loads(cli("verify", "out", "--json").stdout)
    size = sum((fetched / key).stat().st_size for key in (JANUARY_FILE, FEBRUARY_FILE))
    assert found["checked"] == {"files": 2, "history": 0, "bytes": size}
    assert _everything(fetched) == before


@pytest.mark.parametrize("damage", ["missing", "same size", "longer"])
def test_a_missing_or_changed_file_is_named_and_a_rerun_fixes_it(
    cli: Cli, fetched: Path, damage: str
) -> None:
    """A data file removed, or its bytes changed (even keeping size and time: every byte is
    hashed): exit 1 naming the file and what is wrong, suggesting the rerun; the rerun of the
    same fetch repairs it and verify passes again."""
    target = fetched / JANUARY_FILE
    if damage == "missing":
        target.unlink()
    else:
        info = target.stat()
        data = bytearray(target.read_bytes())
        if damage == "same size":
            data[100] ^= 0xFF
        else:
            data += b"\n"
        target.write_bytes(bytes(data))
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))

    code, problems = _problems(cli, "out")

    assert code == 1
    assert [p["path"] for p in problems] == [JANUARY_FILE]
    what = problems[0]["problem"]
    expected = {"missing": "missing", "same size": "SHA-256", "longer": "bytes, the journal"}
    assert expected[damage] in what
    assert "run the same fetch again" in problems[0]["fix"]
    if damage != "same size":  # the size check of a rerun catches these; a same-size edit
        assert cli("fetch", *TWO_MONTHS, "--out", "out").exit_code == 0  # keeps its time
        assert_verified(fetched)


def test_a_file_no_row_stands_for_is_named(cli: Cli, fetched: Path) -> None:
    """A data file the journal does not list (put there by hand, or left by a run killed
    between rename and commit): exit 1, named, with what to do."""
    stray = fetched / "meter" / "M1" / "M1_20240301_20240331_PST.mdef"
    stray.write_bytes(b"not fetched by omar-bulk")
    (fetched / "meter" / "M1" / "left.mdef.part").write_bytes(b"a run was killed")
    code, problems = _problems(cli, "out")
    assert code == 1
    assert [p["path"] for p in problems] == ["meter/M1/M1_20240301_20240331_PST.mdef"]
    assert "no journal row stands for this file" in problems[0]["problem"]
    assert "move it out of OUT" in problems[0]["fix"]


def test_history_files_and_versions_must_agree(cli: Cli, fetched: Path) -> None:
    """A revised file's old version in history is listed in ``versions``: verify passes.
    That history file removed or changed is named; a history file versions does not list
    is named too."""
    db = sqlite3.connect(fetched / ".omar-bulk" / "journal.sqlite3")
    try:
        sha, size = db.execute("SELECT sha256, bytes FROM items WHERE path=?", (JANUARY_FILE,)
                               ).fetchone()  # fmt: skip
        kept = f".omar-bulk/history/{JANUARY_FILE}.20240201T000000Z"
        (fetched / kept).parent.mkdir(parents=True)
        (fetched / kept).write_bytes((fetched / JANUARY_FILE).read_bytes())
        with db:
            db.execute(
                "INSERT INTO versions (path, fetched_at, sha256, bytes, archived_as)"
                " VALUES (?, 1, ?, ?, ?)",
                (JANUARY_FILE, sha, size, kept),
            )
    finally:
        db.close()
    assert_verified(fetched)

    orphan = fetched / ".omar-bulk" / "history" / "meter" / "M1" / "orphan.mdef.20240101T0Z"
    orphan.write_bytes(b"x")
    (fetched / kept).write_bytes(b"y" * size)
    code, problems = _problems(cli, "out")
    assert code == 1
    named = {p["path"]: p["problem"] for p in problems}
    assert "SHA-256" in named[kept]
    assert "no row of the journal's versions lists" in named[str(orphan.relative_to(fetched))]

    (fetched / kept).unlink()
    code, problems = _problems(cli, "out")
    assert any(p["path"] == kept and "missing" in p["problem"] for p in problems)


def test_a_link_among_the_data_files_is_named(cli: Cli, fetched: Path, tmp_path: Path) -> None:
    """A data file replaced by a link (to a copy of itself): named, never followed."""
    target = fetched / FEBRUARY_FILE
    copy = tmp_path / "copy"
    copy.write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(copy)
    code, problems = _problems(cli, "out")
    assert code == 1
    assert [p["path"] for p in problems] == [FEBRUARY_FILE]
    assert "symbolic link" in problems[0]["problem"]


def test_the_state_folders_marks_must_name_each_other(cli: Cli, fetched: Path) -> None:
    """An archive kept with --state-dir verifies with it; a mark removed is named (exit 1)
    with the run that writes it again."""
    assert cli("fetch", *TWO_MONTHS, "--out", "out", "--state-dir", "state").exit_code == 0
    assert_verified(fetched, state_dir=Path("state"))
    Path("state", SERVES_NAME).unlink()
    code, problems = _problems(cli, "out", "--state-dir", "state")
    assert code == 1
    assert [p["path"] for p in problems] == [f"state/{SERVES_NAME}"]
    assert "--state-dir state writes it" in problems[0]["fix"]


def test_bad_input_is_exit_2(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No such folder, or a folder without a journal: exit 2 and a message, no traceback."""
    monkeypatch.chdir(tmp_path)
    Path("empty").mkdir()
    for argv in (["verify", "nowhere"], ["verify", "empty"], ["verify", "empty", "--json"]):
        outcome = cli(*argv)
        assert outcome.exit_code == 2
        assert outcome.stderr.startswith("omar-bulk: error: "), outcome.stderr


def test_progress_hears_of_every_byte(fetched: Path) -> None:
    """The core reports bytes hashed out of the total (the CLI draws them on a terminal only),
    ending at the total."""
    heard: list[tuple[int, int]] = []
    verdict = verify(fetched, progress=lambda done, total: heard.append((done, total)))
    assert verdict.exit_code == 0
    assert heard[0] == (0, verdict.bytes) and heard[-1] == (verdict.bytes, verdict.bytes)
    assert [done for done, _ in heard] == sorted(done for done, _ in heard)


# -- what is in place of a file or folder -----------------------------------------------------


@pytest.mark.parametrize("replacement", ["folder", "fifo"])
def test_verify_names_a_data_file_replaced_by_a_folder_or_a_fifo(
    cli: Cli, fetched: Path, replacement: str
) -> None:
    """A folder or a FIFO where the journal records a data file is that file's one problem."""
    target = fetched / FEBRUARY_FILE
    target.unlink()
    if replacement == "folder":
        target.mkdir()
    else:
        os.mkfifo(target)
    code, problems = _problems(cli, "out")
    assert code == 1
    assert [p["path"] for p in problems] == [FEBRUARY_FILE], problems
    assert ("a folder" if replacement == "folder" else "a FIFO") in problems[0]["problem"]


@pytest.mark.parametrize("folder", ["meter", ".omar-bulk/history"])
def test_verify_names_a_data_or_history_folder_that_is_a_link(
    cli: Cli, fetched: Path, tmp_path: Path, folder: str
) -> None:
    """``OUT/meter`` or the history folder as a link elsewhere is named, not walked through."""
    elsewhere = tmp_path / "elsewhere"
    (fetched / folder).mkdir(exist_ok=True)
    (fetched / folder).rename(elsewhere)
    (fetched / folder).symlink_to(elsewhere)
    code, problems = _problems(cli, "out")
    assert code == 1
    assert [p["path"] for p in problems] == [folder], problems
    assert "symbolic link" in problems[0]["problem"]


def test_an_archive_rebuilt_after_damage_verifies(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebuild relists the history files of the chunks it kept: verify then holds."""
    monkeypatch.chdir(tmp_path)
    cli.out = Path("out")
    growing = ["--meter", "M1", "--start", "2024-03-01", "--end", "yesterday"]
    assert cli("fetch", *growing, "--today", "2024-03-10").exit_code == 0
    assert cli("fetch", *growing, "--today", "2024-03-16").exit_code == 0
    kept = list(Path("out/.omar-bulk/history").rglob("*.mdef.*"))
    assert len(kept) == 1  # the shorter file the longer one retired
    journal = Path("out/.omar-bulk/journal.sqlite3")
    with journal.open("r+b") as handle:
        handle.write(b"not a database, damaged")
    rerun = cli("fetch", *growing, "--today", "2024-03-16")
    assert rerun.exit_code == 0, rerun.stderr
    assert "rebuilt" in rerun.stderr
    outcome = cli("verify", "out", "--json")
    assert outcome.exit_code == 0, outcome.stdout
    assert json.loads(outcome.stdout)["checked"]["history"] == 1


def test_a_history_file_no_kept_chunk_owns_stays_named_after_a_rebuild(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A history file the rebuild cannot attribute stays a problem, with advice that fits."""
    monkeypatch.chdir(tmp_path)
    cli.out = Path("out")
    assert cli("fetch", *TWO_MONTHS).exit_code == 0
    stray = Path("out/.omar-bulk/history/meter/M9/M9_20240101_20240110_PST.mdef.20240111T000000Z")
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"nobody's\n")
    with Path("out/.omar-bulk/journal.sqlite3").open("r+b") as handle:
        handle.write(b"not a database, damaged")
    assert cli("fetch", *TWO_MONTHS).exit_code == 0
    code, problems = _problems(cli, "out")
    assert code == 1
    assert [p["path"] for p in problems] == [stray.relative_to("out").as_posix()]
    assert "move it out of OUT" in problems[0]["fix"]


# -- a run in progress ----------------------------------------------------------------------


def test_verify_refuses_while_a_run_holds_the_lock(cli: Cli, fetched: Path) -> None:
    """A run holding OUT's lock: verify is exit 2 saying so, rather than naming its moves."""
    import fcntl

    with (fetched / ".omar-bulk" / "lock").open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        outcome = cli("verify", "out")
    assert outcome.exit_code == 2
    assert "is in progress" in outcome.stderr
    assert cli("verify", "out").exit_code == 0  # once the run has ended


def test_a_run_started_while_verify_reads_is_refused(cli: Cli, fetched: Path) -> None:
    """verify holds the lock shared: a fetch of the same OUT meanwhile is refused (exit 2)."""
    from omar_bulk.archive import Archive

    with Archive.locate(fetched, None).idle():
        outcome = cli("fetch", *TWO_MONTHS, "--overwrite")
    assert outcome.exit_code == 2
    assert "another omar-bulk run" in outcome.stderr


def test_one_problem_is_counted_as_one(cli: Cli, fetched: Path) -> None:
    """The last line says "1 problem", not "1 problems"."""
    (fetched / FEBRUARY_FILE).unlink()
    outcome = cli("verify", "out")
    assert outcome.exit_code == 1
    assert "verify: 1 problem in" in outcome.stdout


def test_an_interrupted_verify_says_so_and_exits_130(
    cli: Cli, fetched: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while hashing: exit 130 with a line saying nothing was changed."""
    import omar_bulk.verify as verify_module

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(verify_module, "_hash_all", interrupted)
    outcome = cli("verify", "out")
    assert outcome.exit_code == 130
    assert "verify interrupted" in outcome.stderr


def test_a_state_folder_others_can_write_is_a_problem(cli: Cli, fetched: Path) -> None:
    """A 0777 ``OUT/.omar-bulk``: the journal verify trusts could be anyone's; named, exit 1."""
    (fetched / ".omar-bulk").chmod(0o777)
    code, problems = _problems(cli, "out")
    assert code == 1
    assert [p["path"] for p in problems] == ["out/.omar-bulk"]
    assert "writable by other users" in problems[0]["problem"]
