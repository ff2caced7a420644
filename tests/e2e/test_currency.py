"""Keeping a backfill current: relative dates, revised data, status, adaptive politeness."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import date
from pathlib import Path

import pytest

from omar_bulk.dates import california_today, parse_date
from omar_bulk.journal import Journal
from omar_bulk.manifest import Defaults, load_manifest
from omar_bulk.standin.server import Faults

from ..conftest import Cli, data_files, expected_body

TODAY = "2024-06-30"
HALF_YEAR = ["--meter", "M1", "--meter", "M2", "--start", "2024-01-01", "--end", "2024-06-30"]


# --- relative dates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "as_start", "as_end"),
    [
        ("today", date(2024, 3, 10), date(2024, 3, 10)),
        ("yesterday", date(2024, 3, 9), date(2024, 3, 9)),
        ("-60d", date(2024, 1, 10), date(2024, 1, 10)),
        ("-0d", date(2024, 3, 10), date(2024, 3, 10)),
        ("2024-02", date(2024, 2, 1), date(2024, 2, 29)),
        ("2023-12", date(2023, 12, 1), date(2023, 12, 31)),
        ("2024-02-15", date(2024, 2, 15), date(2024, 2, 15)),
    ],
)
def test_relative_dates_resolve_against_the_injected_clock(
    text: str, as_start: date, as_end: date
) -> None:
    today = date(2024, 3, 10)
    assert parse_date(text, today=today) == as_start
    assert parse_date(text, end=True, today=today) == as_end


@pytest.mark.parametrize("bad", ["2024-13", "-d", "tomorrow", "60d", "2024/01/01"])
def test_bad_relative_dates_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="bad"):
        parse_date(bad, today=date(2024, 3, 10))


def test_today_is_the_california_trade_date() -> None:
    from datetime import UTC, datetime

    # 05:00 UTC on 1 March is still 29 February in California
    assert california_today(datetime(2024, 3, 1, 5, 0, tzinfo=UTC)) == date(2024, 2, 29)
    assert california_today(datetime(2024, 3, 1, 9, 0, tzinfo=UTC)) == date(2024, 3, 1)


def test_manifests_accept_rolling_windows(tmp_path: Path) -> None:
    toml = tmp_path / "m.toml"
    toml.write_text('[[pull]]\nmeters = ["M1"]\nstart = "-60d"\nend = "yesterday"\n')
    items = list(load_manifest(toml, Defaults(today=date(2024, 3, 10))))
    # a relative start is rounded down to its chunk's first day (2024-01-10: January's 1st)
    assert (items[0].start, items[-1].end) == (date(2024, 1, 1), date(2024, 3, 9))
    csv = tmp_path / "m.csv"
    csv.write_text("kind,id,start,end\nmeter,M1,2024-01,2024-02\ngroup,G,-1d,today\n")
    items = list(load_manifest(csv, Defaults(today=date(2024, 3, 10))))
    assert [(i.kind, i.start, i.end) for i in items] == [
        ("meter", date(2024, 1, 1), date(2024, 1, 31)),
        ("meter", date(2024, 2, 1), date(2024, 2, 29)),
        ("group", date(2024, 3, 1), date(2024, 3, 10)),  # -1d: 03-09, in March
    ]


def test_the_command_line_takes_relative_dates_and_today(cli: Cli) -> None:
    outcome = cli(
        "fetch",
        "--meter",
        "M1",
        "--start",
        "-3d",
        "--end",
        "today",
        "--chunk",
        "day",
        "--today",
        "2024-03-01",
        "--dry-run",
    )
    assert outcome.exit_code == 0
    dates = [u.split("startDate=")[1].split("&")[0] for u in outcome.stdout.split()]
    assert dates == ["02%2F27%2F2024", "02%2F28%2F2024", "02%2F29%2F2024", "03%2F01%2F2024"]


# --- revised data ---------------------------------------------------------------------------


def test_changed_bytes_are_kept_in_history_and_reported_revised(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    assert cli("fetch", *HALF_YEAR, "--today", TODAY).exit_code == 0
    originals = {p: p.read_bytes() for p in data_files(cli.out)}
    faults.revision = 1  # every reading is resubmitted
    assert cli.server is not None
    before = len(cli.server.state.downloads())
    report = tmp_path / "r.json"
    outcome = cli(
        "fetch", *HALF_YEAR, "--today", TODAY, "--revisit-days", "45", "--report", str(report)
    )
    assert outcome.exit_code == 0, outcome.stderr
    asked = [s.raw_query for s in cli.server.state.downloads()[before:]]
    # 45 days before 30 June is 16 May: only May and June (ending on or after it) are asked
    starts = sorted(q.split("startDate=")[1][:14] for q in asked)
    assert starts == ["05%2F01%2F2024"] * 2 + ["06%2F01%2F2024"] * 2
    data = json.loads(report.read_text())
    assert data["summary"]["revised"] == 4 and data["summary"]["skipped"] == 8
    assert "4 revised" in outcome.stderr
    history = cli.out / ".omar-bulk" / "history"
    kept = sorted(history.rglob("*.mdef.*"))
    assert len(kept) == 4
    journal = Journal.open(cli.out / ".omar-bulk")
    try:
        key = "meter/M1/M1_20240601_20240630_PST.mdef"
        (version,) = journal.versions(key)  # the replaced version's hash, size and time
        old = next(v for p, v in originals.items() if p.name == key.rsplit("/", 1)[1])
        assert version[1] == hashlib.sha256(old).hexdigest() and version[2] == len(old)
        assert version[3] and (cli.out / version[3]).read_bytes() == old
        current = journal.get(key)
        assert current is not None and current.sha256 != version[1]
    finally:
        journal.close()
    for path, old in originals.items():
        revisited = path.name.split("_")[1] in ("20240501", "20240601")
        if revisited:
            (archived,) = [k for k in kept if k.name.startswith(path.name + ".")]
            assert archived.read_bytes() == old
            assert stat.S_IMODE(archived.stat().st_mode) == 0o600
            meter, first, last, _ = path.stem.split("_")
            start = date(int(first[:4]), int(first[4:6]), int(first[6:]))
            end = date(int(last[:4]), int(last[4:6]), int(last[6:]))
            assert path.read_bytes() == expected_body("meter", meter, start, end, faults=faults)
        else:
            assert path.read_bytes() == old


def test_identical_bytes_are_unchanged_and_left_alone(cli: Cli, tmp_path: Path) -> None:
    assert cli("fetch", *HALF_YEAR, "--today", TODAY).exit_code == 0
    stamps = {p: p.stat().st_mtime_ns for p in data_files(cli.out)}
    report = tmp_path / "r.json"
    outcome = cli(
        "fetch", *HALF_YEAR, "--today", TODAY, "--revisit-days", "45", "--report", str(report)
    )
    assert outcome.exit_code == 0
    summary = json.loads(report.read_text())["summary"]
    assert (summary["unchanged"], summary["revised"], summary["skipped"]) == (4, 0, 8)
    assert {p: p.stat().st_mtime_ns for p in data_files(cli.out)} == stamps
    assert not (cli.out / ".omar-bulk" / "history").exists()
    assert list(cli.out.rglob("*.part")) == []


def test_data_that_becomes_empty_or_appears_is_a_revision(cli: Cli, faults: Faults) -> None:
    args = [
        "--meter",
        "M1",
        "--meter",
        "M2",
        "--start",
        "2024-06-01",
        "--end",
        "2024-06-30",
        "--today",
        TODAY,
        "--revisit-days",
        "10",
    ]
    faults.script = {"M2": ["empty"]}
    assert cli("fetch", *args).exit_code == 0
    m1 = cli.out / "meter" / "M1" / "M1_20240601_20240630_PST.mdef"
    m2 = cli.out / "meter" / "M2" / "M2_20240601_20240630_PST.mdef"
    assert m1.exists() and not m2.exists()
    faults.script = {"M1": ["empty"]}  # M1 answered empty (its data stays), M2's data arrives
    outcome = cli("fetch", *args)
    assert outcome.exit_code == 1  # an empty answer never replaces data (test_accounting.py)
    assert "1 revised" in outcome.stderr
    assert m1.exists() and m2.exists()
    assert list((cli.out / ".omar-bulk" / "history").rglob("M1_*")) == []


def test_a_failed_revisit_keeps_the_file_and_shows_in_status(cli: Cli, faults: Faults) -> None:
    assert cli("fetch", *HALF_YEAR, "--today", TODAY).exit_code == 0
    june = cli.out / "meter" / "M1" / "M1_20240601_20240630_PST.mdef"
    before = june.read_bytes()
    faults.script = {"M1": ["404*"]}
    outcome = cli("fetch", *HALF_YEAR, "--today", TODAY, "--revisit-days", "5")
    assert outcome.exit_code == 1
    assert june.read_bytes() == before
    status = cli("status", str(cli.out), "--json", auth=False)
    assert status.exit_code == 1
    view = json.loads(status.stdout)
    (failure,) = view["failures"]
    assert failure["path"] == "meter/M1/M1_20240601_20240630_PST.mdef"
    assert "404" in failure["error"]


def test_the_next_run_tries_a_failed_revisit_again_and_status_agrees(
    cli: Cli, faults: Faults
) -> None:
    """A revisit that failed is tried again by the next run, revisiting or not: fetch and
    status never disagree about it, and once it succeeds both are exit 0."""
    assert cli("fetch", *HALF_YEAR, "--today", TODAY).exit_code == 0
    faults.script = {"M1": ["503*"]}
    bad = cli("fetch", *HALF_YEAR, "--today", TODAY, "--revisit-days", "5", "--retries", "0")
    assert bad.exit_code == 1
    assert cli("status", str(cli.out), auth=False).exit_code == 1
    faults.script = {}
    faults.revision = 1
    assert cli.server is not None
    before = len(cli.server.state.downloads())
    ordinary = cli("fetch", *HALF_YEAR, "--today", TODAY)  # no --revisit-days
    assert ordinary.exit_code == 0, ordinary.stderr
    (asked,) = cli.server.state.downloads()[before:]
    assert "selectedMeters=M1&startDate=06%2F01%2F2024" in asked.raw_query
    assert "1 revised" in ordinary.stderr
    june = cli.out / "meter" / "M1" / "M1_20240601_20240630_PST.mdef"
    end = date(2024, 6, 30)
    assert june.read_bytes() == expected_body("meter", "M1", date(2024, 6, 1), end, faults=faults)
    assert cli("status", str(cli.out), auth=False).exit_code == 0
    before = len(cli.server.state.downloads())
    assert cli("fetch", *HALF_YEAR, "--today", TODAY).exit_code == 0
    assert len(cli.server.state.downloads()) == before  # settled: nothing more to try


def test_revisit_in_a_dry_run_lists_the_window(cli: Cli) -> None:
    assert cli("fetch", *HALF_YEAR, "--today", TODAY).exit_code == 0
    urls = cli(
        "fetch", *HALF_YEAR, "--today", TODAY, "--revisit-days", "29", "--dry-run"
    ).stdout.split()
    assert len(urls) == 2 and all("startDate=06%2F01%2F2024" in u for u in urls)


# --- the status view ------------------------------------------------------------------------


def test_status_of_a_known_journal(cli: Cli, faults: Faults, tmp_path: Path) -> None:
    manifest = tmp_path / "m.toml"
    manifest.write_text(
        '[[pull]]\nmeters = ["M1", "M2", "M3"]\nstart = 2023-11-01\nend = 2024-02-29\n'
    )
    faults.script = {"M2": ["404"], "M1": ["empty"]}
    cli(
        "fetch",
        "--meter",
        "M1",
        "--meter",
        "M2",
        "--start",
        "2023-11-01",
        "--end",
        "2024-02-29",
        "--today",
        TODAY,
    )
    faults.revision = 1
    cli(
        "fetch",
        "--meter",
        "M1",
        "--start",
        "2024-02-01",
        "--end",
        "2024-02-29",
        "--today",
        "2024-03-01",
        "--revisit-days",
        "5",
    )
    shown = cli("status", str(cli.out), "--manifest", str(manifest), auth=False)
    assert shown.exit_code == 1
    lines = shown.stdout.splitlines()
    assert lines[0].split() == [
        "kind",
        "id",
        "year",
        *"JFMAMJJASOND",
        "files",
        "failed",
        "missing",
        "revised",
    ]
    m1 = next(ln for ln in lines if " M1 " in f" {ln} ")
    assert m1.split() == ["meter", "M1", "2023", "·", "✓", "4", "0", "0", "1"]
    m1_2024 = lines[lines.index(m1) + 1].split()
    assert m1_2024 == ["2024", "✓", "R"]
    m2 = next(ln for ln in lines if " M2 " in f" {ln} ")
    assert m2.split() == ["meter", "M2", "2023", "✗", "✓", "4", "1", "0", "0"]
    m3 = next(ln for ln in lines if " M3 " in f" {ln} ")
    assert m3.split() == ["meter", "M3", "2023", "?", "?", "0", "0", "4", "0"]
    assert "4 planned but never fetched" in shown.stdout
    assert "1 revised (1 changes)" in shown.stdout and "incomplete" in shown.stdout
    assert "last fetch:" in shown.stdout
    view = json.loads(cli("status", str(cli.out), "--json", auth=False).stdout)
    assert view["complete"] is False
    assert view["totals"] == {
        "failed": 1,
        "missing": 0,
        "revised": 1,
        "downloaded": 5,
        "empty": 1,
        "revisions": 1,
    }
    (m1_json,) = [s for s in view["series"] if s["id"] == "M1"]
    assert m1_json["months"]["2024-02"] == {"state": "revised", "revisions": 1}
    assert m1_json["months"]["2023-11"] == {"state": "empty", "revisions": 0}
    by_year = cli("status", str(cli.out), "--by", "year", auth=False).stdout
    assert by_year.splitlines()[0].split()[:4] == ["kind", "id", "2023", "2024"]
    # A cell per id and year, the worst state among its months.
    rows = {ln.split()[1]: ln.split()[2:4] for ln in by_year.splitlines() if ln.startswith("meter")}
    assert rows == {"M1": ["✓", "R"], "M2": ["✗", "✓"]}


def test_status_is_exit_0_when_complete(cli: Cli) -> None:
    assert cli("fetch", *HALF_YEAR, "--today", TODAY).exit_code == 0
    shown = cli("status", str(cli.out), auth=False)
    assert shown.exit_code == 0 and "complete" in shown.stdout
    assert "2 series, 12 files: 12 downloaded" in shown.stdout


def test_status_without_a_journal_is_exit_2(offline_cli: Cli, tmp_path: Path) -> None:
    outcome = offline_cli("status", str(tmp_path), auth=False)
    assert outcome.exit_code == 2 and "no omar-bulk journal" in outcome.stderr


# --- adaptive politeness --------------------------------------------------------------------


def test_the_pool_shrinks_under_a_503_storm_and_recovers(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    faults.latency = 0.02
    faults.storm = 24
    report = tmp_path / "r.json"
    outcome = cli(
        "fetch",
        *[a for n in range(5) for a in ("--meter", f"M{n}")],
        "--start",
        "2023-01-01",
        "--end",
        "2023-12-31",
        "--concurrency",
        "8",
        "--retries",
        "10",
        "--report",
        str(report),
    )
    assert outcome.exit_code == 0, outcome.stderr
    pool = json.loads(report.read_text())["summary"]["concurrency"]
    assert pool["max"] == 8 and pool["lowest"] <= 2 and pool["decreases"] >= 2
    assert pool["final"] == 8 and pool["increases"] >= 6
    assert cli.server is not None
    served = [s for s in cli.server.state.downloads() if s.fault is None]
    # right after the storm the server saw requests one at a time, later up to 8 again
    assert served[0].active <= 2
    assert max(s.active for s in served) >= 6
    assert "the server pushed back" in outcome.stderr


def test_every_recorded_version_points_at_its_own_kept_file(cli: Cli, faults: Faults) -> None:
    """Revisions within one second share a time stamp; each still gets its own history file,
    and the journal names the file that holds that version's bytes."""
    args = [
        "--meter",
        "M1",
        "--start",
        "2024-06-01",
        "--end",
        "2024-06-30",
        "--today",
        TODAY,
        "--revisit-days",
        "10",
    ]
    key = "meter/M1/M1_20240601_20240630_PST.mdef"
    bodies = []
    for revision in range(3):
        faults.revision = revision
        assert cli("fetch", *args).exit_code == 0
        bodies.append((cli.out / key).read_bytes())
    journal = Journal.open(cli.out / ".omar-bulk")
    try:
        versions = journal.versions(key)
    finally:
        journal.close()
    assert len(versions) == 2 and len({v[3] for v in versions}) == 2
    for (_, sha, size, archived), body in zip(versions, bodies[:2], strict=True):
        kept = (cli.out / archived).read_bytes()
        assert kept == body and len(body) == size
        assert hashlib.sha256(kept).hexdigest() == sha
