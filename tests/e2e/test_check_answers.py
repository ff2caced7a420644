"""What ``check`` makes of the server's answers to its login: a redirect that ``fetch`` would
refuse makes it not ready, and the server's reason phrase is shown escaped. (The rest of
``check`` is in test_check.py.)"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from omar_bulk.check import run_check
from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import Faults, serve_in_thread

from ..conftest import Cli

M1_Q1 = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-03-31"]


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
