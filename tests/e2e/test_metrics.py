"""Metrics for monitoring: ``fetch --metrics`` and ``status --prometheus``, checked against the
JSON report and the journal they summarise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import Faults, ServerThread

from ..conftest import Cli, standin_args

TWO_MONTHS = ["--start", "2024-01-01", "--end", "2024-02-29"]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and its labels other than ``out``."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "out"))
            found[(sample.name, labels)] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str):  # type: ignore[no-untyped-def]
    return found[(name, tuple(sorted(labels.items())))]


def test_metrics_equal_the_report_for_a_run_with_failures_and_retries(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    """Every count in the file is the report's; retries are the items' extra attempts."""
    faults.script = {"M1": ["503", "cut"], "M2": ["404*"], "M3": ["empty"]}
    target = tmp_path / "omar.prom"
    before = time.time()
    outcome = cli(
        "fetch", "--meter", "M1", "--meter", "M2", "--meter", "M3", *TWO_MONTHS,
        "--metrics", str(target),
    )  # fmt: skip
    assert outcome.exit_code == 1
    report = json.loads((cli.out / ".omar-bulk" / "last-run.json").read_text())
    summary = report["summary"]
    found = samples(target.read_text())
    for status in ("downloaded", "skipped", "empty", "failed", "revised", "unchanged"):
        assert value(found, "omar_bulk_fetch_items", status=status) == summary[status], status
    assert value(found, "omar_bulk_fetch_items", status="not_attempted") == 0
    assert summary["failed"] == 2 and summary["empty"] == 1
    assert value(found, "omar_bulk_fetch_planned_items") == summary["planned"] == 6
    on_disk = sum(p.stat().st_size for p in cli.out.rglob("*.mdef"))
    assert value(found, "omar_bulk_fetch_downloaded_bytes") == summary["bytes"] == on_disk
    assert value(found, "omar_bulk_fetch_duration_seconds") == summary["seconds"]
    assert value(found, "omar_bulk_fetch_exit_code") == 1
    extra_attempts = sum(max(0, item["attempts"] - 1) for item in report["items"])
    assert value(found, "omar_bulk_fetch_retries") == extra_attempts == 2
    assert value(found, "omar_bulk_fetch_concurrency", level="max") == 4
    assert before <= value(found, "omar_bulk_fetch_last_run_timestamp_seconds") <= time.time()
    assert ("omar_bulk_fetch_last_success_timestamp_seconds", ()) not in found  # never 0 yet
    out_labels = {
        s.labels["out"]
        for f in text_string_to_metric_families(target.read_text())
        for s in f.samples
    }
    assert out_labels == {str(cli.out.resolve())}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("omar.prom")) == [
        "omar.prom"  # written beside and renamed: no temporary file left
    ]


def test_a_run_that_never_starts_still_reports_and_keeps_the_last_success(
    cli: Cli, pki: TestPKI, tmp_path: Path
) -> None:
    """An expired certificate ends the run before it begins: the exit code is written, and the
    time of the last good run survives for the staleness alert."""
    target = tmp_path / "omar.prom"
    assert cli("fetch", "--meter", "M1", *TWO_MONTHS, "--metrics", str(target)).exit_code == 0
    success = value(samples(target.read_text()), "omar_bulk_fetch_last_success_timestamp_seconds")
    from datetime import UTC, datetime, timedelta

    expired = pki.client(
        "metrics-expired",
        not_before=datetime.now(UTC) - timedelta(days=60),
        not_after=datetime.now(UTC) - timedelta(days=1),
    )
    outcome = cli(
        "fetch", "--meter", "M1", *TWO_MONTHS, "--cert", str(expired), "--metrics", str(target)
    )
    assert outcome.exit_code == 2
    found = samples(target.read_text())
    assert value(found, "omar_bulk_fetch_exit_code") == 2
    assert value(found, "omar_bulk_fetch_last_success_timestamp_seconds") == success
    assert value(found, "omar_bulk_fetch_last_run_timestamp_seconds") >= success
    assert not any(name == "omar_bulk_fetch_items" for name, _ in found)


def test_an_aborted_run_reports_exit_3_and_what_was_not_attempted(cli: Cli, tmp_path: Path) -> None:
    stranger = TestPKI.create(tmp_path / "stranger")
    target = tmp_path / "omar.prom"
    outcome = cli(
        "fetch", "--meter", "M1", *TWO_MONTHS, "--cert", str(stranger.client_pem),
        "--retries", "1", "--metrics", str(target),
    )  # fmt: skip
    assert outcome.exit_code == 3
    found = samples(target.read_text())
    assert value(found, "omar_bulk_fetch_exit_code") == 3
    assert value(found, "omar_bulk_fetch_aborted") == 1
    assert value(found, "omar_bulk_fetch_items", status="not_attempted") == 2


def test_an_interrupted_start_reports_exit_130(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import omar_bulk.run

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(omar_bulk.run, "fetch", interrupted)
    target = tmp_path / "omar.prom"
    outcome = cli("fetch", "--meter", "M1", *TWO_MONTHS, "--metrics", str(target))
    assert outcome.exit_code == 130
    assert value(samples(target.read_text()), "omar_bulk_fetch_exit_code") == 130


def test_a_metrics_file_in_a_missing_folder_is_refused_before_anything_is_sent(
    cli: Cli, tmp_path: Path
) -> None:
    outcome = cli(
        "fetch", "--meter", "M1", *TWO_MONTHS, "--metrics", str(tmp_path / "nope" / "o.prom")
    )
    assert outcome.exit_code == 2
    assert "does not exist" in outcome.stderr
    assert cli.server is not None and cli.server.state.log == []


def test_a_plain_fetch_does_not_import_prometheus_client(
    pki: TestPKI, server: ServerThread, tmp_path: Path
) -> None:
    """Monitoring costs nothing to runs that do not ask for it (a fresh interpreter)."""
    program = (
        "import sys\n"
        "from omar_bulk.cli import app\n"
        "try:\n"
        "    app(sys.argv[1:], prog_name='omar-bulk')\n"
        "except SystemExit as end:\n"
        "    print('exit', end.code)\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    args = [
        "fetch", "--meter", "M1", *TWO_MONTHS, "--out", str(tmp_path / "out"),
        "--no-progress", *standin_args(server, pki),
    ]  # fmt: skip
    env = {**os.environ, "OMAR_CERT_PASSWORD": DEMO_PASSWORD}
    done = subprocess.run(
        [sys.executable, "-c", program, *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.stdout.split() == ["exit", "0", "False"], done.stderr


def test_status_prometheus_gauges_match_the_status_view(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    manifest = tmp_path / "m.toml"
    manifest.write_text(
        '[[pull]]\nmeters = ["M1", "M2", "M3"]\ngroups = ["G1"]\n'
        "start = 2024-01-01\nend = 2024-02-29\n"
    )
    faults.script = {"M2": ["404*"]}
    before = time.time()
    cli("fetch", "--meter", "M1", "--meter", "M2", "--group", "G1", *TWO_MONTHS)
    after = time.time()
    shown = cli("status", str(cli.out), "--manifest", str(manifest), "--prometheus", auth=False)
    assert shown.exit_code == 1
    found = samples(shown.stdout)
    view = json.loads(
        cli("status", str(cli.out), "--manifest", str(manifest), "--json", auth=False).stdout
    )
    for kind in ("meter", "group"):
        for state in ("downloaded", "failed", "missing", "empty", "revised"):
            expected = sum(s["files"][state] for s in view["series"] if s["kind"] == kind)
            assert value(found, "omar_bulk_coverage_files", kind=kind, state=state) == expected
    assert value(found, "omar_bulk_coverage_files", kind="meter", state="missing") == 2
    assert value(found, "omar_bulk_coverage_files", kind="group", state="downloaded") == 2
    assert value(found, "omar_bulk_coverage_complete") == 0
    # The time of this very fetch (to the second), not any time at all.
    last = value(found, "omar_bulk_coverage_last_fetch_timestamp_seconds")
    assert int(before) <= last <= after
    assert not any(name == "omar_bulk_coverage_id_files" for name, _ in found)

    per_id = samples(cli("status", str(cli.out), "--prometheus-per-id", auth=False).stdout)
    assert (
        value(
            per_id, "omar_bulk_coverage_id_files",
            kind="meter", id="M2", format="mdef", time_type="PST", state="failed",
        )
        == 2
    )  # fmt: skip
    # without --manifest nothing is called missing: the journal cannot know what was planned
    assert not any(dict(labels).get("state") == "missing" for _, labels in per_id)


def test_status_prometheus_of_a_complete_archive(cli: Cli) -> None:
    cli("fetch", "--meter", "M1", *TWO_MONTHS)
    shown = cli("status", str(cli.out), "--prometheus", auth=False)
    assert shown.exit_code == 0
    assert value(samples(shown.stdout), "omar_bulk_coverage_complete") == 1


def test_revised_and_unchanged_files_are_counted_in_every_figure(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    """Counts above zero: a rerun with ``--overwrite`` finds every file unchanged, then (the
    server revised its data) every file revised; the run's gauges, the report and
    ``status --prometheus`` each say so with the right numbers, not only the same as one
    another."""
    two = ["--meter", "M1", "--meter", "M2", *TWO_MONTHS]  # 2 meters x 2 months
    assert cli("fetch", *two).exit_code == 0
    target = tmp_path / "omar.prom"

    same = cli("fetch", *two, "--overwrite", "--metrics", str(target))
    assert same.exit_code == 0, same.stderr
    found = samples(target.read_text())
    figures = {s: value(found, "omar_bulk_fetch_items", status=s) for s in ("revised", "unchanged")}
    assert figures == {"revised": 0, "unchanged": 4}
    assert value(found, "omar_bulk_fetch_items", status="downloaded") == 0
    assert value(found, "omar_bulk_fetch_downloaded_bytes") == 0

    faults.revision = 1
    revised = cli("fetch", *two, "--overwrite", "--metrics", str(target))
    assert revised.exit_code == 0, revised.stderr
    found = samples(target.read_text())
    figures = {s: value(found, "omar_bulk_fetch_items", status=s) for s in ("revised", "unchanged")}
    assert figures == {"revised": 4, "unchanged": 0}
    on_disk = sum(p.stat().st_size for p in cli.out.rglob("*.mdef") if "history" not in p.parts)
    assert value(found, "omar_bulk_fetch_downloaded_bytes") == on_disk
    summary = json.loads((cli.out / ".omar-bulk" / "last-run.json").read_text())["summary"]
    assert (summary["revised"], summary["unchanged"], summary["downloaded"]) == (4, 0, 0)

    shown = cli("status", str(cli.out), "--prometheus", auth=False)
    assert shown.exit_code == 0, shown.stderr
    found = samples(shown.stdout)
    assert value(found, "omar_bulk_coverage_revisions", kind="meter") == 4
    assert value(found, "omar_bulk_coverage_files", kind="meter", state="revised") == 4
    assert value(found, "omar_bulk_coverage_files", kind="meter", state="downloaded") == 0
    assert value(found, "omar_bulk_coverage_revisions", kind="group") == 0


M1_Q1 = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-03-31"]


def test_metrics_never_overwrite_the_journal(cli: Cli) -> None:
    """``fetch --metrics OUT/.omar-bulk/journal.sqlite3`` (a typo, a tab completion) replaced
    the journal with Prometheus text; the next run set it aside as damaged and rebuilt it from
    the last report only, forgetting every file that report did not list. Refuse it (exit 2)
    or at least leave the journal alone, as every other path inside OUT/.omar-bulk."""
    assert cli("fetch", *M1_Q1).exit_code == 0
    journal = cli.out / ".omar-bulk" / "journal.sqlite3"
    cli("fetch", *M1_Q1, "--metrics", str(journal))
    assert journal.read_bytes()[:16] == b"SQLite format 3\x00"


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
