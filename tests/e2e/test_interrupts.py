"""Ctrl-C, SIGTERM and kill -9 in the middle of a run: nothing partial stays, a rerun finishes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest

from omar_bulk import Settings, load_manifest
from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import Faults, ServerThread, serve_in_thread

from ..conftest import Cli, data_files, expected_body, journal_rows, standin_args

METERS = ["A", "B", "C"]
ARGS = ["--start", "2024-01-01", "--end", "2024-06-30"]  # 3 meters x 6 months = 18 items


@pytest.fixture
def slow_server(pki: TestPKI) -> Iterator[ServerThread]:
    """Bodies of ~2 MiB sent in 64 KiB pieces 20 ms apart: each transfer takes ~0.7 s."""
    faults = Faults(retry_after=0, padding=2 << 20, trickle=0.02)
    with serve_in_thread(pki, faults) as running:
        yield running


def start_run(pki: TestPKI, server: ServerThread, out: Path, *extra: str) -> subprocess.Popen[str]:
    args = [
        sys.executable,
        "-m",
        "omar_bulk",
        "fetch",
        *standin_args(server, pki),
        "--out",
        str(out),
        "--concurrency",
        "3",
        "--no-progress",
        *extra,
    ]
    for meter in METERS:
        args += ["--meter", meter]
    args += ARGS
    # PYTHONFAULTHANDLER: a run that does not end in time is sent SIGABRT and prints every
    # thread's stack, so a hang fails with where it hangs (``finish``).
    env = {**os.environ, "OMAR_CERT_PASSWORD": DEMO_PASSWORD, "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen[str], timeout: float) -> str:
    """The run's stderr once it ended; a failure with its threads' stacks if it does not."""
    try:
        return process.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        _, stderr = process.communicate(timeout=10)
        pytest.fail(f"the run did not end within {timeout} s; its threads:\n{stderr[-6000:]}")


def wait_for(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def frozen_when(
    process: subprocess.Popen[str], condition: Callable[[], bool], timeout: float = 30.0
) -> None:
    """Return with ``process`` stopped (SIGSTOP) at a moment ``condition`` holds, so it still
    holds when the caller acts: no transfer can finish between the look and the kill."""
    deadline = time.monotonic() + timeout
    while True:
        process.send_signal(signal.SIGSTOP)
        while not all_stopped(process.pid):
            assert time.monotonic() < deadline, "the run did not stop on SIGSTOP in time"
            time.sleep(0.001)
        if condition():
            return
        process.send_signal(signal.SIGCONT)
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def all_stopped(pid: int) -> bool:
    """Every thread of ``pid`` is stopped (state T), or the process is gone."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return True  # the process is gone: nothing left to wait for
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:
            continue  # that thread ended while we looked
        if stat.rsplit(")", 1)[1].split()[0] not in {"T", "t", "Z", "X"}:
            return False
    return True


def handles_sigterm(pid: int) -> bool:
    """True once the process catches SIGTERM: Python does not by default, omar-bulk's entry
    point does from its first line. Before that, the interpreter itself is still starting,
    and a signal there ends any Python program the same way."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def parts(out: Path) -> list[Path]:
    return list(out.rglob("*.part"))


def assert_every_file_is_exact(out: Path, server: ServerThread) -> None:
    files = data_files(out)
    assert len(files) == 18
    for path in files:
        meter, first, last, _ = path.stem.split("_")
        start = date(int(first[:4]), int(first[4:6]), int(first[6:]))
        end = date(int(last[:4]), int(last[4:6]), int(last[6:]))
        assert path.read_bytes() == expected_body(
            "meter", meter, start, end, faults=server.state.faults
        ), path
    assert parts(out) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_transfer_exits_130_cleanly(
    pki: TestPKI, slow_server: ServerThread, tmp_path: Path, signum: int
) -> None:
    out = tmp_path / "out"
    process = start_run(pki, slow_server, out)
    wait_for(lambda: len(parts(out)) >= 2)  # transfers in flight, .part files on disk
    sent = time.monotonic()
    process.send_signal(signum)
    stderr = finish(process, timeout=20)
    assert time.monotonic() - sent < 5
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert parts(out) == []
    report = json.loads((out / ".omar-bulk" / "last-run.json").read_text())
    assert report["summary"]["interrupted"] is True
    rows = journal_rows(out)
    for rel, (status, size, _sha) in rows.items():
        assert status == "downloaded" and (out / rel).stat().st_size == size
    assert len(data_files(out)) == len(rows)


def test_a_second_ctrl_c_during_shutdown_changes_nothing(
    pki: TestPKI, slow_server: ServerThread, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    process = start_run(pki, slow_server, out)
    wait_for(lambda: len(parts(out)) >= 2)
    process.send_signal(signal.SIGINT)
    time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    stderr = finish(process, timeout=20)
    assert process.returncode == 130, stderr
    assert parts(out) == []
    assert json.loads((out / ".omar-bulk" / "last-run.json").read_text())["summary"]


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.3, 0.5, 0.8])
def test_ctrl_c_at_any_moment_of_start_up_exits_130(
    pki: TestPKI, slow_server: ServerThread, tmp_path: Path, delay: float
) -> None:
    """Wherever the signal lands (imports, manifest, certificate, journal, first requests)."""
    out = tmp_path / "out"
    process = start_run(pki, slow_server, out)
    wait_for(lambda: handles_sigterm(process.pid))  # omar-bulk's own code is running
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    stderr = finish(process, timeout=20)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert parts(out) == []


def test_kill_9_then_rerun_finishes_with_exact_files(
    pki: TestPKI, slow_server: ServerThread, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    process = start_run(pki, slow_server, out)
    frozen_when(process, lambda: len(data_files(out)) >= 2 and len(parts(out)) >= 1)
    process.kill()
    process.wait(timeout=10)
    left = parts(out)
    assert left, "the kill should have left .part files behind"
    done_before = {rel for rel, row in journal_rows(out).items() if row[0] == "downloaded"}
    before = len(slow_server.state.downloads())
    rerun = Cli(pki, out, slow_server)(
        "fetch", *[arg for m in METERS for arg in ("--meter", m)], *ARGS, "--concurrency", "3"
    )
    assert rerun.exit_code == 0, rerun.stderr
    assert_every_file_is_exact(out, slow_server)
    asked = len(slow_server.state.downloads()) - before
    assert asked == 18 - len(done_before)


def test_a_rerun_sweeps_the_part_files_a_killed_run_left_under_other_names(cli: Cli) -> None:
    """kill -9 leaves ``.part`` files; a rerun that asks for other items never writes over
    them, so only the sweep of the killed run's folders removes them. Other files stay."""
    one = ["--meter", "M1", "--start", "2024-02-01", "--end", "2024-02-29"]
    assert cli("fetch", *one).exit_code == 0
    # What a run killed while writing into meter/M1 leaves in the journal: a run that never
    # finished, and the folder it announced before its first .part file went there.
    db = sqlite3.connect(cli.out / ".omar-bulk" / "journal.sqlite3")
    try:
        with db:
            killed = db.execute("INSERT INTO runs (started) VALUES (?)", (time.time(),)).lastrowid
            db.execute("INSERT INTO folders (run_id, path) VALUES (?, ?)", (killed, "meter/M1"))
    finally:
        db.close()
    folder = cli.out / "meter" / "M1"
    stray = folder / "M1_20230101_20230131_PST.mdef.part"
    stray.write_bytes(b"half a body")
    other = folder / "notes.txt"
    other.write_text("the user's own file")
    rerun = cli("fetch", *one)
    assert rerun.exit_code == 0, rerun.stderr
    assert not stray.exists()
    assert other.read_text() == "the user's own file"
    assert [p.name for p in data_files(cli.out) if p.suffix == ".mdef"] == [
        "M1_20240201_20240229_PST.mdef"
    ]


def test_a_file_renamed_into_place_as_the_run_is_stopped_is_in_the_journal(
    pki: TestPKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a slow disk (calls on Offload's threads) a revised body is renamed into place and
    the replaced version moved to history; Ctrl-C arrives before the call returns. The task
    waits for the call (Offload's promise: "whatever the call made is known to the code that
    cleans up"), then reports the item ``interrupted`` and records nothing: the new file is
    in meter/ under a journal row holding the old size and SHA-256, and the history file
    is listed in no ``versions`` row (RELIABILITY: "the journal lists them all"). Seen by
    hand with strace delaying renames by 400 ms: 26 files on disk, 25 in the journal."""
    import hashlib
    import sqlite3
    import time

    from omar_bulk import storage as storage_module
    from omar_bulk.run import StopSignal, fetch_async

    monkeypatch.setenv("OMAR_OFFLOAD", "thread")
    faults = Faults(retry_after=0)
    out = tmp_path / "out"
    manifest = tmp_path / "one.toml"
    manifest.write_text('[[pull]]\nmeters = ["M1"]\nstart = 2024-01-01\nend = 2024-01-31\n')
    with serve_in_thread(pki, faults) as server:

        def settings(**extra: object) -> Settings:
            return Settings(
                plan=load_manifest(manifest),
                base_url=server.base_url,
                out_dir=out,
                cert=pki.client_p12,
                ca_bundle=pki.ca,
                password=lambda _what: DEMO_PASSWORD,
                concurrency=1,
                retry_wait=0.01,
                **extra,  # type: ignore[arg-type]
            )

        assert asyncio.run(fetch_async(settings())).exit_code == 0
        faults.revision = 1
        stop = StopSignal()
        original = storage_module.Storage.write_whole

        def slow_write_whole(self, key, data, archive=None):  # type: ignore[no-untyped-def]
            mtime = original(self, key, data, archive)
            stop.request()  # Ctrl-C while the disk is still busy with this call
            time.sleep(0.3)
            return mtime

        monkeypatch.setattr(storage_module.Storage, "write_whole", slow_write_whole)
        result = asyncio.run(
            asyncio.wait_for(fetch_async(settings(overwrite=True), stop=stop), timeout=20)
        )
    assert result.exit_code in (0, 130)
    db = sqlite3.connect(out / ".omar-bulk" / "journal.sqlite3")
    try:
        rows = dict(db.execute("SELECT path, sha256 FROM items").fetchall())
        kept = [row[0] for row in db.execute("SELECT archived_as FROM versions")]
    finally:
        db.close()
    for file in data_files(out):
        key = str(file.relative_to(out))
        assert rows.get(key) == hashlib.sha256(file.read_bytes()).hexdigest(), key
    for old in (out / ".omar-bulk" / "history").rglob("*.mdef.*"):
        assert str(old.relative_to(out)) in kept, f"{old.name} is in history, not in the journal"
