"""A server that lies or misbehaves: what omar-bulk refuses to believe, end to end."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from omar_bulk.standin.server import Faults

from ..conftest import Cli, data_files, expected_body, journal_rows

M1_FEB = ["--meter", "M1", "--start", "2024-02-01", "--end", "2024-02-29"]
FEB = (date(2024, 2, 1), date(2024, 2, 29))
FEB_FILE = "meter/M1/M1_20240201_20240229_PST.mdef"


def _item(report: Path) -> dict[str, object]:
    (item,) = json.loads(report.read_text())["items"]
    assert isinstance(item, dict)
    return item


def test_a_gzip_body_we_did_not_ask_for_is_decoded_and_verified(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    """The file holds the data, not its compressed form; gzip's own trailer vouches for it."""
    faults.script = {"M1": ["gzip"]}
    outcome = cli("fetch", *M1_FEB)
    assert outcome.exit_code == 0, outcome.stderr
    assert (cli.out / FEB_FILE).read_bytes() == expected_body("meter", "M1", *FEB)


def test_a_gzip_body_cut_short_is_never_a_file(cli: Cli, faults: Faults, tmp_path: Path) -> None:
    faults.script = {"M1": ["gzipcut*"]}
    report = tmp_path / "r.json"
    outcome = cli("fetch", *M1_FEB, "--retries", "1", "--report", str(report))
    assert outcome.exit_code == 1
    item = _item(report)
    assert item["status"] == "failed" and "compressed body" in str(item["error"])
    assert data_files(cli.out) == []
    assert not list(cli.out.rglob("*.part"))


def test_an_encoding_that_cannot_be_checked_fails_the_item(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    faults.script = {"M1": ["brotli*"]}
    report = tmp_path / "r.json"
    outcome = cli("fetch", *M1_FEB, "--retries", "1", "--report", str(report))
    assert outcome.exit_code == 1
    assert "Content-Encoding 'br'" in str(_item(report)["error"])
    assert data_files(cli.out) == []


def test_a_cut_body_without_framing_is_never_saved_as_complete(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    """No Content-Length, no chunks, half the body, then a close: a cut, not an end."""
    faults.script = {"M1": ["unframedcut", "unframed", "unframedcut", "unframed", "unframed"]}
    report = tmp_path / "r.json"
    outcome = cli("fetch", *M1_FEB, "--report", str(report))
    assert outcome.exit_code == 0, outcome.stderr
    # half, whole, half, whole, whole: the whole body is kept once it came twice in a row
    assert _item(report)["attempts"] == 5
    assert (cli.out / FEB_FILE).read_bytes() == expected_body("meter", "M1", *FEB)


def test_an_unframed_body_cut_every_time_fails(cli: Cli, faults: Faults, tmp_path: Path) -> None:
    faults.script = {"M1": ["unframedcut*"]}
    report = tmp_path / "r.json"
    outcome = cli("fetch", *M1_FEB, "--retries", "3", "--report", str(report))
    assert outcome.exit_code == 1
    assert "neither Content-Length nor chunked" in str(_item(report)["error"])
    assert data_files(cli.out) == []


@pytest.mark.parametrize(
    ("login", "says"),
    [
        (["http"], "not https"),
        (["elsewhere"], "another server"),
    ],
)
def test_a_login_redirect_off_https_or_elsewhere_is_refused(
    cli: Cli, faults: Faults, login: list[str], says: str
) -> None:
    """Nothing is sent over plain http and the session cookie never goes to another origin."""
    faults.login = list(login)
    outcome = cli("fetch", *M1_FEB)
    assert outcome.exit_code == 3, outcome.stderr
    assert says in outcome.stderr
    assert cli.server is not None
    assert cli.server.state.downloads() == []  # nothing was asked with a doubtful session
    assert cli.server.state.logins == 0


def test_a_login_redirect_loop_says_what_happened(cli: Cli, faults: Faults) -> None:
    faults.login = ["loop*"]
    outcome = cli("fetch", *M1_FEB, "--retries", "0")
    assert outcome.exit_code == 1, outcome.stderr
    assert "redirected" in outcome.stderr and "without opening a session" in outcome.stderr
    assert "message=''" not in outcome.stderr


@pytest.mark.parametrize("expired", ["login*", "redirect*"])
def test_a_session_that_expires_right_after_every_login_is_backed_off(
    cli: Cli, faults: Faults, tmp_path: Path, expired: str
) -> None:
    """A maintenance page that says "log in", or a redirect on every download: re-login is
    tried, then the pool backs off as for a 503, and the attempts count against --retries."""
    faults.script = {"M1": [expired]}
    report = tmp_path / "r.json"
    outcome = cli(
        "fetch",
        *M1_FEB,
        "--retries",
        "3",
        "--retry-wait",
        "0.01",
        "--concurrency",
        "4",
        "--report",
        str(report),
    )
    assert outcome.exit_code == 1
    item = _item(report)
    # no login served a download, so no expiry is free: --retries 3 is 1 + 3 attempts
    assert item["attempts"] == 4 and "gave up after 4 attempts" in str(item["error"])
    assert cli.server is not None
    state = cli.server.state
    assert len(state.downloads()) == 4  # bounded by --retries, not a burst
    assert state.logins <= 4
    summary = json.loads(report.read_text())["summary"]
    assert summary["concurrency"]["decreases"] >= 1  # pushed back, as for a 503


def test_server_text_reaches_the_terminal_escaped(cli: Cli, faults: Faults, tmp_path: Path) -> None:
    """A reason phrase carrying escape sequences and a bidi override is shown, not obeyed."""
    faults.script = {"M1": ["escape*"]}
    report = tmp_path / "r.json"
    outcome = cli("fetch", *M1_FEB, "--retries", "1", "--report", str(report))
    assert outcome.exit_code == 1
    for text in (outcome.stderr, outcome.stdout, report.read_text()):
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    error = str(_item(report)["error"])
    assert "\\x1b" in error or "could not be read" in error, error


def test_the_journal_never_records_an_unverified_body(cli: Cli, faults: Faults) -> None:
    faults.script = {"M1": ["unframedcut*"]}
    cli("fetch", *M1_FEB, "--retries", "1")
    rows = journal_rows(cli.out)
    assert rows[FEB_FILE][0] == "failed"


def test_the_second_copy_of_an_unframed_body_is_its_check_not_a_retry(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    """Under ``--retries 0`` a body without framing is still fetched twice and kept."""
    faults.script = {"M1": ["unframed*"]}
    report = tmp_path / "r.json"
    outcome = cli("fetch", *M1_FEB, "--retries", "0", "--report", str(report))
    assert outcome.exit_code == 0, outcome.stderr
    assert _item(report)["attempts"] == 2
    assert (cli.out / FEB_FILE).read_bytes() == expected_body("meter", "M1", *FEB)
