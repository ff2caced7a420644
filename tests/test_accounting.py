"""Accounting: every request that went out is in the report and the journal, however the run
ends, and every data file on disk has its journal row, so a rerun asks only for what is
missing."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from omar_bulk.errors import LocalWriteError
from omar_bulk.journal import Journal
from omar_bulk.results import Status
from omar_bulk.standin.server import Faults

from .conftest import Cli

# Six items, in plan order M1's three months, then M2's.
ADHOC = ["--meter", "M1", "--meter", "M2", "--start", "2024-01-15", "--end", "2024-03-02"]


def _journal_rows(out: Path) -> dict[str, tuple[str, str | None]]:
    db = sqlite3.connect(out / ".omar-bulk" / "journal.sqlite3")
    try:
        return {p: (s, e) for p, s, e in db.execute("SELECT path, status, error FROM items")}
    finally:
        db.close()


def _data_files(out: Path) -> set[str]:
    return {
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and ".omar-bulk" not in p.parts
    }


def test_a_403_midway_accounts_for_every_request_that_went_out(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    """A 403 while other requests are in flight: exit 3, and the report lists the refused
    item as failed and the ones in flight as interrupted, so that its attempts add up to the
    requests the server saw and ``not_attempted`` counts only items never sent; the journal
    holds the refusal. The rerun asks only for the items not on disk."""
    faults.stall_seconds = 2.0  # in flight when the 403 lands, then cancelled
    faults.script = {"M2": ["stall", "403*"]}
    report = tmp_path / "r.json"
    outcome = cli("fetch", *ADHOC, "--concurrency", "2", "--report", str(report))
    assert outcome.exit_code == 3, outcome.stderr
    assert cli.server is not None
    sent = len(cli.server.state.downloads())
    data = json.loads(report.read_text())
    items, summary = data["items"], data["summary"]
    attempted = [i for i in items if i["status"] != "skipped"]
    assert sum(i["attempts"] for i in attempted) == sent
    assert summary["not_attempted"] == 6 - len(attempted)
    refused = [i for i in attempted if i["status"] == "failed"]
    assert refused and all("403" in i["error"] for i in refused)
    assert all(i["status"] in ("downloaded", "failed", "interrupted") for i in attempted)
    rows = _journal_rows(cli.out)
    for item in refused:
        key = Path(item["path"]).relative_to(cli.out).as_posix()
        assert rows[key][0] == "failed" and "403" in str(rows[key][1])
    on_disk = _data_files(cli.out)
    assert on_disk == {k for k, (s, _) in rows.items() if s == "downloaded"}

    faults.script = {}
    again = cli("fetch", *ADHOC, "--concurrency", "2")
    assert again.exit_code == 0, again.stderr
    assert len(cli.server.state.downloads()) - sent == 6 - len(on_disk)


def test_a_data_file_that_landed_when_the_journal_could_not_be_written_keeps_its_row(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up just as a file lands: its journal write fails (exit 4). Once the
    run has removed its ``.part`` files the row is written after all, so the rerun does not
    fetch that file again."""
    original = Journal.record
    failed = []

    def record(self: Journal, key: str, result: object, *args: object, **kwargs: object) -> None:
        if not failed and getattr(result, "status", None) == Status.DOWNLOADED:
            failed.append(key)
            raise LocalWriteError(f"the disk is full: cannot write the journal {self.path}")
        original(self, key, result, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Journal, "record", record)
    outcome = cli("fetch", *ADHOC, "--concurrency", "1")
    assert outcome.exit_code == 4, outcome.stderr
    assert "the disk is full" in outcome.stderr
    assert failed, "the injected failure was never reached"
    on_disk = _data_files(cli.out)
    assert failed[0] in on_disk
    rows = _journal_rows(cli.out)
    assert on_disk == {k for k, (s, _) in rows.items() if s == "downloaded"}

    assert cli.server is not None
    before = len(cli.server.state.downloads())
    again = cli("fetch", *ADHOC, "--concurrency", "1")
    assert again.exit_code == 0, again.stderr
    asked = [s.raw_query for s in cli.server.state.downloads()[before:]]
    assert len(asked) == 6 - len(on_disk)


# -- an empty answer never replaces data -------------------------------------------------------

M1_FEB = ["--meter", "M1", "--start", "2024-02-01", "--end", "2024-02-29"]
FEB_FILE = "meter/M1/M1_20240201_20240229_PST.mdef"


@pytest.mark.parametrize(
    "again", [["--overwrite"], ["--revisit-days", "30", "--today", "2024-03-05"]]
)
def test_an_empty_answer_to_any_refetch_leaves_the_data_in_place_until_data_comes(
    cli: Cli, faults: Faults, again: list[str]
) -> None:
    """February lands with data; a refetch of it is answered with an empty 200. The file
    stays in place (nothing in history), the run names it and exits 1, ``status`` counts it
    as failed, not as a clean revision; the next run asks again, and the answer with data
    (revised meanwhile) settles it: the first version goes to history, status exit 0."""
    assert cli("fetch", *M1_FEB).exit_code == 0
    path = cli.out / FEB_FILE
    first = path.read_bytes()
    assert first

    faults.script = {"M1": ["empty"]}
    empty = cli("fetch", *M1_FEB, *again)
    assert empty.exit_code == 1, empty.stderr
    assert "answered empty" in empty.stderr and FEB_FILE.rpartition("/")[2] in empty.stderr
    assert path.read_bytes() == first
    assert not (cli.out / ".omar-bulk" / "history").exists() or not any(
        p.is_file() for p in (cli.out / ".omar-bulk" / "history").rglob("*")
    )
    view = cli("status", str(cli.out), "--json", auth=False)
    assert view.exit_code == 1, view.stdout
    assert json.loads(view.stdout)["totals"]["revisions"] == 0

    assert cli.server is not None
    before = len(cli.server.state.downloads())
    faults.revision = 1
    settled = cli("fetch", *M1_FEB)  # no refetch option: the row's error asks again
    assert settled.exit_code == 0, settled.stderr
    assert len(cli.server.state.downloads()) == before + 1
    assert path.read_bytes() != first and path.read_bytes()
    history = [p for p in cli.out.rglob(f"{FEB_FILE.rpartition('/')[2]}.*") if p.is_file()]
    assert [p.read_bytes() for p in history] == [first]
    view = cli("status", str(cli.out), "--json", auth=False)
    assert view.exit_code == 0, view.stdout
