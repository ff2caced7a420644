"""End to end through the CLI against the stand-in server: files, requests, faults, resume."""

from __future__ import annotations

import hashlib
import itertools
import json
import stat
import subprocess
import time
from datetime import date
from pathlib import Path

import pytest

from omar_bulk.standin.server import Faults, ServerThread

from ..conftest import Cli, data_files, expected_body, journal_rows, need_command

M1_FEB = ["--meter", "M1", "--start", "2024-02-01", "--end", "2024-02-02"]
M1_FEB_ALL = ["--meter", "M1", "--start", "2024-02-01", "--end", "2024-02-29"]
ADHOC = ["--meter", "M1", "--meter", "M2", "--start", "2024-01-15", "--end", "2024-03-02"]
MONTHS = [
    (date(2024, 1, 15), date(2024, 1, 31)),
    (date(2024, 2, 1), date(2024, 2, 29)),
    (date(2024, 3, 1), date(2024, 3, 2)),
]


def downloads(server: ServerThread) -> list[str]:
    return [seen.line for seen in server.state.downloads()]


def test_a_backfill_lands_every_file_byte_for_byte(cli: Cli) -> None:
    outcome = cli("fetch", *ADHOC)
    assert outcome.exit_code == 0, outcome.stderr
    files = data_files(cli.out)
    assert [f.relative_to(cli.out).as_posix() for f in files] == [
        f"meter/{m}/{m}_{a:%Y%m%d}_{b:%Y%m%d}_PST.mdef" for m in ("M1", "M2") for a, b in MONTHS
    ]
    for meter in ("M1", "M2"):
        for first, last in MONTHS:
            path = cli.out / "meter" / meter / f"{meter}_{first:%Y%m%d}_{last:%Y%m%d}_PST.mdef"
            assert path.read_bytes() == expected_body("meter", meter, first, last)
    assert "6 planned, 6 downloaded, 0 skipped, 0 empty, 0 failed" in outcome.stderr


def test_the_server_receives_the_specified_request_lines(cli: Cli) -> None:
    """Asserted on the raw request line the server saw, not on a URL object."""
    outcome = cli(
        "fetch",
        "--group",
        "G 1",
        "--start",
        "2024-02-01",
        "--end",
        "2024-02-29",
        "--format",
        "CSV",
        "--time-type",
        "dst",
    )
    assert outcome.exit_code == 0, outcome.stderr
    assert cli.server is not None
    assert downloads(cli.server) == [
        "GET /getSQMDCsvForDownload.jsp?requestedFormat=download&datasourceType=SQMD"
        "&groupOrMeter=group&selectedMeters=G%201&startDate=02%2F01%2F2024"
        "&endDate=02%2F29%2F2024&timeType=DST&fileFormat=CSV&group=G%201 HTTP/1.1"
    ]
    assert (cli.out / "group" / "G 1" / "G 1_20240201_20240229_DST.csv").is_file()


def test_every_download_carries_the_session_cookie_from_one_login(cli: Cli) -> None:
    assert cli("fetch", *ADHOC, "--concurrency", "3").exit_code == 0
    assert cli.server is not None
    state = cli.server.state
    assert state.logins == 1
    assert state.log[0].path == "/"
    sessions = {seen.session for seen in state.downloads()}
    assert len(sessions) == 1 and None not in sessions


def test_files_and_folders_are_private(cli: Cli) -> None:
    assert cli("fetch", *ADHOC).exit_code == 0
    for path in [cli.out, *cli.out.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.name == "lock":
            continue
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_the_report_lists_every_item(cli: Cli, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    started = time.monotonic()
    assert cli("fetch", *ADHOC, "--report", str(report)).exit_code == 0
    elapsed = time.monotonic() - started
    data = json.loads(report.read_text())
    summary = data["summary"]
    assert {k: summary[k] for k in ("planned", "downloaded", "skipped", "empty", "failed")} == {
        "planned": 6,
        "downloaded": 6,
        "skipped": 0,
        "empty": 0,
        "failed": 0,
    }
    assert summary["bytes"] == sum(f.stat().st_size for f in data_files(cli.out))
    # The run's own duration: within the time the command took (the report rounds it).
    assert 0 < summary["seconds"] <= elapsed + 0.01
    assert cli.server is not None
    sent = {line.split(" ")[1] for line in downloads(cli.server)}
    for item in data["items"]:
        assert set(item) == {"url", "path", "status", "bytes", "sha256", "attempts", "error"}
        assert item["status"] == "downloaded" and item["attempts"] == 1 and item["error"] is None
        assert item["url"].removeprefix(cli.server.base_url.rstrip("/")) in sent
        body = Path(item["path"]).read_bytes()
        assert item["sha256"] == hashlib.sha256(body).hexdigest()
        assert item["bytes"] == len(body)


def test_a_rerun_asks_only_for_what_is_missing(cli: Cli, faults: Faults) -> None:
    faults.script = {"M2": ["500*"]}
    first = cli("fetch", *ADHOC, "--retries", "1")
    assert first.exit_code == 1
    assert "3 downloaded" in first.stderr and "3 failed" in first.stderr
    assert cli.server is not None
    before = len(cli.server.state.downloads())
    faults.script = {}
    second = cli("fetch", *ADHOC)
    assert second.exit_code == 0
    assert "3 downloaded, 3 skipped" in second.stderr
    again = cli.server.state.downloads()[before:]
    assert sorted(s.raw_query.split("&")[3] for s in again) == ["selectedMeters=M2"] * 3
    third = cli("fetch", *ADHOC)
    assert "0 downloaded, 6 skipped" in third.stderr
    assert len(cli.server.state.downloads()) == before + 3


def test_overwrite_fetches_even_what_is_done(cli: Cli, faults: Faults, tmp_path: Path) -> None:
    """--overwrite asks for every item again and compares: the same bytes are unchanged and
    left alone; new bytes replace the file, the old ones kept in history, the journal told."""
    assert cli("fetch", *ADHOC).exit_code == 0
    originals = {p: p.read_bytes() for p in data_files(cli.out)}
    stamps = {p: p.stat().st_mtime_ns for p in originals}
    rows = journal_rows(cli.out)
    report = tmp_path / "same.json"
    same = cli("fetch", *ADHOC, "--overwrite", "--report", str(report))
    assert same.exit_code == 0, same.stderr
    assert cli.server is not None
    assert len(cli.server.state.downloads()) == 12
    summary = json.loads(report.read_text())["summary"]
    assert (summary["unchanged"], summary["revised"], summary["skipped"]) == (6, 0, 0)
    assert {p: p.stat().st_mtime_ns for p in data_files(cli.out)} == stamps
    assert journal_rows(cli.out) == rows
    assert not (cli.out / ".omar-bulk" / "history").exists()

    faults.revision = 1  # the server now holds other bytes for every item
    report = tmp_path / "revised.json"
    revised = cli("fetch", *ADHOC, "--overwrite", "--report", str(report))
    assert revised.exit_code == 0, revised.stderr
    summary = json.loads(report.read_text())["summary"]
    assert (summary["revised"], summary["unchanged"]) == (6, 0)
    kept = sorted((cli.out / ".omar-bulk" / "history").rglob("*.mdef.*"))
    assert sorted(k.read_bytes() for k in kept) == sorted(originals.values())
    after = journal_rows(cli.out)
    for path, old in originals.items():
        new = path.read_bytes()
        assert new != old
        status, size, sha = after[path.relative_to(cli.out).as_posix()]
        assert (status, size, sha) == ("downloaded", len(new), hashlib.sha256(new).hexdigest())


def test_a_deleted_or_truncated_file_is_fetched_again(cli: Cli) -> None:
    assert cli("fetch", *ADHOC).exit_code == 0
    files = data_files(cli.out)
    files[0].unlink()
    files[1].write_bytes(files[1].read_bytes()[:-10])
    outcome = cli("fetch", *ADHOC)
    assert "2 downloaded, 4 skipped" in outcome.stderr
    assert "is missing; fetching it again" in outcome.stderr
    assert "fetching it again" in outcome.stderr
    assert files[0].exists() and files[1].read_bytes() == expected_body("meter", "M1", *MONTHS[1])


def test_a_file_rewritten_with_the_same_size_is_rehashed(cli: Cli) -> None:
    assert cli("fetch", *ADHOC).exit_code == 0
    target = data_files(cli.out)[0]
    original = target.read_bytes()
    target.write_bytes(b"X" * len(original))  # same size, new time stamp, wrong bytes
    outcome = cli("fetch", *ADHOC)
    assert "1 downloaded, 5 skipped" in outcome.stderr
    assert target.read_bytes() == original
    target.touch()  # new time stamp, same bytes: verified by hash and kept
    assert "0 downloaded, 6 skipped" in cli("fetch", *ADHOC).stderr


def test_dry_run_prints_urls_sends_nothing_and_creates_nothing(cli: Cli) -> None:
    outcome = cli("fetch", *ADHOC, "--dry-run")
    assert outcome.exit_code == 0
    urls = outcome.stdout.splitlines()
    assert len(urls) == 6
    assert cli.server is not None
    assert urls[0] == (
        f"{cli.server.base_url}getMDEF.jsp?requestedFormat=download&datasourceType=SQMD"
        "&groupOrMeter=meter&selectedMeters=M1&startDate=01%2F15%2F2024&endDate=01%2F31%2F2024"
        "&timeType=PST&fileFormat=MDEF&group="
    )
    assert cli.server.state.log == []
    assert not cli.out.exists()


def test_dry_run_after_a_partial_run_lists_only_what_is_missing(cli: Cli, faults: Faults) -> None:
    faults.script = {"M1": ["404*"]}
    assert cli("fetch", *ADHOC).exit_code == 1
    urls = cli("fetch", *ADHOC, "--dry-run").stdout.splitlines()
    assert len(urls) == 3 and all("selectedMeters=M1&" in u for u in urls)


@pytest.mark.parametrize("fault", ["503", "429", "500", "cut", "login", "expire", "redirect"])
def test_transient_faults_are_retried_and_the_file_is_whole(
    cli: Cli, faults: Faults, fault: str, tmp_path: Path
) -> None:
    faults.script = {"M1": [fault, fault]}
    report = tmp_path / "r.json"
    outcome = cli(
        "fetch",
        *M1_FEB_ALL,
        "--report",
        str(report),
    )
    assert outcome.exit_code == 0, outcome.stderr
    (item,) = json.loads(report.read_text())["items"]
    assert item["status"] == "downloaded" and item["attempts"] == 3
    path = Path(item["path"])
    assert path.read_bytes() == expected_body("meter", "M1", date(2024, 2, 1), date(2024, 2, 29))
    assert not list(cli.out.rglob("*.part"))


def test_retry_after_is_honoured(cli: Cli, faults: Faults, tmp_path: Path) -> None:
    faults.retry_after = 0.3
    faults.script = {"M1": ["503"]}
    assert (
        cli(
            "fetch",
            *M1_FEB,
            "--retry-wait",
            "0",
        ).exit_code
        == 0
    )
    assert cli.server is not None
    first, second = cli.server.state.downloads()
    assert second.at - first.at >= 0.3


def test_retries_give_up_after_the_limit_with_the_reason(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    faults.script = {"M1": ["503*"]}
    report = tmp_path / "r.json"
    outcome = cli(
        "fetch",
        *M1_FEB,
        "--retries",
        "2",
        "--report",
        str(report),
    )
    assert outcome.exit_code == 1
    (item,) = json.loads(report.read_text())["items"]
    assert item["status"] == "failed" and item["attempts"] == 3
    assert "HTTP 503" in item["error"] and "gave up after 3 attempts" in item["error"]
    assert "HTTP 503" in outcome.stderr  # the summary names the failure and its reason
    assert data_files(cli.out) == []


def test_a_404_fails_at_once(cli: Cli, faults: Faults, tmp_path: Path) -> None:
    faults.script = {"M1": ["404*"]}
    report = tmp_path / "r.json"
    assert cli("fetch", *ADHOC, "--report", str(report)).exit_code == 1
    failed = [i for i in json.loads(report.read_text())["items"] if i["status"] == "failed"]
    assert len(failed) == 3 and {i["attempts"] for i in failed} == {1}
    assert all("HTTP 404" in i["error"] for i in failed)


def test_an_html_page_with_status_200_is_kept_aside_not_saved_as_data(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    faults.script = {"M1": ["html"]}
    report = tmp_path / "r.json"
    outcome = cli(
        "fetch",
        *M1_FEB,
        "--report",
        str(report),
    )
    assert outcome.exit_code == 1
    (item,) = json.loads(report.read_text())["items"]
    assert "'OMAR-Online Error'" in item["error"]
    assert not Path(item["path"]).exists()
    kept = list((cli.out / ".omar-bulk" / "errors").rglob("*.html"))
    assert len(kept) == 1 and b"Unable to process" in kept[0].read_bytes()


def test_an_empty_body_is_recorded_as_empty_not_failed(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    faults.script = {"M1": ["empty*"]}
    report = tmp_path / "r.json"
    outcome = cli(
        "fetch",
        *M1_FEB,
        "--report",
        str(report),
    )
    assert outcome.exit_code == 0
    (item,) = json.loads(report.read_text())["items"]
    assert item["status"] == "empty" and item["bytes"] == 0
    assert data_files(cli.out) == []
    assert "0 skipped, 1 empty" in outcome.stderr
    assert (
        "1 skipped, 0 empty"
        in cli("fetch", "--meter", "M1", "--start", "2024-02-01", "--end", "2024-02-02").stderr
    )


def test_a_stalled_body_times_out_and_is_retried(cli: Cli, faults: Faults) -> None:
    faults.stall_seconds = 5
    faults.script = {"M1": ["stall"]}
    outcome = cli("fetch", *M1_FEB_ALL, "--timeout", "0.5")
    assert outcome.exit_code == 0, outcome.stderr
    assert data_files(cli.out)[0].read_bytes() == expected_body(
        "meter", "M1", date(2024, 2, 1), date(2024, 2, 29)
    )


def test_a_body_shorter_than_its_content_length_is_retried(cli: Cli, faults: Faults) -> None:
    faults.script = {"M1": ["short"]}
    assert (
        cli(
            "fetch",
            *M1_FEB_ALL,
            "--timeout",
            "2",
        ).exit_code
        == 0
    )
    assert cli.server is not None and len(cli.server.state.downloads()) == 2


def test_403_aborts_the_run_with_exit_3(cli: Cli, faults: Faults) -> None:
    faults.script = {"M1": ["403*"], "M2": ["403*"]}
    outcome = cli("fetch", *ADHOC, "--concurrency", "1")
    assert outcome.exit_code == 3
    assert "403" in outcome.stderr and "run aborted" in outcome.stderr
    assert cli.server is not None and len(cli.server.state.downloads()) == 1


def test_sessions_are_reopened_once_per_expiry_not_once_per_worker(
    cli: Cli, faults: Faults
) -> None:
    faults.session_requests = 4
    outcome = cli(
        "fetch",
        "--meter",
        "A",
        "--meter",
        "B",
        "--meter",
        "C",
        "--start",
        "2022-01-01",
        "--end",
        "2023-12-31",
        "--concurrency",
        "4",
    )
    assert outcome.exit_code == 0, outcome.stderr
    assert cli.server is not None
    state = cli.server.state
    served = sum(1 for s in state.downloads() if s.fault is None)
    assert served == 72
    # Each session serves 4 downloads; one login per session, never one per worker.
    assert state.logins <= served // 4 + 2, (state.logins, served)


def test_journal_records_outcome_size_and_hash(cli: Cli, faults: Faults) -> None:
    faults.script = {"M2": ["404*"]}
    cli("fetch", *ADHOC)
    rows = journal_rows(cli.out)
    assert len(rows) == 6
    for path, (status, size, sha) in rows.items():
        if "M2" in path:
            assert status == "failed" and sha is None
        else:
            body = (cli.out / path).read_bytes()
            assert (status, size, sha) == (
                "downloaded",
                len(body),
                hashlib.sha256(body).hexdigest(),
            )


def test_concurrency_bounds_the_downloads_in_flight(cli: Cli, faults: Faults) -> None:
    faults.latency = 0.3
    outcome = cli(
        "fetch",
        "--meter",
        "A",
        "--meter",
        "B",
        "--start",
        "2024-01-01",
        "--end",
        "2024-06-30",
        "--concurrency",
        "4",
    )
    assert outcome.exit_code == 0
    assert cli.server is not None and cli.server.state.max_active == 4


def test_rate_spaces_request_starts(cli: Cli) -> None:
    outcome = cli(
        "fetch",
        "--meter",
        "A",
        "--start",
        "2024-01-01",
        "--end",
        "2024-01-08",
        "--chunk",
        "day",
        "--rate",
        "20",
        "--concurrency",
        "8",
    )
    assert outcome.exit_code == 0
    assert cli.server is not None
    starts = [s.at for s in cli.server.state.downloads()]
    assert len(starts) == 8
    # 8 starts at most 20 per second: every two at least 1/20 s apart (so no burst hides
    # in a long run), the first and the last at least 7/20 s apart.
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) >= 1 / 20 - 0.01, gaps
    assert starts[-1] - starts[0] >= 7 / 20 - 0.01
    # And not much slower than asked: 1/rate for the whole run, not per worker (8/20 s
    # apart, 2.8 s in all); a loaded machine adds delay, so the slack is wide.
    assert starts[-1] - starts[0] < 7 / 20 + 2.0, gaps


def test_the_stand_in_refuses_plain_slashes_unless_told_otherwise(cli: Cli, faults: Faults) -> None:
    """The stand-in is strict like the specification; --accept-slashes is only for benchmarks
    of tools that cannot send %2F."""

    assert cli.server is not None
    base, pki = cli.server.base_url, cli.pki
    query = (
        "getMDEF.jsp?requestedFormat=download&datasourceType=SQMD&groupOrMeter=meter"
        "&selectedMeters=M1&startDate=01/01/2024&endDate=01/02/2024&timeType=PST"
        "&fileFormat=MDEF&group="
    )

    curl = need_command("curl")
    jar = cli.out.parent / "cookies.txt"
    auth = ["--cert", str(pki.client_pem), "--cacert", str(pki.ca)]
    subprocess.run(
        [curl, "-s", "-o", "/dev/null", "-c", str(jar), *auth, base], check=True, timeout=30
    )

    def status() -> str:
        return subprocess.run(
            [
                curl,
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-b",
                str(jar),
                *auth,
                base + query,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout

    assert status() == "400"
    faults.accept_slashes = True
    assert status() == "200"


def test_retries_0_is_one_attempt_a_file_when_the_only_data_ever_sent_was_cut_short(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    """A body cut short is no download served: later login pages count against --retries."""
    faults.script = {"M1": ["cut", "login*"]}
    report = tmp_path / "r.json"
    two_months = ["--meter", "M1", "--start", "2023-01-01", "--end", "2023-02-28"]
    outcome = cli(
        "fetch", *two_months, "--retries", "0", "--concurrency", "1", "--report", str(report)
    )
    assert outcome.exit_code == 1, outcome.stderr
    items = json.loads(report.read_text())["items"]
    assert [i["attempts"] for i in items] == [1, 1], items


M1_Q1 = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-03-31"]


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
