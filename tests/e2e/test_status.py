"""``status`` tells the truth: from any working folder, about an empty archive, and about a
manifest fetched with other planning options. Every command also runs with relative paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import Faults, ServerThread

from ..conftest import Cli, data_files

MANIFEST = '[[pull]]\nmeters = ["M1", "M2"]\nstart = 2024-01-01\nend = 2024-02-29\n'


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder, as a user has one: every path below is relative to it."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    (folder / "m.toml").write_text(MANIFEST)
    return folder


@pytest.fixture
def rel_cli(pki: TestPKI, server: ServerThread, here: Path) -> Cli:
    """The CLI with OUT at the default ``omar-data``, relative to the working folder."""
    return Cli(pki, Path("omar-data"), server)


def test_status_reads_the_default_and_relative_folders(rel_cli: Cli, here: Path) -> None:
    """``status``, ``status omar-data`` and ``status ./omar-data --json`` after a fetch there."""
    fetched = rel_cli("fetch", "m.toml", "--report", "reports/run.json")
    assert fetched.exit_code == 0, fetched.stderr
    assert len(data_files(here / "omar-data")) == 4
    assert (here / "reports" / "run.json").is_file()
    for args in ([], ["omar-data"], ["./omar-data"]):
        shown = rel_cli("status", *args)
        assert shown.exit_code == 0, shown.stderr
        assert "2 series, 4 files: 4 downloaded" in shown.stdout
    view = json.loads(rel_cli("status", "./omar-data", "--json").stdout)
    assert view["complete"] is True and view["totals"]["downloaded"] == 4
    planned = rel_cli("status", "--manifest", "m.toml")
    assert planned.exit_code == 0, planned.stdout


def test_a_dry_run_over_a_relative_folder_with_a_journal(rel_cli: Cli) -> None:
    assert rel_cli("fetch", "m.toml").exit_code == 0
    dry = rel_cli("fetch", "m.toml", "--dry-run")
    assert dry.exit_code == 0 and dry.stdout == ""  # everything is done: nothing to request


def test_a_dry_run_into_a_new_relative_folder(rel_cli: Cli, here: Path) -> None:
    dry = rel_cli("fetch", "m.toml", "--dry-run")
    assert dry.exit_code == 0 and len(dry.stdout.splitlines()) == 4
    assert not (here / "omar-data").exists()


def test_status_after_a_run_that_reached_no_server_is_not_complete(
    offline_cli: Cli, tmp_path: Path
) -> None:
    """Nothing fetched is not complete: exit 1, and a message that says so."""
    unreachable = offline_cli(
        "fetch",
        "--meter",
        "M1",
        "--start",
        "2024-01",
        "--end",
        "2024-02",
        "--base-url",
        "https://127.0.0.1:9/",
        "--retries",
        "0",
    )
    assert unreachable.exit_code == 1
    assert (offline_cli.out / ".omar-bulk" / "journal.sqlite3").is_file()
    shown = offline_cli("status", str(offline_cli.out))
    assert shown.exit_code == 1
    assert "nothing has been fetched into" in shown.stdout and "incomplete" in shown.stdout
    view = json.loads(offline_cli("status", str(offline_cli.out), "--json").stdout)
    assert view["complete"] is False and view["series"] == []
    assert any("nothing has been fetched" in note for note in view["notes"])


def test_a_month_that_grew_since_the_fetch_is_named_so_not_blamed_on_the_options(
    cli: Cli, tmp_path: Path
) -> None:
    """A daily manifest ending `today`: the next morning the current month's file is planned a
    day longer. status says it grew and the next fetch brings it, and sends nobody looking
    for another --chunk; a file of another chunking with the same start is not "grown"."""
    manifest = tmp_path / "daily.toml"
    manifest.write_text('[[pull]]\nmeters = ["M1"]\nstart = "2024-02-01"\nend = "today"\n')
    assert cli("fetch", str(manifest), "--today", "2024-03-05").exit_code == 0
    later = cli("status", str(cli.out), "--manifest", str(manifest), "--today", "2024-03-06")
    assert later.exit_code == 1
    note = " ".join(later.stdout.split())
    assert "1 planned files have grown since they were fetched" in note
    assert "the next fetch brings them" in note
    assert "give status the same options" not in note
    weekly = cli("status", str(cli.out), "--manifest", str(manifest), "--today", "2024-03-06",
                 "--chunk", "week")  # fmt: skip
    words = " ".join(weekly.stdout.split())
    assert "grown" not in words and "give status the same options" in words


def test_status_plans_the_manifest_as_the_fetch_did(cli: Cli, tmp_path: Path) -> None:
    """A fetch with --format csv --chunk week, then status: with the same options it is
    complete; without them it says why everything looks missing."""
    manifest = tmp_path / "m.toml"
    manifest.write_text(MANIFEST)
    planning = ["--format", "csv", "--chunk", "week"]
    assert cli("fetch", str(manifest), *planning).exit_code == 0
    same = cli("status", str(cli.out), "--manifest", str(manifest), *planning)
    assert same.exit_code == 0, same.stdout
    assert "note:" not in same.stdout
    other = cli("status", str(cli.out), "--manifest", str(manifest))
    assert other.exit_code == 1
    note = " ".join(other.stdout.split())  # the console may wrap it
    assert "4 planned files are missing, but the journal holds other files of the same ids" in note
    assert "(csv PST)" in note and "give status the same options" in note
    view = json.loads(cli("status", str(cli.out), "--manifest", str(manifest), "--json").stdout)
    assert view["complete"] is False and len(view["notes"]) == 1


def test_status_resolves_relative_dates_as_of_today(offline_cli: Cli, tmp_path: Path) -> None:
    """``status --today`` plans a relative manifest as the fetch with the same ``--today``
    did: the missing months are those of that day, not of the real one."""
    manifest = tmp_path / "relative.toml"
    manifest.write_text('[[pull]]\nmeters = ["M1"]\nstart = "-40d"\nend = "yesterday"\n')
    shown = offline_cli(
        "status", str(tmp_path), "--manifest", str(manifest), "--today", "2021-03-15", "--json"
    )
    assert shown.exit_code == 1  # nothing fetched: all missing
    view = json.loads(shown.stdout)
    (series,) = view["series"]
    assert sorted(series["months"]) == ["2021-02", "2021-03"]  # 2021-02-03 to 2021-03-14
    assert series["files"]["missing"] == 2
    assert view["totals"]["missing"] == 2


def test_status_refuses_a_bad_planning_option(offline_cli: Cli, tmp_path: Path) -> None:
    manifest = tmp_path / "m.toml"
    manifest.write_text(MANIFEST)
    outcome = offline_cli("status", str(tmp_path), "--manifest", str(manifest), "--chunk", "year")
    assert outcome.exit_code == 2 and "unknown chunk" in outcome.stderr


def test_serve_fetch_and_status_as_processes_in_a_working_folder(tmp_path: Path) -> None:
    """Real processes, real working folder: serve --certs, fetch --cert/--out, status."""
    env = {"OMAR_CERT_PASSWORD": DEMO_PASSWORD, "PATH": "/usr/bin:/bin"}
    server = subprocess.Popen(
        [sys.executable, "-m", "omar_bulk", "serve", "--port", "0", "--certs", "certs"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        assert first.startswith("stand-in OMAR-Online listening at https://127.0.0.1:")
        base_url = first.rsplit(" ", 1)[1].strip()

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "omar_bulk", *args],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        fetched = run(
            "fetch",
            "--base-url",
            base_url,
            "--cert",
            "certs/client.pem",
            "--ca-bundle",
            "certs/ca.pem",
            "--meter",
            "M1",
            "--start",
            "2024-01",
            "--end",
            "2024-02",
        )
        assert fetched.returncode == 0, fetched.stderr
        assert len(data_files(tmp_path / "omar-data")) == 2
        shown = run("status")
        assert shown.returncode == 0, shown.stderr
        assert "1 series, 2 files: 2 downloaded" in shown.stdout
    finally:
        server.send_signal(2)
        server.wait(timeout=10)


def test_demo_into_a_relative_folder_then_status(tmp_path: Path) -> None:
    """``demo --out rel`` from a working folder, and ``status rel`` over what it made."""
    demo = subprocess.run(
        [sys.executable, "-m", "omar_bulk", "demo", "--out", "demo-rel", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr
    assert len(data_files(tmp_path / "demo-rel")) == 96
    shown = subprocess.run(
        [sys.executable, "-m", "omar_bulk", "status", "demo-rel", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 1, shown.stderr  # the demo's retired meter fails on purpose
    assert json.loads(shown.stdout)["totals"]["downloaded"] == 96


def test_failure_text_from_the_journal_is_shown_escaped() -> None:
    """An error recorded from a server's answer may hold escape sequences: shown, not run."""
    from rich.console import Console

    from omar_bulk.coverage import SEVERITY, Coverage, Failure
    from omar_bulk.progress import render_coverage

    view = Coverage(
        out=Path("omar-data"),
        series=(),
        totals=dict.fromkeys(SEVERITY, 0),
        revisions=0,
        failures=(Failure("meter/M1/x.mdef", "HTTP 503 \x1b]0;owned\x07\x1b[2J\u202e"),),
        last_fetch=None,
    )
    console = Console(record=True, width=200, force_terminal=False)
    render_coverage(view, console)
    shown = console.export_text()
    assert "HTTP 503 \\x1b]0;owned\\x07\\x1b[2J\\u202e" in shown
    assert "\x1b" not in shown and "\u202e" not in shown


M1_Q1 = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-03-31"]


def test_status_refuses_json_and_prometheus_together(cli: Cli) -> None:
    """Both print the whole view; one of them was silently dropped."""
    assert cli("fetch", *M1_Q1).exit_code == 0
    outcome = cli("status", str(cli.out), "--json", "--prometheus")
    assert outcome.exit_code == 2 and "choose one" in outcome.stderr


def _status(cli: Cli, manifest: Path, *extra: str) -> int:
    return cli("status", str(cli.out), "--manifest", str(manifest), *extra, auth=False).exit_code


def test_an_id_dropped_from_the_manifest_does_not_keep_status_failing(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    """A meter that was retired answers 404; the user takes it out of the daily manifest.
    The fetch is then clean (exit 0), but ``status --manifest`` keeps counting the dropped
    meter's old failure: exit 1 every morning, for something no run will ever try again (the
    very thing issue 12 set out to end). With ``--manifest``, status should judge what the
    manifest plans."""
    faults.script = {"M9": ["404*"]}
    manifest = tmp_path / "daily.toml"
    manifest.write_text('[[pull]]\nmeters = ["M1", "M9"]\nstart = 2024-01-01\nend = 2024-01-31\n')
    assert cli("fetch", str(manifest)).exit_code == 1
    manifest.write_text('[[pull]]\nmeters = ["M1"]\nstart = 2024-01-01\nend = 2024-01-31\n')
    assert cli("fetch", str(manifest)).exit_code == 0
    assert _status(cli, manifest) == 0


def test_status_without_the_fetchs_state_dir_says_where_to_look(cli: Cli, tmp_path: Path) -> None:
    """``fetch --state-dir S`` then ``status OUT`` (the flag forgotten once, or cron's
    environment without OMAR_STATE_DIR): "OUT has no omar-bulk journal: nothing was fetched
    there yet", exit 2, while OUT holds the files. The message should say the journal may
    be in another state folder (--state-dir / OMAR_STATE_DIR), not that nothing was fetched."""
    where = ["--state-dir", str(tmp_path / "state"), "--meter", "M1", "--start", "2024-01-01",
             "--end", "2024-01-31"]  # fmt: skip
    assert cli("fetch", *where).exit_code == 0
    view = cli("status", str(cli.out), auth=False)
    assert view.exit_code != 0
    assert "nothing was fetched" not in view.stderr
    assert "--state-dir" in view.stderr or "OMAR_STATE_DIR" in view.stderr
