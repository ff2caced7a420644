"""The command line: version, help, bad options, local write errors, and what it prints."""

from __future__ import annotations

import errno
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

from omar_bulk import __version__
from omar_bulk.errors import LocalWriteError
from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import Faults, ServerThread
from omar_bulk.storage import translate_os_error

from ..conftest import Cli, data_files

ONE = ["--meter", "M1", "--start", "2024-02-01", "--end", "2024-02-02"]


def test_version(offline_cli: Cli) -> None:
    outcome = offline_cli("--version")
    assert outcome.exit_code == 0 and outcome.stdout.strip() == f"omar-bulk {__version__}"


def test_the_installed_command_starts_and_shows_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "omar_bulk", "fetch", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    for option in (
        "--concurrency",
        "--rate",
        "--retries",
        "--timeout",
        "--dry-run",
        "--overwrite",
        "--report",
        "--ca-bundle",
        "--chunk",
        "--time-type",
    ):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--base-url", "http://127.0.0.1:9/"], "only https:// is accepted"),
        (["--base-url", "https://"], "has no host"),
        (["--concurrency", "0"], "--concurrency must be between"),
        (["--retries", "-1"], "--retries must be between"),
        (["--timeout", "0"], "--timeout must be a positive"),
        (["--rate", "0"], "--rate must be a positive"),
        (["--env", "staging"], "use prod or test"),
        (["--chunk", "fortnight"], "unknown chunk"),
        (["--format", "xml"], "unknown format"),
        (["--time-type", "UTC"], "unknown time type"),
    ],
)
def test_bad_options_exit_2_with_a_message(offline_cli: Cli, args: list[str], message: str) -> None:
    outcome = offline_cli("fetch", *ONE, *args, auth=True)
    assert outcome.exit_code == 2
    assert message in outcome.stderr
    assert "Traceback" not in outcome.stderr


@pytest.mark.parametrize(
    ("env", "server"),
    [
        ([], "https://omar-online.caiso.com:444/"),
        (["--env", "prod"], "https://omar-online.caiso.com:444/"),
        (["--env", "test"], "https://omar-onlinetest.caiso.com:444/"),
    ],
)
def test_env_picks_the_server_every_request_goes_to(
    offline_cli: Cli, env: list[str], server: str
) -> None:
    """``--env test`` must never send a backfill to production, nor prod to the test site."""
    outcome = offline_cli("fetch", *ONE, *env, "--dry-run")
    assert outcome.exit_code == 0, outcome.stderr
    (url,) = outcome.stdout.splitlines()
    assert url.startswith(server + "getMDEF.jsp?"), url


def test_no_certificate_is_exit_2(offline_cli: Cli) -> None:
    outcome = offline_cli("fetch", *ONE, "--base-url", "https://127.0.0.1:9/", auth=False)
    assert outcome.exit_code == 2 and "--cert" in outcome.stderr


def test_nothing_planned_is_exit_2(offline_cli: Cli) -> None:
    outcome = offline_cli("fetch", auth=False)
    assert outcome.exit_code == 2 and "give a manifest file" in outcome.stderr


def test_manifest_and_adhoc_ids_together_are_refused(offline_cli: Cli, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("kind,id,start,end\nmeter,M1,2024-01-01,2024-01-02\n")
    outcome = offline_cli("fetch", str(manifest), *ONE)
    assert outcome.exit_code == 2 and "not both" in outcome.stderr


def test_out_that_is_a_file_is_exit_2(offline_cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    outcome = offline_cli("fetch", *ONE, "--base-url", "https://127.0.0.1:9/", "--out", str(target))
    assert outcome.exit_code == 2 and "not a folder" in outcome.stderr


def test_a_full_disk_aborts_with_exit_4_and_leaves_no_partial_file(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up in the middle of the third file: half of it reaches the ``.part``
    file, then ENOSPC. omar-bulk itself must remove that ``.part`` (the fake only writes)."""
    real_write = os.write
    parts: set[str] = set()
    torn: list[str] = []

    def full_after_two(fd: int, data: bytes) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.endswith(".part"):
            parts.add(target)
            if len(parts) > 2:
                real_write(fd, bytes(data[: len(data) // 2]))  # what a disk filling up keeps
                torn.append(target)
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_after_two)
    outcome = cli(
        "fetch",
        "--meter",
        "M1",
        "--start",
        "2024-01-01",
        "--end",
        "2024-12-31",
        "--concurrency",
        "1",
    )
    assert outcome.exit_code == 4
    assert "the disk is full" in outcome.stderr and "Traceback" not in outcome.stderr
    assert len(data_files(cli.out)) == 2
    assert torn and not os.path.lexists(torn[0])  # the torn .part was there, and went
    assert list(cli.out.rglob("*.part")) == []
    monkeypatch.setattr(os, "write", real_write)
    again = cli("fetch", "--meter", "M1", "--start", "2024-01-01", "--end", "2024-12-31")
    assert again.exit_code == 0 and "10 downloaded, 2 skipped" in again.stderr


def test_os_errors_are_translated_with_what_and_where() -> None:
    cases = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "quota",
        errno.EACCES: "permission denied",
        errno.EROFS: "read-only file system",
        errno.EIO: "cannot write",
    }
    for code, text in cases.items():
        error = translate_os_error(OSError(code, os.strerror(code)), "/data/x.mdef")
        assert isinstance(error, LocalWriteError) and error.exit_code == 4
        assert text in str(error) and "/data/x.mdef" in str(error)


def test_without_a_terminal_there_is_no_progress_noise(cli: Cli) -> None:
    outcome = cli("fetch", *ONE)
    assert outcome.exit_code == 0
    assert "━" not in outcome.stderr and "files" not in outcome.stderr
    assert "1 planned, 1 downloaded" in outcome.stderr


def test_progress_can_be_forced_and_shows_failures_as_they_happen(cli: Cli, faults: Faults) -> None:
    faults.script = {"M2": ["404*"]}
    outcome = cli(
        "fetch",
        "--meter",
        "M1",
        "--meter",
        "M2",
        "--start",
        "2024-01-01",
        "--end",
        "2024-02-29",
        "--progress",
    )
    assert outcome.exit_code == 1
    assert "4/4 files" in outcome.stderr  # the overall bar
    assert "failed" in outcome.stderr and "HTTP 404" in outcome.stderr


def test_the_summary_says_where_the_report_is_and_lists_failures(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    faults.script = {"M1": ["404*"]}
    report = tmp_path / "r.json"
    outcome = cli("fetch", *ONE, "--report", str(report))
    assert f"report: {report}" in outcome.stderr
    assert "failures:" in outcome.stderr and "M1_20240201_20240202_PST.mdef: HTTP 404" in (
        outcome.stderr.replace("\n", "")
    )
    assert json.loads(report.read_text())["summary"]["failed"] == 1


def test_a_second_run_on_the_same_folder_waits_its_turn(cli: Cli) -> None:
    import fcntl

    assert cli("fetch", *ONE).exit_code == 0
    with open(cli.out / ".omar-bulk" / "lock", "r+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        outcome = cli("fetch", *ONE)
    assert outcome.exit_code == 2 and "another omar-bulk run" in outcome.stderr


def test_demo_runs_a_real_backfill(tmp_path: Path) -> None:
    """``omar-bulk demo`` as ``make demo`` runs it (faults, retries, a rerun)."""
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "omar_bulk", "demo", "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "97 planned, 96 downloaded" in result.stderr
    assert "the rerun sent 1 download request(s)" in result.stderr
    assert len(data_files(out)) == 96


def test_a_demo_whose_run_aborts_fails_loudly(
    offline_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A demo that cannot download (here: its client trusts another CA) says it did not go as
    planned and exits non-zero; it never shows the empty archive as its result."""
    stranger = TestPKI.create(tmp_path / "stranger")
    monkeypatch.setattr(TestPKI, "ca", property(lambda _self: stranger.folder / "ca.pem"))
    outcome = offline_cli("demo", "--out", str(tmp_path / "demo"), "--no-progress")
    assert outcome.exit_code == 3, outcome.stderr
    assert "run aborted" in outcome.stderr
    assert "the demo did not go as planned" in outcome.stderr
    assert "went as planned" not in outcome.stderr
    assert "files are in" not in outcome.stderr
    assert "complete" not in outcome.stderr


def first_line(stream: IO[str], *, timeout: float) -> str:
    """The next line of a child's output, or a test failure after ``timeout`` seconds."""
    lines: queue.Queue[str] = queue.Queue(maxsize=1)
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no line of output within {timeout} s")


def test_serve_runs_a_stand_in_that_fetch_can_use(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    server = subprocess.Popen(
        [sys.executable, "-m", "omar_bulk", "serve", "--port", "0", "--certs", str(certs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        first = first_line(server.stdout, timeout=30)
        assert first.startswith("stand-in OMAR-Online listening at https://127.0.0.1:")
        base_url = first.rsplit(" ", 1)[1].strip()
        out = tmp_path / "out"
        fetch = subprocess.run(
            [
                sys.executable,
                "-m",
                "omar_bulk",
                "fetch",
                "--base-url",
                base_url,
                "--cert",
                str(certs / "client.pem"),
                "--ca-bundle",
                str(certs / "ca.pem"),
                "--out",
                str(out),
                *ONE,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert fetch.returncode == 0, fetch.stderr
        assert len(data_files(out)) == 1
    finally:
        server.send_signal(2)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()  # leave no stand-in behind, then fail on the timeout
            server.wait(timeout=10)
            raise
    assert server.returncode == 0


def test_the_standard_event_loop_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop measured slower on large TLS bodies: it is used only when asked for."""
    from omar_bulk.run import _loop_factory

    monkeypatch.delenv("OMAR_UVLOOP", raising=False)
    assert _loop_factory() is None
    monkeypatch.setenv("OMAR_UVLOOP", "1")
    try:
        import uvloop
    except ImportError:
        assert _loop_factory() is None
    else:
        assert _loop_factory() is uvloop.new_event_loop


def test_a_run_waits_for_a_holder_of_a_shared_lock_too(cli: Cli) -> None:
    """The run's lock is exclusive: even a shared hold (a reader's) keeps a second run out.
    A run that took a shared lock itself would go ahead beside another shared holder."""
    import fcntl

    assert cli("fetch", *ONE).exit_code == 0
    with open(cli.out / ".omar-bulk" / "lock", "r+b") as held:
        fcntl.flock(held, fcntl.LOCK_SH | fcntl.LOCK_NB)
        outcome = cli("fetch", *ONE)
    assert outcome.exit_code == 2 and "another omar-bulk run" in outcome.stderr
    # and the lock is given back: the next run goes ahead
    assert cli("fetch", *ONE).exit_code == 0


M1_Q1 = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-03-31"]


def test_an_unwritable_stderr_does_not_kill_the_run(
    cli: Cli, server: ServerThread, tmp_path: Path
) -> None:
    """stderr on /dev/full (a full log disk) or a closed pipe (``2>&1 | head -1``, a logger
    that died): the run died at its first printed line with an uncaught traceback; with only
    good items, every file landed but the exit code was 1 and --metrics never written; with
    a failing meter, it stopped after 4 of 120 requests without a report."""
    metrics = tmp_path / "m.prom"
    env = dict(os.environ, OMAR_CERT_PASSWORD=DEMO_PASSWORD)
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-c", "from omar_bulk._entry import main; main()", "fetch",
             *M1_Q1, "--out", str(cli.out), "--base-url", server.base_url,
             "--cert", str(cli.pki.client_p12), "--ca-bundle", str(cli.pki.ca),
             "--metrics", str(metrics), "--no-progress"],
            stdin=subprocess.DEVNULL, stdout=full, stderr=full, env=env, timeout=120,
            check=False,
        )  # fmt: skip
    assert len(data_files(cli.out)) == 3
    assert done.returncode == 0
    assert metrics.exists()
