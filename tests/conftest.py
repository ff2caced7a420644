"""Fixtures: a stand-in PKI, a stand-in server per test, and a way to run the CLI in-process.

Everything here stays on loopback and in temporary folders of the test's own: nothing another
process left in the machine's shared temporary folder can change an outcome.

A test that needs something of the machine (a command, root or user namespaces) skips with the
reason where it is missing. In CI (``CI=true``; ``.ci/run`` sets it) every skip is a failure:
there the machine is meant to have everything, and a silent skip would hide a lost test.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omar_bulk.cli import app
from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import Faults, ServerThread, body_for, serve_in_thread

LOOPBACK = {"localhost", "127.0.0.1", "::1", b"localhost", b"127.0.0.1", b"::1", None}

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """In CI a skipped test is a failed one, with the skip's reason."""
    report = yield
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        reason = str(reason).removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {reason}"
    return report


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``make mutation``, run a mutant's tests fastest first.

    mutmut runs each mutant's tests with ``-x``: the first failure kills the mutant, so the
    quick unit tests should get their chance before a slow end-to-end test that reaches the
    same function. The times are those mutmut recorded (``mutmut-stats.json`` in its working
    folder); a test it has no time for goes first. Ordinary runs are left as they are.
    """
    if os.environ.get("MUTANT_UNDER_TEST", "") in ("", "stats", "list_all_tests", "fail"):
        return
    try:
        with open("mutmut-stats.json", encoding="utf-8") as handle:
            times: dict[str, float] = json.load(handle)["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return
    items.sort(key=lambda item: times.get(item.nodeid, 0.0))


def need_command(name: str) -> str:
    """The path of a command this test needs; skip the test, saying so, where it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"needs the {name} command, not found on PATH")
    return path


def need_mount_namespace() -> list[str]:
    """An ``unshare`` prefix giving a private mount namespace (as root, or through a user
    namespace otherwise); skip the test, saying why, where the machine allows neither."""
    command = [need_command("unshare"), "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        command.append("--map-root-user")
    try:
        probe = subprocess.run(
            [*command, "true"], capture_output=True, text=True, timeout=10, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.skip("needs a private mount namespace: unshare did not answer in 10 s")
    if probe.returncode != 0:
        who = "root" if os.geteuid() == 0 else "user namespaces"
        pytest.skip(
            f"needs a private mount namespace ({who}): {probe.stderr.strip() or probe.returncode}"
        )
    return command


@pytest.fixture(autouse=True)
def private_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own temporary folder, for this process (``tempfile``) and its children
    (``TMPDIR``): a file left by a killed run elsewhere on the machine is never seen here."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never resolve, and so never reach, any host but this machine."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host not in LOOPBACK:
            raise socket.gaierror(socket.EAI_NONAME, f"tests are loopback only, not {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.fixture(autouse=True)
def no_inherited_proxy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The machine's own proxy settings (a developer behind a corporate proxy) never reach a
    test: each starts direct, with a netrc file that is not there; proxy tests set their own."""
    from omar_bulk.proxy import ENVIRONMENT, NO_PROXY_VARIABLES

    for name in (*ENVIRONMENT, *NO_PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


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


def assert_verified(out: Path, *, state_dir: Path | None = None) -> None:
    """``omar-bulk verify OUT`` (with ``--state-dir`` if given) finds every promise of the
    archive holding: exit 0, no problem listed."""
    argv = ["verify", str(out), "--json"]
    if state_dir is not None:
        argv += ["--state-dir", str(state_dir)]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.stdout + result.stderr
    found = json.loads(result.stdout)
    assert found["ok"] is True and found["problems"] == [], found


# -- an output folder of release 0.1.0, and its journal ------------------------------------------

#: The output folder release 0.1.0 wrote (``fixtures/make_out_0_1_0.py`` says how).
FIXTURE_0_1_0 = Path(__file__).parent / "fixtures" / "out-0.1.0"


def state_of(out: Path) -> Path:
    """The state folder of ``out`` when it is kept inside it."""
    return out / ".omar-bulk"


def user_version(path: Path) -> int:
    """The format version an SQLite journal says it has."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def rows(path: Path, table: str = "items") -> list[tuple[object, ...]]:
    """Every row of a journal's table, sorted."""
    db = sqlite3.connect(path)
    try:
        return sorted(db.execute(f"SELECT * FROM {table}"))
    finally:
        db.close()


# -- a file outside OUT that a planted link points at ---------------------------------------------

SECRET = b"root's precious file\n"


def victim(tmp_path: Path, mode: int = 0o644) -> Path:
    """A file outside OUT that a planted link points at."""
    target = tmp_path / "elsewhere" / "precious"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(SECRET)
    target.chmod(mode)
    return target


def untouched(target: Path, mode: int = 0o644) -> bool:
    """The planted link's target still holds its bytes, its mode and a single link."""
    info = target.stat()
    return (
        target.read_bytes() == SECRET
        and stat.S_IMODE(info.st_mode) == mode
        and (info.st_nlink == 1)
    )
