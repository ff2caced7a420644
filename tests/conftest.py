"""Fixtures: a stand-in PKI, a stand-in server per test, and a way to run the CLI in-process.

Everything here stays on loopback and in temporary folders.
"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omar_bulk.cli import app
from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import Faults, ServerThread, body_for, serve_in_thread

LOOPBACK = {"localhost", "127.0.0.1", "::1", b"localhost", b"127.0.0.1", b"::1", None}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never resolve, and so never reach, any host but this machine."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host not in LOOPBACK:
            raise socket.gaierror(socket.EAI_NONAME, f"tests are loopback only, not {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def faults() -> Faults:
    return Faults(retry_after=0)


@pytest.fixture
def server(pki: TestPKI, faults: Faults) -> Iterator[ServerThread]:
    with serve_in_thread(pki, faults) as running:
        yield running


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None


@dataclass
class Cli:
    """Runs ``omar-bulk`` in-process against the stand-in, with its certificates."""

    pki: TestPKI
    out: Path
    server: ServerThread | None = None

    def __call__(self, *args: str, env: dict[str, str] | None = None, auth: bool = True) -> Outcome:
        argv = list(args)
        if auth and argv and argv[0] == "fetch":
            extra = [] if "--out" in argv else ["--out", str(self.out)]
            if "--retry-wait" not in argv:
                extra += ["--retry-wait", "0.01"]
            if self.server is not None and "--base-url" not in argv:
                extra += ["--base-url", self.server.base_url]
            if "--cert" not in argv:
                extra += ["--cert", str(self.pki.client_p12)]
            if "--ca-bundle" not in argv:
                extra += ["--ca-bundle", str(self.pki.ca)]
            argv += extra
        environment = {"OMAR_CERT_PASSWORD": DEMO_PASSWORD}
        environment.update(env or {})
        result = CliRunner().invoke(app, argv, env=environment)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Outcome(result.exit_code, result.stdout, result.stderr, result.exception)


@pytest.fixture
def cli(pki: TestPKI, tmp_path: Path, server: ServerThread) -> Cli:
    return Cli(pki, tmp_path / "out", server)


@pytest.fixture
def offline_cli(pki: TestPKI, tmp_path: Path) -> Cli:
    """The CLI with no server at all: for input errors that must not reach the network."""
    return Cli(pki, tmp_path / "out", None)


def expected_body(
    kind: str,
    ident: str,
    start: date,
    end: date,
    fmt: str = "mdef",
    time_type: str = "PST",
    faults: Faults | None = None,
) -> bytes:
    return body_for(fmt, kind, ident, start, end, time_type, faults)


def standin_args(server: ServerThread, pki: TestPKI) -> list[str]:
    """The options that point a ``fetch`` at this stand-in with its client certificate."""
    return [
        "--base-url",
        server.base_url,
        "--cert",
        str(pki.client_p12),
        "--ca-bundle",
        str(pki.ca),
    ]


def journal_rows(out: Path) -> dict[str, tuple[str, int, str | None]]:
    db = sqlite3.connect(out / ".omar-bulk" / "journal.sqlite3")
    try:
        return {
            path: (status, size, sha)
            for path, status, size, sha in db.execute(
                "SELECT path, status, bytes, sha256 FROM items"
            )
        }
    finally:
        db.close()


def data_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and ".omar-bulk" not in p.parts)
