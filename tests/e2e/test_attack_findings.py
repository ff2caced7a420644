"""Findings of a hostile review of 0.2.0: each test fails on the code as merged.

Every test here states a promise of README.md or docs/RELIABILITY.md and the way it broke.
They are meant to pass once the lead fixes the code, and then to stay.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from omar_bulk import Settings, fetch, load_manifest
from omar_bulk.answers import Head, login_redirect
from omar_bulk.check import run_check
from omar_bulk.errors import OmarBulkError
from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import Faults, ServerThread, serve_in_thread

from ..conftest import Cli, data_files

M1_Q1 = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-03-31"]


# -- a login redirect the client cannot parse ------------------------------------------------


@pytest.mark.parametrize(
    "location",
    ["https://127.0.0.1:99999/", "https://[::1/", "https://127.0.0.1:notaport/"],
    ids=["port-out-of-range", "broken-ipv6", "port-not-a-number"],
)
def test_a_malformed_login_redirect_is_an_omar_bulk_error_not_a_traceback(location: str) -> None:
    """A hostile login answering ``302 Location: https://127.0.0.1:99999/`` made ``fetch``
    die with an ExceptionGroup traceback (exit 1, no report, no --metrics file) and
    ``check`` with a ValueError traceback: urlsplit's ``.port`` and the IPv6 check raise
    ValueError, which nothing translates."""
    head = Head(status=302, reason="Found", location=location)
    with pytest.raises(OmarBulkError):
        login_redirect("https://127.0.0.1:8444/", head)


# -- check and fetch judge the login differently ----------------------------------------------


@pytest.mark.parametrize(("fault", "fetch_code"), [("http", 3), ("elsewhere", 3), ("loop", 1)])
def test_check_is_not_ready_when_fetch_refuses_the_login(
    pki: TestPKI, cli: Cli, fault: str, fetch_code: int
) -> None:
    """``check`` follows login redirects with its own rule (same netloc, any scheme; a loop
    just stops) and says "ready", exit 0, where ``fetch`` aborts with 3 (http, elsewhere)
    or 1 (a loop). The preflight must not pass a server the run will refuse."""
    with serve_in_thread(pki, Faults(login=[f"{fault}*"])) as hostile:
        fetched = cli("fetch", *M1_Q1, "--base-url", hostile.base_url, "--retries", "0")
        assert fetched.exit_code == fetch_code, fetched.stderr
        report = run_check(
            base_url=hostile.base_url,
            cert=pki.client_p12,
            key=None,
            ca_bundle=pki.ca,
            password=lambda _what: DEMO_PASSWORD,
            timeout=5,
        )
    assert report.exit_code == fetch_code, [(c.name, c.verdict, c.reason) for c in report.checks]


# -- check prints the server's reason phrase raw ----------------------------------------------


@pytest.fixture
def raw_tls_server(pki: TestPKI) -> Iterator[tuple[str, list[bytes]]]:
    """A loopback TLS server answering every request with the bytes put in the list."""
    answer: list[bytes] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pki.server))
    context.load_verify_locations(cafile=str(pki.ca))
    context.verify_mode = ssl.CERT_OPTIONAL
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                plain, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                plain.settimeout(5)
                with context.wrap_socket(plain, server_side=True) as tls:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        piece = tls.recv(4096)
                        if not piece:
                            break
                        request += piece
                    tls.sendall(answer[0])
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{port}/", answer
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@pytest.mark.parametrize("status", [403, 500])
def test_check_shows_the_servers_reason_phrase_escaped(
    cli: Cli, raw_tls_server: tuple[str, list[bytes]], status: int
) -> None:
    """``fetch`` shows ``\\x1b]0;owned\\x07`` escaped; ``check`` printed the OSC title
    sequence and BEL raw to the terminal ("the login answered 500 Oops ^[]0;owned^G")."""
    url, answer = raw_tls_server
    answer.append(
        f"HTTP/1.1 {status} Oops \x1b]0;owned\x07 \u202e\r\nContent-Length: 0\r\n"
        "Connection: close\r\n\r\n".encode("latin-1", "replace")
    )
    outcome = cli("check", "--base-url", url, "--cert", str(cli.pki.client_p12),
                  "--ca-bundle", str(cli.pki.ca), "--timeout", "5")  # fmt: skip
    assert "our certificate" in outcome.stdout, outcome.stdout
    assert "\x1b" not in outcome.stdout and "\x07" not in outcome.stdout, repr(outcome.stdout)


# -- --metrics may name the journal -----------------------------------------------------------


def test_metrics_never_overwrite_the_journal(cli: Cli) -> None:
    """``fetch --metrics OUT/.omar-bulk/journal.sqlite3`` (a typo, a tab completion) replaced
    the journal with Prometheus text; the next run set it aside as damaged and rebuilt it from
    the last report only, forgetting every file that report did not list. Refuse it (exit 2)
    or at least leave the journal alone, as every other path inside OUT/.omar-bulk."""
    assert cli("fetch", *M1_Q1).exit_code == 0
    journal = cli.out / ".omar-bulk" / "journal.sqlite3"
    cli("fetch", *M1_Q1, "--metrics", str(journal))
    assert journal.read_bytes()[:16] == b"SQLite format 3\x00"


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


# -- the dry run and the real run disagree ----------------------------------------------------


def test_the_dry_run_lists_what_the_real_run_requests_after_the_journal_is_lost(
    cli: Cli, server: ServerThread
) -> None:
    """With the journal deleted but the last report present, the real run rebuilds the
    journal from the verified files and requests nothing; ``--dry-run`` listed every URL
    ("every URL a run would request"), and warned of nothing."""
    assert cli("fetch", *M1_Q1).exit_code == 0
    for name in ("journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm"):
        (cli.out / ".omar-bulk" / name).unlink(missing_ok=True)
    dry = cli("fetch", *M1_Q1, "--dry-run")
    assert dry.exit_code == 0
    listed = [line for line in dry.stdout.splitlines() if line.startswith("https://")]
    before = len(server.state.downloads())
    assert cli("fetch", *M1_Q1).exit_code == 0
    requested = len(server.state.downloads()) - before
    assert len(listed) == requested, (listed, requested)


# -- a run dies with its stderr ----------------------------------------------------------------


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


# -- the library from inside an event loop ----------------------------------------------------


def test_fetch_called_inside_an_event_loop_says_to_use_fetch_async(
    pki: TestPKI, server: ServerThread, tmp_path: Path
) -> None:
    """README: "fetch(settings) # blocking; fetch_async() for event loops". Called from a
    coroutine, fetch raised asyncio's bare "Cannot run the event loop while another loop is
    running" and left a never-awaited ``fetch_async`` coroutine warning behind."""
    manifest = tmp_path / "m.toml"
    manifest.write_text('[[pull]]\nmeters = ["M1"]\nstart = 2024-01-01\nend = 2024-01-31\n')
    settings = Settings(
        plan=load_manifest(manifest),
        base_url=server.base_url,
        out_dir=tmp_path / "out",
        cert=pki.client_p12,
        ca_bundle=pki.ca,
        password=lambda _what: DEMO_PASSWORD,
    )

    async def inside() -> str:
        try:
            fetch(settings)
        except Exception as exc:  # the message is what is under test
            return str(exc)
        return ""

    assert "fetch_async" in asyncio.run(inside())


def test_status_refuses_json_and_prometheus_together(cli: Cli) -> None:
    """Both print the whole view; one of them was silently dropped."""
    assert cli("fetch", *M1_Q1).exit_code == 0
    outcome = cli("status", str(cli.out), "--json", "--prometheus")
    assert outcome.exit_code == 2 and "choose one" in outcome.stderr


def test_the_metrics_file_is_replaced_atomically_and_readable_by_a_collector(
    cli: Cli, tmp_path: Path
) -> None:
    """A planted link at any predictable temporary name is never followed; the file is 0644."""
    metrics = tmp_path / "prom" / "omar.prom"
    metrics.parent.mkdir()
    outside = tmp_path / "outside"
    outside.write_text("keep me")
    for pid_guess in range(5):
        (metrics.parent / f"omar.prom.{pid_guess}").symlink_to(outside)
    assert cli("fetch", *M1_Q1, "--metrics", str(metrics)).exit_code == 0
    assert outside.read_text() == "keep me"
    assert metrics.stat().st_mode & 0o777 == 0o644
    assert "omar_bulk_fetch" in metrics.read_text()
    assert not [p for p in metrics.parent.iterdir() if p.name.endswith(".tmp")]
