"""Failing cases found by trying the Unix conventions and the archive as a careless or hostile
user would: each test states what the README or the module docstrings promise, and fails on
the code as merged.

Device nodes and FIFOs are this test's own, in its temporary folder; every process has a
deadline.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omar_bulk import userfiles
from omar_bulk.errors import LocalWriteError
from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import ServerThread
from omar_bulk.tls import password_file_warning

from .conftest import Cli
from .test_unix import DEADLINE, environment, fetch_args, make_node, omar

TWO_MONTHS = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-02-29"]
FEBRUARY_FILE = "meter/M1/M1_20240201_20240229_PST.mdef"


@pytest.fixture
def fetched(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two months fetched into ``out`` (the working folder is ``tmp_path``)."""
    monkeypatch.chdir(tmp_path)
    cli.out = Path("out")
    assert cli("fetch", *TWO_MONTHS).exit_code == 0
    return Path("out")


# -- verify ---------------------------------------------------------------------------------


@pytest.mark.parametrize("replacement", ["folder", "fifo"])
def test_verify_names_a_data_file_replaced_by_something_that_is_not_a_file(
    cli: Cli, fetched: Path, replacement: str
) -> None:
    """README: every file the journal records is there with its size and SHA-256. A folder or
    a FIFO where a data file was is not that file; verify said "all hold" (exit 0) while the
    next fetch of the same archive stops with exit 4 on the folder."""
    target = fetched / FEBRUARY_FILE
    target.unlink()
    if replacement == "folder":
        target.mkdir()
    else:
        os.mkfifo(target)
    outcome = cli("verify", "out", "--json")
    assert outcome.exit_code == 1, outcome.stdout + outcome.stderr
    problems = json.loads(outcome.stdout)["problems"]
    assert [p["path"] for p in problems] == [FEBRUARY_FILE], problems


def test_verify_names_a_data_folder_that_is_a_link_out_of_out(
    cli: Cli, fetched: Path, tmp_path: Path
) -> None:
    """``OUT/meter`` replaced by a link to a folder elsewhere: verify walks through the link
    and advises moving the files it finds there "out of OUT" (they are not in OUT); it should
    name the link itself, as it does for a link one level further down."""
    elsewhere = tmp_path / "elsewhere"
    (fetched / "meter").rename(elsewhere)
    (fetched / "meter").symlink_to(elsewhere)
    outcome = cli("verify", "out", "--json")
    assert outcome.exit_code == 1
    paths = [p["path"] for p in json.loads(outcome.stdout)["problems"]]
    assert "meter" in paths, paths


def test_a_state_folder_inside_the_data_folders_is_refused_or_verifies(
    cli: Cli, fetched: Path
) -> None:
    """``--state-dir OUT/meter``: fetch accepts it (exit 0) and writes its journal, lock and
    marks among the data files; verify then reports each of them as a data file with no
    journal row, and advises fetching "its month again with --overwrite". One of the two is
    wrong: refuse the folder (exit 2), or verify the archive the fetch made."""
    other = Path("other")
    fetch = cli("fetch", *TWO_MONTHS, "--out", str(other), "--state-dir", "other/meter")
    if fetch.exit_code == 2:
        return
    assert fetch.exit_code == 0, fetch.stderr
    outcome = cli("verify", str(other), "--state-dir", "other/meter", "--json")
    assert outcome.exit_code == 0, outcome.stdout


def test_an_empty_state_dir_is_bad_input_not_the_working_folder(
    server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """``--state-dir "$STATE"`` with STATE unset: the journal, lock, report and mark went into
    the working folder (exit 0). An empty ``OMAR_CERT_PASSWORD_FILE`` is exit 2; an empty
    state folder should be too, with nothing written."""
    work = tmp_path / "work"
    work.mkdir()
    done = omar(*fetch_args(server, pki, Path("out")), "--state-dir", "", cwd=work)
    assert done.returncode == 2, done.stderr
    assert sorted(p.name for p in work.iterdir()) == [], sorted(p.name for p in work.iterdir())


# -- output targets -------------------------------------------------------------------------


def test_a_fifo_without_a_reader_is_named_in_the_advice(
    server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """The advice said "for instance `cat {path} &`": the braces reached the user."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    done = omar(*fetch_args(server, pki, tmp_path / "out"), "--report", str(fifo))
    assert done.returncode == 4, done.stderr
    assert b"{path}" not in done.stderr, done.stderr
    assert f"cat {fifo} &".encode() in done.stderr


def test_a_stalled_reader_holds_the_run_one_stall_limit_not_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The docstring: a reader that stops reading for STALL_SECONDS ends the write. The
    buffered writer's close flushes again and waits a second STALL_SECONDS (a run measured 61 s
    with the 30 s limit, SIGTERM ignored all along)."""
    monkeypatch.setattr(userfiles, "STALL_SECONDS", 1.0)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
    try:
        started = time.monotonic()
        with pytest.raises(LocalWriteError), userfiles.write_output(fifo) as handle:
            for _ in range(40_000):  # item by item, as the report is written
                handle.write(b"x" * 100)
        assert time.monotonic() - started < 1.8
    finally:
        os.close(held)


def test_the_same_null_device_for_report_and_metrics_discards_both(
    server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """``--report /dev/null --metrics /dev/null``, the natural way to discard both, is exit 2
    ("is the report's file too"): a device written in place is no file the two would share."""
    null = make_node(tmp_path / "null", stat.S_IFCHR, 1, 3)
    done = omar(
        *fetch_args(server, pki, tmp_path / "out"), "--report", str(null), "--metrics", str(null)
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_ISCHR(null.lstat().st_mode)


# -- input ----------------------------------------------------------------------------------


def test_fetch_dash_with_stdin_closed_does_not_say_terminal(tmp_path: Path) -> None:
    """``omar-bulk fetch - <&-`` (no standard input at all) said "standard input is a
    terminal"; it is not one."""
    done = subprocess.run(
        [sys.executable, "-m", "omar_bulk", "fetch", "-", "--out", str(tmp_path / "o"),
         "--dry-run"],
        capture_output=True, env=environment(OMAR_CERT_PASSWORD=DEMO_PASSWORD),
        preexec_fn=lambda: os.close(0), timeout=DEADLINE, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert b"Traceback" not in done.stderr
    assert b"is a terminal" not in done.stderr, done.stderr


def test_a_password_file_only_its_user_can_read_through_an_acl_is_not_warned_about(
    tmp_path: Path,
) -> None:
    """systemd's ``LoadCredential=`` writes the credential 0400 and grants the service's user
    read access with an ACL entry: ``stat`` then shows 0440 (the group bits are the ACL mask)
    although the file's group has no access. omar-bulk warned "its group can read it; chmod
    600" on every run, about a read-only file it cannot chmod."""
    secret = tmp_path / "cert-password"
    secret.write_text("omar-demo\n")
    secret.chmod(0o400)
    every = 0xFFFFFFFF
    # owner r, user 4242 r, group none, mask r, other none
    entries = [(0x01, 4, every), (0x02, 4, 4242), (0x04, 0, every), (0x10, 4, every)]
    entries.append((0x20, 0, every))
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    try:
        os.setxattr(secret, "system.posix_acl_access", acl)
    except OSError as exc:
        pytest.skip(f"this file system takes no POSIX ACL: {exc}")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o440  # what stat shows
    assert password_file_warning(secret) is None


def test_a_csv_manifest_on_stdin_may_open_with_a_comment_line(tmp_path: Path) -> None:
    """README: in a CSV manifest "lines starting with # are skipped". Read from a file named
    ``.csv`` such a manifest works; piped into ``fetch -`` (or through a FIFO) its first line
    is the comment, not ``kind,``, so it was parsed as TOML: "TOML syntax", exit 2."""
    manifest = b"# the north meters\nkind,id,start,end\nmeter,M1,2024-01-01,2024-01-31\n"
    done = omar("fetch", "-", "--out", str(tmp_path / "o"), "--dry-run", stdin=manifest)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(b"https://") == 1


def test_an_archive_rebuilt_after_damage_verifies(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: a damaged journal is set aside and rebuilt, and nothing needs fetching again.
    The rebuilt journal lists no history file, so verify exits 1 on every earlier version
    from then on, advising "keep the file or remove it, no run needs it": keeping it keeps
    the weekly verify failing."""
    monkeypatch.chdir(tmp_path)
    cli.out = Path("out")
    growing = ["--meter", "M1", "--start", "2024-03-01", "--end", "yesterday"]
    assert cli("fetch", *growing, "--today", "2024-03-10").exit_code == 0
    assert cli("fetch", *growing, "--today", "2024-03-16").exit_code == 0
    assert list(Path("out/.omar-bulk/history").rglob("*.mdef.*"))  # a retired shorter file
    journal = Path("out/.omar-bulk/journal.sqlite3")
    with journal.open("r+b") as handle:
        handle.write(b"not a database, damaged")
    rerun = cli("fetch", *growing, "--today", "2024-03-16")
    assert rerun.exit_code == 0, rerun.stderr
    assert "rebuilt" in rerun.stderr
    outcome = cli("verify", "out", "--json")
    assert outcome.exit_code == 0, outcome.stdout


def test_report_to_dev_stdout_appended_to_a_log_keeps_the_log(
    server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """cron: ``fetch ... --report /dev/stdout >> run.log 2>&1``. /dev/stdout names the log
    file, which was replaced by the report: every earlier line of the log was lost, its mode
    became 0600, and this run's summary went to the replaced (unlinked) file."""
    log = tmp_path / "run.log"
    log.write_bytes(b"yesterday's run\n")
    with log.open("ab") as appended:
        done = subprocess.run(
            [sys.executable, "-m", "omar_bulk", *fetch_args(server, pki, tmp_path / "out"),
             "--report", "/dev/stdout"],
            stdout=appended, stderr=appended, stdin=subprocess.DEVNULL,
            env=environment(OMAR_CERT_PASSWORD=DEMO_PASSWORD), timeout=DEADLINE, check=False,
        )  # fmt: skip
    assert done.returncode == 0
    text = log.read_bytes()
    assert text.startswith(b"yesterday's run\n"), text[:200]
    assert b'"downloaded": 1' in text and b"1 planned" in text


@pytest.mark.parametrize("option", ["--report", "--metrics"])
def test_a_link_planted_by_another_user_does_not_make_root_replace_its_target(
    option: str, server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """Root writes the metrics into a textfile folder another user owns (node_exporter's,
    say). That user replaced the file by a link to a file of root's: the link was followed
    and root's file replaced by the report or the metrics (0644 for metrics). Any file on the
    system could be destroyed this way."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the link belongs to another user")
    nobody = 65534
    shared = tmp_path / "textfile"
    shared.mkdir()
    os.chown(shared, nobody, nobody)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    victim = private / "important.conf"
    victim.write_bytes(b"root's own file\n")
    planted = shared / "omar.out"
    planted.symlink_to(victim)
    os.lchown(planted, nobody, nobody)
    omar(*fetch_args(server, pki, tmp_path / "out"), option, str(planted))
    assert victim.read_bytes() == b"root's own file\n"


def test_a_dry_run_says_when_the_run_would_refuse_its_state_folder(
    offline_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--dry-run`` prints "every URL a run would request". With a state folder any user can
    write, the run itself stops (exit 4) and requests nothing; the dry run printed the URLs
    and exited 0 without a word about it."""
    monkeypatch.chdir(tmp_path)
    shared = Path("state")
    shared.mkdir()
    shared.chmod(0o777)
    month = ["--meter", "M1", "--start", "2024-05-01", "--end", "2024-05-31"]
    dry = offline_cli("fetch", *month, "--out", "out", "--state-dir", "state", "--dry-run")
    assert "other users" in dry.stderr or dry.exit_code != 0, (dry.exit_code, dry.stderr)
