"""Operating omar-bulk: help that says what to type, shell completion that does nothing else,
and a wheel that carries every command."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omar_bulk.cli import app
from omar_bulk.standin.certs import TestPKI

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("fetch", "check", "status", "serve", "demo")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_what_to_type_not_python_types(command: str) -> None:
    shown = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    options = [line for line in shown.stdout.splitlines() if line.lstrip().startswith("--")]
    assert options
    for line in options:
        assert not re.search(r"<(str|int|float|path|list\[str\])>", line), line


def test_fetch_help_uses_the_usual_metavars() -> None:
    shown = CliRunner().invoke(app, ["fetch", "--help"], env={"COLUMNS": "200"}).stdout
    for expected in (
        "--meter ID",
        "--start DATE",
        "--concurrency N",
        "--out DIR",
        "--cert FILE",
        "--base-url URL",
        "--metrics FILE",
        "[MANIFEST]",
    ):
        assert expected in shown, expected


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback port that records whether anyone connected to it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


@pytest.mark.parametrize(
    "words",
    [
        "omar-bulk fetch --meter M1 --start 2024-01-01 --end 2024-01-31 {auth} --out {out} --",
        "omar-bulk check {auth} --",
        "omar-bulk status {out} --",
        "omar-bulk ",
    ],
    ids=["fetch", "check", "status", "commands"],
)
def test_completion_does_no_network_certificate_or_journal_work(
    pki: TestPKI, tmp_path: Path, listener: socket.socket, words: str
) -> None:
    port = listener.getsockname()[1]
    out = tmp_path / "out"
    auth = f"--base-url https://127.0.0.1:{port}/ --cert {pki.client_p12}"
    line = words.format(auth=auth, out=out)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {
        **os.environ,
        "_OMAR_BULK_COMPLETE": "complete_bash",
        "COMP_WORDS": line,
        "COMP_CWORD": str(len(line.split(" ")) - 1),
        "TMPDIR": str(scratch),
    }
    env.pop("OMAR_CERT_PASSWORD", None)  # a password prompt would hang: there is no terminal
    done = subprocess.run(
        [sys.executable, "-m", "omar_bulk"],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "completion offered nothing"
    if line.endswith("--"):
        assert "--help" in done.stdout.split()
    else:
        assert {"fetch", "check", "status"} <= set(done.stdout.split())
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected
    assert not out.exists()  # no journal, no output folder
    assert list(scratch.iterdir()) == []


def test_the_install_completion_option_is_offered() -> None:
    shown = CliRunner().invoke(app, ["--help"]).stdout
    assert "--install-completion" in shown


def test_a_wheel_built_from_the_sources_carries_every_command(tmp_path: Path) -> None:
    """What a clean clone holds (pyproject, README, the package) builds a complete wheel."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "omar_bulk", source / "omar_bulk", ignore=shutil.ignore_patterns("__pycache__")
    )
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("omar_bulk-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = archive.read(metadata).decode()
        entry_points = archive.read(metadata.replace("METADATA", "entry_points.txt")).decode()
    for module in ("cli", "check", "metrics", "tls", "demo", "standin/server", "standin/certs"):
        assert f"omar_bulk/{module}.py" in names, module
    assert "omar-bulk = omar_bulk._entry:main" in entry_points
    assert "Requires-Dist: prometheus_client" in requires.replace(
        "prometheus-client", "prometheus_client"
    )
