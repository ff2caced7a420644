"""The archive (OUT and its state folder) tried as a careless or hostile user would: every
state folder is checked however it was named, a state folder serves one OUT, one lock guards
every run of an OUT, a refused run writes nothing, a journal left behind is never silently
trusted, marks are printed escaped, and a read-only archive can be read. Paths are relative,
as a user types them."""

from __future__ import annotations

import os
import pwd
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from omar_bulk import archive
from omar_bulk.archive import LOCK_NAME, POINTER_NAME, SERVES_NAME, state_folder

from ..conftest import Cli, assert_verified, need_mount_namespace

JANUARY = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-01-31"]
TWO_MONTHS = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-02-29"]
JOURNAL = "journal.sqlite3"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _downloads(cli: Cli) -> int:
    assert cli.server is not None
    return len(cli.server.state.downloads())


def _nobody() -> int:
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("needs a user named nobody")


def _as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a folder to another user needs root")


def _everything(folder: Path) -> list[str]:
    """Every name under ``folder``, but SQLite's own ``-shm``/``-wal`` beside a journal read."""
    if not folder.exists():
        return []
    names = (str(p.relative_to(folder)) for p in folder.rglob("*"))
    return sorted(n for n in names if not n.endswith(("-shm", "-wal")))


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Commands run in ``tmp_path`` with relative paths; the CLI's OUT is ``out``."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def rel(cli: Cli, here: Path) -> Cli:
    cli.out = Path("out")
    return cli


# -- every state folder is checked -------------------------------------------------------------


@pytest.mark.parametrize("how", ["option", "environment", "share default"])
@pytest.mark.parametrize("fault", ["another user's", "writable by all", "a link"])
def test_a_state_folder_that_is_not_safely_ours_is_refused_and_nothing_written(
    rel: Cli, here: Path, monkeypatch: pytest.MonkeyPatch, how: str, fault: str
) -> None:
    """A state folder owned by another user, writable by every user, or a link: refused
    (exit 4, naming the folder) whether it came from --state-dir, OMAR_STATE_DIR or the
    default for an OUT on a share; nothing is fetched and nothing written in it or in OUT."""
    monkeypatch.setenv("XDG_STATE_HOME", str(here / "xdg"))
    if how == "share default":
        monkeypatch.setattr(archive, "network_filesystem", lambda path: "NFS")
        state = state_folder(Path("out"), None)[0]
        extra: list[str] = []
        env: dict[str, str] = {}
    else:
        state = Path("state")
        extra = ["--state-dir", "state"] if how == "option" else []
        env = {"OMAR_STATE_DIR": "state"} if how == "environment" else {}
    if fault == "a link":
        (here / "real-state").mkdir(mode=0o700)
        state.parent.mkdir(parents=True, exist_ok=True)
        state.symlink_to(here / "real-state")
    else:
        state.mkdir(parents=True, mode=0o700)
        if fault == "another user's":
            _as_root()
            os.chown(state, _nobody(), -1)
        else:
            os.chmod(state, 0o777)

    outcome = rel("fetch", *JANUARY, *extra, env=env)

    assert outcome.exit_code == 4, outcome.stderr
    said = _flat(outcome.stderr)
    assert str(state) in said
    assert _downloads(rel) == 0
    assert not Path("out").exists()
    assert _everything(here / "real-state" if fault == "a link" else state) == []


# -- the sweep stays inside OUT ----------------------------------------------------------------


def test_a_folders_row_outside_out_is_never_swept(rel: Cli, here: Path) -> None:
    """A ``folders`` row ``../victim`` (as whoever could write an unchecked state folder would
    plant) makes the next run sweep nothing outside OUT: ``victim/important.part`` stays."""
    assert rel("fetch", *JANUARY, "--state-dir", "state").exit_code == 0
    victim = here / "victim"
    victim.mkdir()
    (victim / "important.part").write_bytes(b"precious")
    (here / "out" / "meter" / "M1" / "stale.part").write_bytes(b"left by a killed run")
    db = sqlite3.connect(here / "state" / JOURNAL)
    try:
        with db:
            db.execute("INSERT INTO runs (id, started) VALUES (999, 0)")
            for row in ("../victim", "meter/../../victim", "/tmp", "meter/M1"):
                db.execute("INSERT INTO folders (run_id, path) VALUES (999, ?)", (row,))
    finally:
        db.close()

    outcome = rel("fetch", *JANUARY, "--state-dir", "state")

    assert outcome.exit_code == 0, outcome.stderr
    assert (victim / "important.part").read_bytes() == b"precious"
    assert not (here / "out" / "meter" / "M1" / "stale.part").exists()  # OUT's own: swept
    assert_verified(Path("out"), state_dir=Path("state"))


# -- one state folder, one OUT -------------------------------------------------------------------


def test_another_outs_own_state_folder_is_refused(rel: Cli, here: Path) -> None:
    """--state-dir out1/.omar-bulk for out2: exit 2 for fetch, the dry run and status,
    naming both folders; nothing is fetched into out2 nor mixed into out1's journal."""
    assert rel("fetch", *JANUARY, "--out", "out1").exit_code == 0
    asked = _downloads(rel)
    before = (here / "out1" / ".omar-bulk" / JOURNAL).read_bytes()
    other = ["--out", "out2", "--state-dir", "out1/.omar-bulk"]

    for outcome in (
        rel("fetch", *TWO_MONTHS, *other),
        rel("fetch", *TWO_MONTHS, *other, "--dry-run", auth=False),
        rel("status", "out2", "--state-dir", "out1/.omar-bulk", auth=False),
    ):
        assert outcome.exit_code == 2, outcome.stderr
        said = _flat(outcome.stderr)
        assert "out1" in said and "out2" in said, said
    assert _downloads(rel) == asked
    assert not (here / "out2" / "meter").exists()
    assert (here / "out1" / ".omar-bulk" / JOURNAL).read_bytes() == before


def test_a_state_dir_that_is_a_file_is_bad_input_and_creates_nothing(rel: Cli, here: Path) -> None:
    """--state-dir naming a regular file: exit 2 before OUT is created."""
    Path("notes.txt").write_text("mine\n")
    outcome = rel("fetch", *JANUARY, "--state-dir", "notes.txt")
    assert outcome.exit_code == 2, outcome.stderr
    assert "notes.txt" in outcome.stderr and "not a folder" in _flat(outcome.stderr)
    assert not Path("out").exists()
    assert Path("notes.txt").read_text() == "mine\n"


def test_mark_text_is_escaped_before_it_is_printed(rel: Cli, here: Path) -> None:
    """A mark holding terminal escape sequences is shown escaped: no ESC reaches stderr."""
    Path("state").mkdir(mode=0o700)
    Path("state", SERVES_NAME).write_bytes(b"/elsewhere/\x1b]0;owned\x07\x1b[31mred\n")
    outcome = rel("fetch", *JANUARY, "--state-dir", "state")
    assert outcome.exit_code == 2, outcome.stderr
    assert "\x1b" not in outcome.stderr and "\x07" not in outcome.stderr
    assert "\\x1b[31mred" in outcome.stderr


# -- one lock for every run of an OUT ----------------------------------------------------------


def test_a_state_dir_run_is_locked_out_while_a_default_run_holds_out(rel: Cli, here: Path) -> None:
    """While a default run of OUT holds its lock (OUT/.omar-bulk/lock), a first --state-dir
    run of the same OUT stops with exit 2 and fetches nothing; so does a run naming yet
    another state folder once the first one is taken."""
    import fcntl

    assert rel("fetch", *JANUARY).exit_code == 0
    asked = _downloads(rel)
    with open(here / "out" / ".omar-bulk" / LOCK_NAME, "r+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        outcome = rel("fetch", *TWO_MONTHS, "--state-dir", "state")
    assert outcome.exit_code == 2, outcome.stderr
    assert "another omar-bulk run is using out" in _flat(outcome.stderr)
    assert _downloads(rel) == asked
    assert not (here / "state" / JOURNAL).exists()


# -- a refused run writes nothing ----------------------------------------------------------------


def test_a_journal_of_a_newer_format_stops_a_first_state_dir_run_before_any_write(
    rel: Cli, here: Path
) -> None:
    """OUT's journal is from a newer release; a first --state-dir run is refused (exit 2)
    and has copied nothing, written no mark and no pointer, created no state folder."""
    assert rel("fetch", *JANUARY).exit_code == 0
    inside = here / "out" / ".omar-bulk"
    db = sqlite3.connect(inside / JOURNAL)
    try:
        db.execute("PRAGMA user_version = 99")
    finally:
        db.close()
    before = _everything(inside)

    outcome = rel("fetch", *JANUARY, "--state-dir", "state")

    assert outcome.exit_code == 2, outcome.stderr
    assert "newer omar-bulk" in _flat(outcome.stderr)
    assert not Path("state").exists()
    assert _everything(inside) == before
    assert not (inside / POINTER_NAME).exists()


# -- damage and staleness --------------------------------------------------------------------------


def test_a_damaged_journal_in_out_and_a_first_state_dir_is_set_aside_and_rebuilt(
    rel: Cli, here: Path
) -> None:
    """A damaged OUT/.omar-bulk journal and a first --state-dir: the dry run says a run will
    set it aside and rebuild it, and the run does just that in the state folder (exit 0,
    the files the report vouches for kept), as a run without --state-dir would; OUT's damaged
    journal is left as it was."""
    assert rel("fetch", *TWO_MONTHS).exit_code == 0
    asked = _downloads(rel)
    damaged = here / "out" / ".omar-bulk" / JOURNAL
    damaged.write_bytes(b"this is not a database" * 100)

    dry = rel("fetch", *TWO_MONTHS, "--out", "out", "--state-dir", "state", "--dry-run", auth=False)
    outcome = rel("fetch", *TWO_MONTHS, "--state-dir", "state")
    again = rel("fetch", *TWO_MONTHS, "--state-dir", "state")

    assert dry.exit_code == 0, dry.stderr
    assert dry.stdout == ""  # both months vouched for by the report and their hashes
    assert "a run will set it aside and rebuild it" in _flat(dry.stderr)
    assert outcome.exit_code == 0, outcome.stderr
    said = _flat(outcome.stderr)
    assert "the journal was damaged" in said and "a new one rebuilt" in said, said
    assert _downloads(rel) == asked
    assert list((here / "state").glob(f"{JOURNAL}.damaged-*"))
    assert damaged.read_bytes() == b"this is not a database" * 100
    assert again.exit_code == 0 and "damaged" not in again.stderr
    assert_verified(Path("out"), state_dir=Path("state"))


def test_a_journal_left_in_out_is_not_trusted_after_its_state_folder_is_gone(
    rel: Cli, here: Path
) -> None:
    """Runs moved the journal to a state folder that was later removed: OUT/.omar-bulk still
    holds the journal they stopped using. Fetch, the dry run and status refuse it (exit 2),
    saying it is out of date and what to do; once it is moved aside, as told, the run
    rebuilds from the files and the archive verifies."""
    assert rel("fetch", *JANUARY).exit_code == 0
    assert rel("fetch", *TWO_MONTHS, "--state-dir", "state").exit_code == 0
    import shutil

    shutil.rmtree("state")
    asked = _downloads(rel)

    for outcome in (
        rel("fetch", *TWO_MONTHS),
        rel("fetch", *TWO_MONTHS, "--out", "out", "--dry-run", auth=False),
        rel("status", "out", auth=False),
        rel("fetch", *TWO_MONTHS, "--state-dir", "new-state"),
    ):
        assert outcome.exit_code == 2, outcome.stderr
        said = _flat(outcome.stderr)
        assert "is out of date" in said and "move out/.omar-bulk/journal.sqlite3 aside" in said
    assert _downloads(rel) == asked
    assert not Path("new-state", JOURNAL).exists()

    Path("out/.omar-bulk/journal.sqlite3").rename("old-journal.sqlite3")
    outcome = rel("fetch", *TWO_MONTHS)
    assert outcome.exit_code == 0, outcome.stderr
    assert not Path("out/.omar-bulk", POINTER_NAME).exists()
    assert_verified(Path("out"))


# -- a read-only archive -------------------------------------------------------------------------


def test_a_read_only_archive_can_be_read(rel: Cli, here: Path) -> None:
    """A snapshot mounted read-only, its journal in WAL mode with a ``-wal`` and no ``-shm``:
    status reads it (exit 0), the dry run asks for nothing and warns of no rebuild, verify
    passes, and nothing is written."""
    prefix = need_mount_namespace()
    assert rel("fetch", *TWO_MONTHS).exit_code == 0
    journal = here / "out" / ".omar-bulk" / JOURNAL
    # Leave a -wal beside the journal, as a snapshot taken mid-run would: a commit that was
    # never checkpointed, and no -shm.
    db = sqlite3.connect(journal, isolation_level=None)
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("UPDATE items SET checked_at = 1 WHERE 0")
    db.execute("INSERT INTO runs (started, finished) VALUES (1, 2)")
    os.link(f"{journal}-wal", here / "kept-wal")
    db.close()
    os.link(here / "kept-wal", f"{journal}-wal")
    Path(f"{journal}-shm").unlink(missing_ok=True)
    script = (
        "set -e; mount --bind out out; mount -o remount,bind,ro out;"
        f" {sys.executable} -m omar_bulk status out --json >status.json;"
        f" {sys.executable} -m omar_bulk fetch --out out {' '.join(TWO_MONTHS)}"
        " --base-url https://127.0.0.1:9/ --dry-run >due.txt 2>dry.txt;"
        f" {sys.executable} -m omar_bulk verify out >verify.txt"
    )
    done = subprocess.run(
        [*prefix, "sh", "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert '"complete": true' in Path("status.json").read_text()
    assert Path("due.txt").read_text() == ""
    assert "rebuild" not in Path("dry.txt").read_text()
    assert "all hold" in Path("verify.txt").read_text()
    assert not Path(f"{journal}-shm").exists()
