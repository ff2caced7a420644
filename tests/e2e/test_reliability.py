"""Trying hard to break the promise: no file on disk is ever partial or wrong, and rerunning
the same command finishes the job, asking the server only for what is missing.

Each test injects one kind of fault; docs/RELIABILITY.md lists them with what the tool does.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import pytest

from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import Faults, ServerThread, body_for, serve_in_thread

from ..conftest import (
    Cli,
    assert_verified,
    data_files,
    expected_body,
    need_mount_namespace,
    standin_args,
)

HERE = Path(__file__).parent.parent


def meters(count: int) -> list[str]:
    return [arg for n in range(count) for arg in ("--meter", f"MTR{n:02d}")]


def expected_for(path: Path, faults: Faults | None = None) -> bytes:
    """The server's bytes for a file of the output layout."""
    kind = path.parent.parent.name
    ident, first, last, rest = path.name.rsplit("_", 3)
    time_type, extension = rest.split(".")
    start = date(int(first[:4]), int(first[4:6]), int(first[6:]))
    end = date(int(last[:4]), int(last[4:6]), int(last[6:]))
    return body_for(extension, kind, ident, start, end, time_type, faults)


def assert_complete_and_consistent(out: Path, planned: int, faults: Faults | None = None) -> None:
    """Every planned file is there with the server's bytes, and the journal agrees."""
    files = data_files(out)
    assert len(files) == planned
    for path in files:
        assert path.read_bytes() == expected_for(path, faults), path
    assert list(out.rglob("*.part")) == []
    db = sqlite3.connect(out / ".omar-bulk" / "journal.sqlite3")
    try:
        rows = db.execute("SELECT path, status, bytes, sha256 FROM items").fetchall()
        unswept = db.execute("SELECT count(*) FROM folders").fetchone()[0]
    finally:
        db.close()
    assert unswept == 0
    assert {path for path, *_ in rows} == {f.relative_to(out).as_posix() for f in files}
    for path, status, size, sha in rows:
        body = (out / path).read_bytes()
        assert (status, size, sha) == ("downloaded", len(body), hashlib.sha256(body).hexdigest())
    assert_verified(out)


# --- crashes --------------------------------------------------------------------------------


def test_kill_9_at_random_moments_loses_nothing(pki: TestPKI, tmp_path: Path) -> None:
    """SIGKILL a few-hundred-request run at random moments, rerun until done."""
    faults = Faults(latency=0.04, retry_after=0)
    chooser = random.Random(20261128)
    out = tmp_path / "out"
    concurrency = 8
    with serve_in_thread(pki, faults) as server:
        args = [
            sys.executable,
            "-m",
            "omar_bulk",
            "fetch",
            *meters(10),
            "--start",
            "2021-01-01",
            "--end",
            "2023-12-31",
            *standin_args(server, pki),
            "--out",
            str(out),
            "--concurrency",
            str(concurrency),
            "--no-progress",
            "--retry-wait",
            "0.05",
        ]
        env = {**os.environ, "OMAR_CERT_PASSWORD": DEMO_PASSWORD}
        kills = 0
        for _ in range(6):
            process = subprocess.Popen(
                args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            time.sleep(chooser.uniform(0.3, 1.2))
            if process.poll() is not None:
                break
            process.kill()
            process.wait(timeout=10)
            kills += 1
        for _ in range(5):
            finished = subprocess.run(
                args, env=env, capture_output=True, text=True, timeout=120, check=False
            )
            if finished.returncode == 0:
                break
        assert finished.returncode == 0, finished.stderr
        served = sum(1 for s in server.state.downloads() if s.status == 200 and s.fault is None)
    assert kills >= 2, "latency alone keeps the first two runs from finishing"
    assert_complete_and_consistent(out, 360)
    print(f"RELIABILITY kill-9: {kills} kills, {served - 360} repeated requests, 360 files")
    # A repeated request can only be one that was in flight when a kill landed.
    assert served - 360 <= kills * concurrency, (served, kills)


# --- disk full ------------------------------------------------------------------------------


def test_a_full_disk_stops_cleanly_and_the_rerun_completes(
    pki: TestPKI, tmp_path: Path, server: ServerThread
) -> None:
    """A tiny tmpfs as --out, in a private mount namespace so nothing stays mounted."""
    command = need_mount_namespace()
    config = {
        "mount": str(tmp_path / "tiny"),
        "size": "1m",
        "filler": 640 * 1024,
        "password": DEMO_PASSWORD,
        "result": str(tmp_path / "result.json"),
        "args": [
            *meters(2),
            "--start",
            "2023-01-01",
            "--end",
            "2023-12-31",
            *standin_args(server, pki),
            "--no-progress",
            "--concurrency",
            "2",
        ],
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    subprocess.run(
        [*command, sys.executable, str(HERE / "diskfull_driver.py"), str(tmp_path / "config.json")],
        check=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
    )
    result = json.loads((tmp_path / "result.json").read_text())
    first, second = result["first"], result["second"]
    assert first["code"] == 4, first["stderr"]
    assert "the disk is full" in first["stderr"]
    assert "Traceback" not in first["stderr"]
    assert first["parts"] == []
    assert 0 < len(first["files"]) < 24 or "journal" in first["stderr"]
    expected = {}
    for meter in ("MTR00", "MTR01"):
        for month in range(1, 13):
            start = date(2023, month, 1)
            end = date(2023, month + 1, 1) if month < 12 else date(2024, 1, 1)
            end = date.fromordinal(end.toordinal() - 1)
            rel = f"meter/{meter}/{meter}_{start:%Y%m%d}_{end:%Y%m%d}_PST.mdef"
            expected[rel] = hashlib.sha256(expected_body("meter", meter, start, end)).hexdigest()
    for rel, digest in first["files"].items():
        assert expected[rel] == digest, f"{rel} is partial or wrong after the disk filled up"
    assert second["code"] == 0, second["stderr"]
    assert second["files"] == expected
    assert second["parts"] == []
    # Every file that landed has its journal row (or the intent the rerun settles it by),
    # the rerun asks only for the files that were missing, and every request that went out
    # is in a report (when the first one could be written on the full disk).
    assert set(first["files"]) <= set(first["journaled"]), first["stderr"]
    assert second["report"]["summary"]["downloaded"] == 24 - len(first["files"])
    second_sent = sum(i["attempts"] for i in second["report"]["items"] if i["status"] != "skipped")
    if first["report"]:
        items = first["report"]["items"]
        first_sent = sum(i["attempts"] for i in items if i["status"] != "skipped")
        assert first_sent + second_sent == len(server.state.downloads())


# --- journal damage -------------------------------------------------------------------------

ONE_YEAR = ["--meter", "A", "--meter", "B", "--start", "2023-01-01", "--end", "2023-12-31"]


def test_a_deleted_journal_is_rebuilt_from_verified_files(cli: Cli) -> None:
    assert cli("fetch", *ONE_YEAR).exit_code == 0
    state = cli.out / ".omar-bulk"
    (state / "journal.sqlite3").unlink()
    victim = data_files(cli.out)[3]
    victim.write_bytes(victim.read_bytes()[:-1] + b"?")  # same size, wrong last byte
    assert cli.server is not None
    before = len(cli.server.state.downloads())
    outcome = cli("fetch", *ONE_YEAR)
    assert outcome.exit_code == 0
    assert "no journal" in outcome.stderr and "23 of them match" in outcome.stderr
    assert "1 downloaded, 23 skipped" in outcome.stderr
    assert len(cli.server.state.downloads()) == before + 1
    assert_complete_and_consistent(cli.out, 24)


def test_a_deleted_journal_and_report_means_refetching_everything(cli: Cli) -> None:
    assert cli("fetch", *ONE_YEAR).exit_code == 0
    state = cli.out / ".omar-bulk"
    (state / "journal.sqlite3").unlink()
    (state / "last-run.json").unlink()
    outcome = cli("fetch", *ONE_YEAR)
    assert "nothing vouches for the others" in outcome.stderr
    assert "24 downloaded, 0 skipped" in outcome.stderr
    assert_complete_and_consistent(cli.out, 24)


@pytest.mark.parametrize("where", ["header", "middle"])
def test_a_corrupted_journal_is_set_aside_and_never_trusted_blindly(cli: Cli, where: str) -> None:
    assert cli("fetch", *ONE_YEAR).exit_code == 0
    state = cli.out / ".omar-bulk"
    journal = state / "journal.sqlite3"
    (state / "last-run.json").unlink()  # only the damaged journal can vouch now
    size = journal.stat().st_size
    # Damage comes in pages: the page in the middle (with format 4's table, 4096 bytes at
    # size // 2 would straddle two pages and take an items leaf with it).
    offset = 0 if where == "header" else size // 2 // 4096 * 4096
    with open(journal, "r+b") as handle:
        handle.seek(offset)
        handle.write(os.urandom(min(4096, size - offset)))
    tampered = data_files(cli.out)[:2]
    for path in tampered:
        path.write_bytes(b"tampered" + path.read_bytes()[8:])  # same size, wrong bytes
    assert cli.server is not None
    before = len(cli.server.state.downloads())
    outcome = cli("fetch", *ONE_YEAR)
    assert outcome.exit_code == 0, outcome.stderr
    asked = {s.raw_query for s in cli.server.state.downloads()[before:]}
    for path in tampered:  # A_20230101_20230131_PST.mdef: asked for again
        ident, first, _, _ = path.stem.split("_")
        day = f"{first[4:6]}%2F{first[6:]}%2F{first[:4]}"
        assert any(f"selectedMeters={ident}&startDate={day}&" in q for q in asked), path
    if where == "middle":  # readable in part: what it still says, once checked, is used
        assert "still match their size and SHA-256 and are kept" in outcome.stderr
        assert len(asked) < 24  # a run that ignored the journal would ask for all 24
    if where == "header":  # unreadable: set aside, nothing in it can vouch for a file
        assert "the journal was damaged" in outcome.stderr
        assert "0 of 0 recorded files" in outcome.stderr
        assert list(state.glob("journal.sqlite3.damaged-*"))
        assert "24 downloaded, 0 skipped" in outcome.stderr
    # Damaged or not, rows that survive are checked against the files: the two tampered
    # files (same size, new time stamp) are re-hashed, found wrong and fetched again.
    assert_complete_and_consistent(cli.out, 24)


# --- network --------------------------------------------------------------------------------


def test_a_server_restarted_mid_run(cli: Cli, faults: Faults, tmp_path: Path) -> None:
    assert cli.server is not None
    server = cli.server
    faults.latency = 0.05

    restarted = threading.Event()

    def restart() -> None:
        deadline = time.monotonic() + 60
        while len(server.state.downloads()) < 10:
            if time.monotonic() > deadline:
                return  # the run ended or stalled first: the assertions below say so
            time.sleep(0.01)
        server.stop()
        time.sleep(0.8)
        server.start()
        restarted.set()

    helper = threading.Thread(target=restart, daemon=True)
    helper.start()
    report = tmp_path / "r.json"
    outcome = cli(
        "fetch",
        *meters(4),
        "--start",
        "2023-01-01",
        "--end",
        "2023-12-31",
        "--retries",
        "10",
        "--retry-wait",
        "0.1",
        "--report",
        str(report),
    )
    helper.join(timeout=60)
    assert not helper.is_alive(), "the restart helper did not finish within 60 s"
    assert restarted.is_set(), "the server was never restarted mid-run"
    assert outcome.exit_code == 0, outcome.stderr
    items = json.loads(report.read_text())["items"]
    assert max(i["attempts"] for i in items) > 1
    assert_complete_and_consistent(cli.out, 48)


def test_connection_refused_for_a_while_then_back(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server comes back only after the first login was refused, however slow the start."""
    from omar_bulk.console import PlainObserver

    assert cli.server is not None
    server = cli.server
    server.stop()
    notice = PlainObserver.notice
    refusals: list[str] = []

    def back_after_a_refusal(self: PlainObserver, message: str) -> None:
        notice(self, message)
        if "login failed (cannot connect" in message:
            refusals.append(message)
            if len(refusals) == 1:
                server.start()

    monkeypatch.setattr(PlainObserver, "notice", back_after_a_refusal)
    outcome = cli("fetch", *ONE_YEAR, "--retries", "3", "--retry-wait", "0.2")
    assert outcome.exit_code == 0, outcome.stderr
    assert "login failed (cannot connect" in outcome.stderr
    assert len(refusals) == 1, refusals
    assert_complete_and_consistent(cli.out, 24)


def test_a_body_longer_than_its_content_length_is_rejected_and_retried(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    faults.script = {"A": ["long", "long"]}
    report = tmp_path / "r.json"
    outcome = cli(
        "fetch",
        "--meter",
        "A",
        "--start",
        "2023-02-01",
        "--end",
        "2023-02-03",
        "--report",
        str(report),
    )
    assert outcome.exit_code == 0, outcome.stderr
    (item,) = json.loads(report.read_text())["items"]
    assert item["attempts"] == 3
    assert_complete_and_consistent(cli.out, 1)


@pytest.mark.parametrize("fault", ["cut", "short", "stall"])
def test_bodies_that_break_off_never_land_as_data(cli: Cli, faults: Faults, fault: str) -> None:
    faults.stall_seconds = 1.2
    faults.script = {"A": [fault] * 3, "B": [fault]}
    outcome = cli("fetch", *ONE_YEAR, "--timeout", "0.5", "--retries", "3")
    assert outcome.exit_code == 0, outcome.stderr
    assert_complete_and_consistent(cli.out, 24)


# --- sessions -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["login", "redirect"])
def test_sessions_expiring_every_few_requests_log_in_once_per_expiry(
    cli: Cli, faults: Faults, mode: str
) -> None:
    faults.session_requests = 3
    faults.expired_redirect = mode == "redirect"
    outcome = cli(
        "fetch", *meters(4), "--start", "2023-01-01", "--end", "2023-12-31", "--concurrency", "6"
    )
    assert outcome.exit_code == 0, outcome.stderr
    assert cli.server is not None
    state = cli.server.state
    served = sum(1 for s in state.downloads() if s.fault is None)
    assert served == 48
    assert state.logins <= 48 // 3 + 2, state.logins
    expired = [s for s in state.downloads() if s.fault == "no session"]
    assert expired and {s.status for s in expired} == {302 if mode == "redirect" else 200}
    print(f"RELIABILITY sessions[{mode}]: {state.logins} logins, {len(expired)} expired answers")
    assert_complete_and_consistent(cli.out, 48)


# --- secrets --------------------------------------------------------------------------------

SECRET = "Pa55-w0rd-that-must-NEVER-show"


@pytest.fixture
def secret_pki(tmp_path: Path, pki: TestPKI) -> tuple[TestPKI, Path, list[bytes]]:
    """A client identity of the stand-in's CA, protected by SECRET; and its key's base64 lines."""
    from omar_bulk.standin.certs import write_client

    cert, key = pki.authority.issue("secret client")
    folder = tmp_path / "secret"
    folder.mkdir()
    write_client(folder, "client", cert, key, pki.authority.cert, password=SECRET)
    key_lines = [
        line
        for line in (folder / "client-key.pem").read_bytes().splitlines()
        if line and not line.startswith(b"-----")
    ]
    (folder / "client-key.pem").unlink()  # only the protected forms remain
    (folder / "client.pem").unlink()
    return pki, folder, key_lines


def test_password_and_key_never_leak_in_any_failure_path(
    cli: Cli, faults: Faults, secret_pki: tuple[TestPKI, Path, list[bytes]], tmp_path: Path
) -> None:
    _, folder, key_lines = secret_pki
    p12 = str(folder / "client.p12")
    enc = [
        "--cert",
        str(folder / "client-cert.pem"),
        "--key",
        str(folder / "client-key-encrypted.pem"),
    ]
    faults.script = {"E": ["html"], "F": ["404*"], "G": ["403"], "H": ["500*"]}
    outputs = []
    for args, password in [
        (["--meter", "A", "--cert", p12], SECRET + "x"),  # wrong password
        (["--meter", "A", *enc], SECRET[::-1]),  # wrong key password
        (
            ["--meter", "E", "--meter", "F", "--meter", "H", "--cert", p12, "--retries", "1"],
            SECRET,
        ),  # item failures, error pages
        (["--meter", "G", "--cert", p12], SECRET),  # 403: fatal
        (["--meter", "A", *enc, "--dry-run"], SECRET),
    ]:
        outcome = cli(
            "fetch",
            *args,
            "--start",
            "2023-01-01",
            "--end",
            "2023-01-31",
            env={"OMAR_CERT_PASSWORD": password},
        )
        outputs.append(outcome.stdout + outcome.stderr)
    stranger = TestPKI.create(tmp_path / "stranger")
    refused = cli(
        "fetch",
        "--meter",
        "A",
        "--start",
        "2023-01-01",
        "--end",
        "2023-01-31",
        "--cert",
        str(stranger.client_p12),
        "--retries",
        "0",
    )
    assert refused.exit_code == 3
    outputs.append(refused.stdout + refused.stderr)
    text = "\n".join(outputs).encode()
    written = b"".join(p.read_bytes() for p in cli.out.rglob("*") if p.is_file())
    for haystack in (text, written):
        assert SECRET.encode() not in haystack
        assert SECRET[::-1].encode() not in haystack
        for line in key_lines:
            assert line not in haystack
    # The test's own temporary folder (conftest.private_tmpdir): only this run's files are here.
    leftovers = list(Path(tempfile.gettempdir()).glob("omar-bulk-*.pem"))
    assert leftovers == []


def test_exception_text_never_carries_the_password(
    secret_pki: tuple[TestPKI, Path, list[bytes]],
) -> None:
    from omar_bulk.errors import CertificateError
    from omar_bulk.tls import load_identity

    _, folder, _ = secret_pki
    for cert, key in [
        (folder / "client.p12", None),
        (folder / "client-cert.pem", folder / "client-key-encrypted.pem"),
    ]:
        with pytest.raises(CertificateError) as caught:
            load_identity(cert, key, password=lambda _w: SECRET + "!")
        error: BaseException | None = caught.value
        while error is not None:
            assert SECRET not in str(error) and SECRET not in repr(error)
            error = error.__cause__ or error.__context__
    identity = load_identity(folder / "client.p12", password=lambda _w: SECRET)
    assert SECRET not in repr(identity)
    assert b"PRIVATE" not in repr(identity).encode()


# --- bad input ------------------------------------------------------------------------------


def test_a_50_mb_toml_line_is_exit_2(offline_cli: Cli, tmp_path: Path) -> None:
    manifest = tmp_path / "m.toml"
    manifest.write_text(
        "[[pull]]\nmeters = ['" + "M" * 50_000_000 + "']\nstart = 2024-01-01\nend = 2024-01-02\n"
    )
    outcome = offline_cli("fetch", str(manifest), "--base-url", "https://127.0.0.1:9/")
    assert outcome.exit_code == 2
    assert f"{manifest}:1: id longer than" in outcome.stderr


def test_a_binary_manifest_through_the_cli_is_exit_2(offline_cli: Cli, tmp_path: Path) -> None:
    manifest = tmp_path / "m.toml"
    manifest.write_bytes(os.urandom(4096) + b"\x00")
    outcome = offline_cli("fetch", str(manifest), "--base-url", "https://127.0.0.1:9/")
    assert outcome.exit_code == 2 and "not a text file" in outcome.stderr


def test_a_protected_certificate_without_terminal_or_password_is_exit_2(
    pki: TestPKI, tmp_path: Path
) -> None:
    """No terminal to ask on and no OMAR_CERT_PASSWORD: a clear message, not a hang."""
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "omar_bulk",
            "fetch",
            "--meter",
            "A",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-02",
            "--base-url",
            "https://127.0.0.1:9/",
            "--cert",
            str(pki.client_p12),
            "--out",
            str(tmp_path / "out"),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "OMAR_CERT_PASSWORD"},
    )
    assert process.returncode == 2 and "OMAR_CERT_PASSWORD" in process.stderr
