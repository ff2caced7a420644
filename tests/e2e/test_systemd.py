"""The systemd units in contrib/systemd: hardened as documented, their command line one that
omar-bulk accepts, and valid to systemd itself where ``systemd-analyze`` is installed
(Debian's ``systemd`` package)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from ..conftest import Cli

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
SERVICE = UNITS / "omar-bulk-daily.service"
TIMER = UNITS / "omar-bulk-daily.timer"
VERIFY = UNITS / "omar-bulk-verify.service"
VERIFY_TIMER = UNITS / "omar-bulk-verify.timer"
INSTALLED = "/opt/omar-bulk/bin/omar-bulk"


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file's sections, each a list of (key, value) in order (keys may repeat), with
    continuation lines joined and comments left out, as systemd reads them."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path}: {line!r} before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: {line!r} is not KEY=VALUE"
        current.append((key.strip(), value.strip()))
    assert not pending, f"{path}: ends in a continuation"
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [value for name, value in section if name == key]


def one(section: list[tuple[str, str]], key: str) -> str:
    found = values(section, key)
    assert len(found) == 1, f"{key}: {found}"
    return found[0]


def test_the_service_is_hardened_as_documented() -> None:
    """A user of its own, the password as a credential file, the file system read-only but for
    OUT (with its state folder) and the metrics folder, no new privileges, a private /tmp."""
    service = parse_unit(SERVICE)["Service"]
    assert one(service, "Type") == "oneshot"
    assert one(service, "User") == "omar-bulk"
    credential = one(service, "LoadCredential")
    name, _, source = credential.partition(":")
    assert source.startswith("/")
    assert f"OMAR_CERT_PASSWORD_FILE=%d/{name}" in values(service, "Environment")
    assert not any(v.startswith("OMAR_CERT_PASSWORD=") for v in values(service, "Environment"))
    assert one(service, "ProtectSystem") == "strict"
    assert one(service, "PrivateTmp") == "yes"
    assert one(service, "NoNewPrivileges") == "yes"
    assert one(service, "ProtectHome") == "yes"
    assert one(service, "UMask") == "0077"
    # "-": a folder that does not exist is let pass by systemd (omar-bulk names it)
    writable = [path.removeprefix("-") for path in one(service, "ReadWritePaths").split()]
    command = shlex.split(one(service, "ExecStart"))
    out = command[command.index("--out") + 1]
    metrics = command[command.index("--metrics") + 1]
    assert out in writable  # the state folder, OUT/.omar-bulk, is inside it
    assert str(Path(metrics).parent) in writable
    assert set(writable) == {out, str(Path(metrics).parent)}  # and nothing else


def test_the_timer_runs_every_morning_and_catches_up_after_a_missed_one() -> None:
    timer = parse_unit(TIMER)
    assert one(timer["Timer"], "Persistent") == "true"
    assert one(timer["Timer"], "OnCalendar") == "*-*-* 06:15:00"
    assert one(timer["Timer"], "Unit") == SERVICE.name
    assert one(timer["Install"], "WantedBy") == "timers.target"
    assert "Install" not in parse_unit(SERVICE)  # started by the timer only


def test_the_service_command_line_is_one_omar_bulk_accepts(
    offline_cli: Cli, tmp_path: Path
) -> None:
    """The ExecStart's options, with the manifest and folders moved here, in a dry run."""
    command = shlex.split(one(parse_unit(SERVICE)["Service"], "ExecStart"))
    assert command[0] == INSTALLED and command[1] == "fetch"
    manifest = tmp_path / "daily.toml"
    manifest.write_text('[[pull]]\nmeters = ["M1"]\nstart = 2024-01-01\nend = "yesterday"\n')
    moved = {
        command[2]: str(manifest),
        command[command.index("--out") + 1]: str(tmp_path / "out"),
    }
    metrics = command[command.index("--metrics") + 1]
    moved[metrics] = str(tmp_path / Path(metrics).name)
    args = [moved.get(arg, arg) for arg in command[1:]]
    outcome = offline_cli(*args, "--dry-run", auth=False)
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stdout.count("https://") >= 1


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    """systemd's own judgement: no unknown key, no bad value, an executable command. Where
    systemd-analyze is missing the tests above still ran, and a warning says what did not."""
    analyzer = shutil.which("systemd-analyze")
    if analyzer is None:
        warnings.warn(
            "systemd-analyze is not installed (Debian's systemd package): the units were"
            " checked by omar-bulk's tests only, not by systemd's parser",
            stacklevel=1,
        )
        return
    for unit in (SERVICE, TIMER, VERIFY, VERIFY_TIMER):
        text = unit.read_text(encoding="utf-8")
        # The installed path does not exist here: run this Python's omar-bulk instead.
        text = text.replace(INSTALLED, f"{sys.executable} -m omar_bulk")
        (tmp_path / unit.name).write_text(text, encoding="utf-8")
    done = subprocess.run(
        [analyzer, "verify", "--man=no",
         *(str(tmp_path / unit.name) for unit in (SERVICE, TIMER, VERIFY, VERIFY_TIMER))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # warnings (an unknown key) count too


def test_the_status_metrics_go_to_the_textfile_folder_the_fetch_writes_to() -> None:
    """After the fetch, however it ended, the archive's status is written for Prometheus into
    the same textfile folder, renamed into place; that folder is the service's to write."""
    service = parse_unit(SERVICE)["Service"]
    command = shlex.split(one(service, "ExecStart"))
    textfile = str(Path(command[command.index("--metrics") + 1]).parent)
    after = shlex.split(one(service, "ExecStopPost"))
    assert after[:2] == ["/bin/sh", "-c"]
    script = shlex.split(after[2])
    assert script[:3] == [INSTALLED, "status", command[command.index("--out") + 1]]
    assert "--prometheus" in script
    assert script[script.index(">") + 1] == f"{textfile}/omar_bulk_status.prom.tmp"
    assert script[-3:] == ["mv", f"{textfile}/omar_bulk_status.prom.tmp",
                           f"{textfile}/omar_bulk_status.prom"]  # fmt: skip


def test_the_weekly_verify_reads_the_same_archive_and_writes_nothing() -> None:
    daily = shlex.split(one(parse_unit(SERVICE)["Service"], "ExecStart"))
    service = parse_unit(VERIFY)["Service"]
    command = shlex.split(one(service, "ExecStart"))
    assert command == [INSTALLED, "verify", daily[daily.index("--out") + 1]]
    assert one(service, "User") == "omar-bulk"
    assert one(service, "ProtectSystem") == "strict"
    assert values(service, "ReadWritePaths") == []
    timer = parse_unit(VERIFY_TIMER)
    assert one(timer["Timer"], "Persistent") == "true"
    assert one(timer["Timer"], "Unit") == VERIFY.name
    assert one(timer["Install"], "WantedBy") == "timers.target"
