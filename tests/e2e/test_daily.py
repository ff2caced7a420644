"""The README's daily recipe, day after day: one file per chunk, fetch and status agreeing.

A window ending ``yesterday`` with monthly chunks makes the current month's chunk a day longer
every morning, under a new name. The longer file replaces the shorter one (kept in history);
a revisit that fails on a bad day is tried again by the next run; a rerun with nothing due
sends nothing at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from datetime import date
from pathlib import Path

import pytest

from omar_bulk.journal import Entry, Journal, format_version
from omar_bulk.manifest import Defaults, load_manifest
from omar_bulk.plan import Item
from omar_bulk.policy import decide, held_by_empty, superseded
from omar_bulk.results import ItemResult, NullObserver, Status
from omar_bulk.run import StopSignal, fetch_async
from omar_bulk.settings import Settings
from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import Faults, ServerThread, serve_in_thread

from ..conftest import Cli, Outcome, assert_verified, data_files, expected_body

MARCH = Item("meter", "M1", date(2024, 3, 1), date(2024, 3, 16), "mdef", "PST", "month")
MARCH_KEY = "meter/M1/M1_20240301_20240316_PST.mdef"


def entry(
    key: str, status: str = Status.DOWNLOADED, by: str | None = None, chunk: str | None = "month"
) -> Entry:
    return Entry(key, status, 10, "ab" * 32, 1, 1.0, None, by, chunk)


# --- the pure decisions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "replaced"),
    [
        (entry("meter/M1/M1_20240301_20240314_PST.mdef"), True),  # the chunk grew
        (entry("meter/M1/M1_20240301_20240315_PST.mdef", Status.FAILED), True),  # its day failed
        (entry("meter/M1/M1_20240301_20240301_PST.mdef", Status.EMPTY), True),
        (entry(MARCH_KEY), False),  # itself
        (entry("meter/M1/M1_20240301_20240331_PST.mdef"), False),  # longer: never replaced
        (entry("meter/M1/M1_20240301_20240314_DST.mdef"), False),  # another time type
        (entry("meter/M1/M1_20240301_20240314_PST.csv"), False),  # another format
        (entry("meter/M1/M1_20240301_20240314_PST.mdef", by="x"), False),  # replaced already
        (entry("meter/M1/M1_20240301_20240314_PST.mdef", Status.SUPERSEDED), False),
        (entry("meter/M1/not-a-data-file.mdef"), False),
        # another chunking's file: some other plan names it
        (entry("meter/M1/M1_20240301_20240314_PST.mdef", chunk="none"), False),
        (entry("meter/M1/M1_20240301_20240314_PST.mdef", chunk="7d"), False),
        # rows from before journal format 3 (no chunking): not if it ends on a Sunday
        (entry("meter/M1/M1_20240301_20240314_PST.mdef", chunk=None), True),
        (entry("meter/M1/M1_20240301_20240303_PST.mdef", chunk=None), False),
    ],
)
def test_which_earlier_files_a_settled_chunk_replaces(candidate: Entry, replaced: bool) -> None:
    """Only a shorter file of the same chunk (same id, format, time type, first day and
    chunking)."""
    found = superseded(MARCH, MARCH_KEY, [entry(MARCH_KEY), candidate])
    assert found == ([candidate] if replaced else [])


@pytest.mark.parametrize(
    ("chunk", "shorter_end", "replaced"),
    [
        ("month", date(2024, 1, 16), True),
        ("week", date(2024, 1, 2), True),
        ("month", date(2024, 1, 7), False),  # a Sunday: a whole week of a weekly pull
        ("month", date(2024, 1, 31), False),  # a whole month (under a longer none chunk)
        ("none", date(2024, 1, 16), False),
        ("7d", date(2024, 1, 3), False),
        ("", date(2024, 1, 16), False),  # the grown item's own chunking unknown
    ],
)
def test_rows_of_unknown_chunking_are_replaced_only_as_partial_months_and_weeks(
    chunk: str, shorter_end: date, replaced: bool
) -> None:
    """Journals before format 3 recorded no chunking: only a month or week chunk replaces
    such a row, and never one that ends where a whole month or week would."""
    longer = Item("meter", "M1", date(2024, 1, 1), date(2024, 3, 31), "mdef", "PST", chunk)
    key = "meter/M1/M1_20240101_20240331_PST.mdef"
    old = entry(f"meter/M1/M1_20240101_{shorter_end:%Y%m%d}_PST.mdef", chunk=None)
    assert superseded(longer, key, [entry(key), old]) == ([old] if replaced else [])


def test_an_empty_answer_replaces_only_what_holds_no_data() -> None:
    """The grown month answered empty: the shorter file with data stays (and is named for
    a warning); a shorter empty or failed one is replaced."""
    data = entry("meter/M1/M1_20240301_20240314_PST.mdef")
    failed = entry("meter/M1/M1_20240301_20240315_PST.mdef", Status.FAILED)
    nothing = entry("meter/M1/M1_20240301_20240301_PST.mdef", Status.EMPTY)
    rows = [entry(MARCH_KEY, Status.EMPTY), data, failed, nothing]
    assert superseded(MARCH, MARCH_KEY, rows) == [failed, nothing]
    assert held_by_empty(MARCH, MARCH_KEY, rows) == [data]
    assert held_by_empty(MARCH, MARCH_KEY, [entry(MARCH_KEY), data]) == []


def test_an_id_with_underscores_finds_only_its_own_chunk(tmp_path: Path) -> None:
    """The journal's range read of one chunk's files: ids holding ``_`` and ids that begin
    like another stay apart."""
    from omar_bulk.storage import Storage

    storage = Storage(tmp_path)
    storage.prepare()
    journal = Journal.open(storage.state)
    try:
        journal.begin_run()
        keys = [
            "meter/A_B/A_B_20240301_20240314_PST.mdef",
            "meter/A_B/A_B_20240301_20240315_PST.csv",
            "meter/A_B/A_B_20240302_20240314_PST.mdef",
            "meter/A_BC/A_BC_20240301_20240314_PST.mdef",
        ]
        for key in keys:
            name = key.rpartition("/")[2]
            ident, first, last, _ = name.rsplit("_", 3)
            start = date.fromisoformat(f"{first[:4]}-{first[4:6]}-{first[6:]}")
            end = date.fromisoformat(f"{last[:4]}-{last[4:6]}-{last[6:]}")
            item = Item("meter", ident, start, end, name.rpartition(".")[2], "PST")
            journal.record(key, ItemResult(item, "u", tmp_path, Status.EMPTY), None)
        found = sorted(e.path for e in journal.same_start(keys[0]))
    finally:
        journal.close()
    assert found == sorted(keys[:2])


@pytest.mark.parametrize(
    ("journal_entry", "on_disk", "revisit_from", "fetch"),
    [
        # a revisit that failed (the old file kept, the error recorded) is tried again by the
        # next run, even an ordinary one, and even once the item has left the window
        (Entry(MARCH_KEY, Status.DOWNLOADED, 10, "ab" * 32, 1, 1.0, "503"), True, None, True),
        (Entry(MARCH_KEY, Status.EMPTY, 0, None, None, 1.0, "503"), True, None, True),
        (Entry(MARCH_KEY, Status.DOWNLOADED, 10, "ab" * 32, 1, 1.0, None), True, None, False),
        # a file a longer one replaced, planned again: its file is in history, so it is
        # fetched again, never reported skipped with no file on disk
        (entry(MARCH_KEY, Status.SUPERSEDED, by="longer"), False, None, True),
        (entry(MARCH_KEY, Status.SUPERSEDED, by="longer"), False, date(2024, 1, 1), True),
    ],
)
def test_the_skip_rule_retries_failed_refetches_and_fetches_replaced_files_again(
    journal_entry: Entry, on_disk: bool, revisit_from: date | None, fetch: bool
) -> None:
    """Skipped means on disk and vouched for; anything else is asked for."""
    due = decide(MARCH, journal_entry, on_disk, overwrite=False, revisit_from=revisit_from)
    assert due.fetch is fetch
    if fetch:  # the file still on disk is what the new bytes are compared with
        assert due.previous == (journal_entry if on_disk else None)


# --- the daily recipe -------------------------------------------------------------------------

DAILY_TOML = '[[pull]]\nmeters = ["M1", "M2"]\nstart = 2024-01-01\nend = "yesterday"\n'


def _asked(server: ServerThread, since: int) -> list[tuple[str, str, str]]:
    """(id, first day, last day) of every download request since ``since``, sorted."""
    found = []
    for seen in server.state.downloads()[since:]:
        values = dict(part.split("=", 1) for part in seen.raw_query.split("&"))
        first, last = (values[k].replace("%2F", "/") for k in ("startDate", "endDate"))
        found.append((values["selectedMeters"], first[:5], last[:5]))
    return sorted(found)


def _day_range(key: str) -> tuple[date, date]:
    first, last = key.rsplit("/", 1)[1].split("_")[1:3]
    return (
        date(int(first[:4]), int(first[4:6]), int(first[6:])),
        date(int(last[:4]), int(last[4:6]), int(last[6:])),
    )


class Daily:
    """The README's daily script: fetch the manifest, then ``status --manifest``."""

    def __init__(self, cli: Cli, manifest: Path) -> None:
        assert cli.server is not None
        self.cli, self.server, self.manifest = cli, cli.server, manifest

    def run(
        self, today: str, *extra: str, revisit: bool = True
    ) -> tuple[int, int, list[tuple[str, str, str]], int]:
        """(fetch exit, status exit, requests sent, logins) for one morning."""
        state = self.server.state
        before, logins, log = len(state.downloads()), state.logins, len(state.log)
        window = ["--revisit-days", "20"] if revisit else []
        fetched = self.cli("fetch", str(self.manifest), "--today", today, *window, *extra)
        asked = _asked(self.server, before)
        assert len(state.log) - log == len(asked) + state.logins - logins  # nothing else sent
        status = self.status(today)
        return fetched.exit_code, status.exit_code, asked, state.logins - logins

    def status(self, today: str) -> Outcome:
        return self.cli(
            "status", str(self.cli.out), "--manifest", str(self.manifest), "--today", today,
            "--json", auth=False,
        )  # fmt: skip

    def view(self, today: str) -> dict[str, object]:
        return dict(json.loads(self.status(today).stdout))


def _files(out: Path, meter: str) -> list[str]:
    return [p.name for p in data_files(out) if p.parent.name == meter]


def test_the_daily_recipe_converges_on_one_clean_archive(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    """Four mornings (one of them bad), reruns in between: one file per meter and month with
    the latest bytes, every replaced file in history and in the journal, status agreeing
    with the fetches, and no request at all when nothing is due."""
    manifest = tmp_path / "daily.toml"
    manifest.write_text(DAILY_TOML)
    daily = Daily(cli, manifest)
    both = ("M1", "M2")

    # 03-15: the first run
    fetched, status, asked, _ = daily.run("2024-03-15")
    assert (fetched, status) == (0, 0)
    assert asked == sorted(
        (m, a, b) for m in both for a, b in [("01/01", "01/31"), ("02/01", "02/29"),
                                             ("03/01", "03/14")]
    )  # fmt: skip

    # 03-16: data resubmitted; March grew by a day
    faults.revision = 1
    fetched, status, asked, _ = daily.run("2024-03-16")
    assert (fetched, status) == (0, 0)
    assert asked == sorted((m, a, b) for m in both for a, b in [("02/01", "02/29"),
                                                                ("03/01", "03/15")])  # fmt: skip
    for meter in both:
        assert _files(cli.out, meter) == [
            f"{meter}_20240101_20240131_PST.mdef",
            f"{meter}_20240201_20240229_PST.mdef",
            f"{meter}_20240301_20240315_PST.mdef",
        ]
    assert daily.view("2024-03-16")["totals"] == {
        "failed": 0, "missing": 0, "revised": 2, "downloaded": 4, "empty": 0, "revisions": 2,
    }  # fmt: skip

    # 03-17, a bad day: every request for M1 fails; its revisit and its grown March fail
    faults.revision = 2
    faults.script = {"M1": ["503*"]}
    fetched, status, asked, _ = daily.run("2024-03-17", "--retries", "1")
    assert (fetched, status) == (1, 1)
    assert asked == sorted(
        [(m, "02/01", "02/29") for m in ("M1", "M1", "M2")]
        + [(m, "03/01", "03/16") for m in ("M1", "M1", "M2")]
    )
    view = daily.view("2024-03-17")
    assert sorted(f["path"] for f in view["failures"]) == [  # type: ignore[attr-defined]
        "meter/M1/M1_20240201_20240229_PST.mdef",
        "meter/M1/M1_20240301_20240316_PST.mdef",
    ]
    # M1 keeps its last good files; M2's March grew
    assert _files(cli.out, "M1")[1:] == [
        "M1_20240201_20240229_PST.mdef",
        "M1_20240301_20240315_PST.mdef",
    ]
    assert _files(cli.out, "M2")[2] == "M2_20240301_20240316_PST.mdef"

    # the same day, the server fine again: an ordinary run (no revisit) tries both again
    faults.script = {}
    fetched, status, asked, _ = daily.run("2024-03-17", revisit=False)
    assert (fetched, status) == (0, 0)
    assert asked == [("M1", "02/01", "02/29"), ("M1", "03/01", "03/16")]

    # and once more: nothing is due, nothing is sent, not even a login
    fetched, status, asked, logins = daily.run("2024-03-17", revisit=False)
    assert (fetched, status, asked, logins) == (0, 0, [], 0)

    # 04-02: March is whole, April begins; February has left the 20-day window
    faults.revision = 3
    fetched, status, asked, _ = daily.run("2024-04-02")
    assert (fetched, status) == (0, 0)
    assert asked == sorted((m, a, b) for m in both for a, b in [("03/01", "03/31"),
                                                                ("04/01", "04/01")])  # fmt: skip
    fetched, status, asked, logins = daily.run("2024-04-02", revisit=False)
    assert (fetched, status, asked, logins) == (0, 0, [], 0)

    # the folder: one file per meter and month, each with the bytes last served
    revision_of = {"20240101": 0, "20240201": 2, "20240301": 3, "20240401": 3}
    for meter in both:
        names = _files(cli.out, meter)
        assert names == [
            f"{meter}_20240101_20240131_PST.mdef",
            f"{meter}_20240201_20240229_PST.mdef",
            f"{meter}_20240301_20240331_PST.mdef",
            f"{meter}_20240401_20240401_PST.mdef",
        ]
        for name in names:
            start, end = _day_range(f"meter/{meter}/{name}")
            served = Faults(revision=revision_of[name.split("_")[1]])
            body = expected_body("meter", meter, start, end, faults=served)
            assert (cli.out / "meter" / meter / name).read_bytes() == body, name

    # history: every replaced file, byte for byte; the journal says where each went
    history = cli.out / ".omar-bulk" / "history" / "meter"
    kept = sorted(p.relative_to(history).as_posix() for p in history.rglob("*.mdef.*"))
    by_name = sorted(k.rsplit(".", 1)[0] for k in kept)
    assert by_name == sorted(
        f"{m}/{m}_{r}_PST.mdef"
        for m in both
        for r in ["20240201_20240229"] * 2
        + ["20240301_20240314", "20240301_20240315", "20240301_20240316"]
    )
    journal = Journal.open(cli.out / ".omar-bulk")
    try:
        for meter in both:
            march = f"meter/{meter}/{meter}_20240301_20240331_PST.mdef"
            versions = journal.versions(march)
            assert [Path(v[3] or "").name.rsplit(".", 1)[0] for v in versions] == [
                f"{meter}_20240301_{end}_PST.mdef" for end in ("20240314", "20240315", "20240316")
            ]
            for revision, (_, sha, size, archived) in enumerate(versions):
                assert archived is not None
                start, end = _day_range(archived.rsplit(".", 1)[0])
                body = (cli.out / archived).read_bytes()
                assert body == expected_body(
                    "meter", meter, start, end, faults=Faults(revision=revision)
                )
                assert (hashlib.sha256(body).hexdigest(), len(body)) == (sha, size)
            chain = [
                journal.get(f"meter/{meter}/{meter}_20240301_{end}_PST.mdef")
                for end in ("20240314", "20240315", "20240316")
            ]
            assert [(e.status, e.superseded_by) for e in chain if e] == [
                (Status.SUPERSEDED, f"meter/{meter}/{meter}_20240301_20240315_PST.mdef"),
                (Status.SUPERSEDED, f"meter/{meter}/{meter}_20240301_20240316_PST.mdef"),
                (Status.SUPERSEDED, march),
            ]
    finally:
        journal.close()

    # status counts each month once
    view = daily.view("2024-04-02")
    assert view["complete"] is True
    assert view["totals"] == {
        "failed": 0, "missing": 0, "revised": 2, "downloaded": 6, "empty": 0, "revisions": 4,
    }  # fmt: skip
    for series in view["series"]:  # type: ignore[attr-defined]
        assert sum(series["files"].values()) == 4
    report = json.loads((cli.out / ".omar-bulk" / "last-run.json").read_text())
    assert report["summary"]["superseded"] == 0 and report["summary"]["skipped"] == 8
    assert_verified(cli.out)


def test_a_piled_up_archive_is_cleaned_up_by_the_next_run(
    cli: Cli, faults: Faults, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An archive where partial months piled up (as a release before journal format 2 left
    them) is cleaned up by the next run, even one that has nothing to fetch."""
    import omar_bulk.engine

    manifest = tmp_path / "daily.toml"
    manifest.write_text(DAILY_TOML.replace('"M1", "M2"', '"M1"'))
    daily = Daily(cli, manifest)
    with monkeypatch.context() as old_release:
        from omar_bulk.policy import Replacing

        old_release.setattr(omar_bulk.engine, "replacing", lambda *_: Replacing([], []))
        for day, revision in (("2024-03-15", 0), ("2024-03-16", 1), ("2024-03-17", 2)):
            faults.revision = revision
            assert daily.run(day, revisit=False)[:2] == (0, 0)
    piled = _files(cli.out, "M1")
    assert len(piled) == 5  # two whole months, three versions of March
    # the journal as 0.2 left it: format 1, no superseded_by column, no chunk column (the
    # partial months are replaced by the rule for rows of unknown chunking)
    db = sqlite3.connect(cli.out / ".omar-bulk" / "journal.sqlite3")
    try:
        db.execute("ALTER TABLE items DROP COLUMN superseded_by")
        db.execute("ALTER TABLE items DROP COLUMN chunk")
        db.execute("PRAGMA user_version = 1")
        db.commit()
    finally:
        db.close()
    status = cli("status", str(cli.out), auth=False)
    assert "1 series, 5 files" in status.stdout  # before: March three times

    fetched, status_code, asked, logins = daily.run("2024-03-17", revisit=False)
    assert (fetched, status_code, asked, logins) == (0, 0, [], 0)
    assert _files(cli.out, "M1") == [
        "M1_20240101_20240131_PST.mdef",
        "M1_20240201_20240229_PST.mdef",
        "M1_20240301_20240316_PST.mdef",
    ]
    history = cli.out / ".omar-bulk" / "history" / "meter" / "M1"
    for end, revision in (("20240314", 0), ("20240315", 1)):
        (old,) = history.glob(f"M1_20240301_{end}_PST.mdef.*")
        start, last = _day_range(f"meter/M1/{old.name.rsplit('.', 1)[0]}")
        assert old.read_bytes() == expected_body(
            "meter", "M1", start, last, faults=Faults(revision=revision)
        )
    assert (cli.out / ".omar-bulk" / "journal.sqlite3.v1-backup").exists()
    report = json.loads((cli.out / ".omar-bulk" / "last-run.json").read_text())
    assert report["summary"]["superseded"] == 2
    view = daily.view("2024-03-17")
    assert view["totals"]["downloaded"] == 3 and view["complete"] is True  # type: ignore[index]
    assert_verified(cli.out)


def test_the_daily_recipe_with_a_rolling_start_converges_too(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    """A window that rolls (``start = "-75d"``): its start is rounded down to the 1st of its
    month, so each morning asks only for the grown month (and the revisits), the first month
    stays whole until it leaves the window whole, and no shorter first month piles up."""
    manifest = tmp_path / "rolling.toml"
    manifest.write_text('[[pull]]\nmeters = ["M1"]\nstart = "-75d"\nend = "yesterday"\n')
    daily = Daily(cli, manifest)

    # 03-15: -75d is 2023-12-31, so the window begins on 2023-12-01
    fetched, status, asked, _ = daily.run("2024-03-15", revisit=False)
    assert (fetched, status) == (0, 0)
    assert asked == [("M1", a, b) for a, b in [("01/01", "01/31"), ("02/01", "02/29"),
                                               ("03/01", "03/14"), ("12/01", "12/31")]]  # fmt: skip

    # 03-16 and 03-17: -75d is 01-01, then 01-02 (January's 1st still): only March grows
    for today, last in (("2024-03-16", "03/15"), ("2024-03-17", "03/16")):
        fetched, status, asked, _ = daily.run(today, revisit=False)
        assert (fetched, status, asked) == (0, 0, [("M1", "03/01", last)])
    # and with a revisit window: the same files again, no new ones
    faults.revision = 1
    fetched, status, asked, _ = daily.run("2024-03-17")
    assert (fetched, status) == (0, 0)
    assert asked == [("M1", "02/01", "02/29"), ("M1", "03/01", "03/16")]
    assert _files(cli.out, "M1") == [
        "M1_20231201_20231231_PST.mdef",  # left the window whole; kept, as any fetched file
        "M1_20240101_20240131_PST.mdef",
        "M1_20240201_20240229_PST.mdef",
        "M1_20240301_20240316_PST.mdef",
    ]
    fetched, status, asked, logins = daily.run("2024-03-17", revisit=False)
    assert (fetched, status, asked, logins) == (0, 0, [], 0)
    assert_verified(cli.out)


@pytest.mark.parametrize(
    ("args", "first", "warned"),
    [
        (["--chunk", "month"], "03%2F01%2F2024", False),
        (["--chunk", "7d"], "03%2F07%2F2024", False),  # 19,789 days since 1970: 7 x 2,827
        (["--chunk", "none"], "03%2F10%2F2024", True),  # no grid: warned, a file a day
        (["--chunk", "month", "--start", "2024-03-10"], "03%2F10%2F2024", False),  # fixed
    ],
)
def test_a_relative_start_on_the_command_line_is_rounded_down_to_its_chunk(
    offline_cli: Cli, args: list[str], first: str, warned: bool
) -> None:
    """``--start -5d`` as a manifest's start: rounded to the chunk's first day; ``none``
    keeps the day and warns that the window makes a new file every morning."""
    start = [] if "--start" in args else ["--start", "-5d"]
    outcome = offline_cli(
        "fetch", "--meter", "M1", *start, "--end", "yesterday", "--today", "2024-03-15",
        "--dry-run", *args, auth=False,
    )  # fmt: skip
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stdout.split()[0].split("startDate=")[1].split("&")[0] == first
    assert ("makes a new file every day" in outcome.stderr) is warned


def test_a_relative_range_that_ends_before_it_starts_is_still_refused(
    offline_cli: Cli,
) -> None:
    """Rounding happens after the dates as written are checked: ``-5d`` to ``-10d`` is an
    end before its start, though March's 1st (the rounded start) is before both."""
    outcome = offline_cli(
        "fetch", "--meter", "M1", "--start", "-5d", "--end", "-10d", "--today", "2024-03-20",
        "--dry-run", auth=False,
    )  # fmt: skip
    assert outcome.exit_code == 2 and "before start" in outcome.stderr


# --- chunkings side by side -------------------------------------------------------------------


def _chunks(out: Path) -> dict[str, tuple[str, str | None]]:
    """Every journal row: key's file name -> (status, chunk)."""
    db = sqlite3.connect(out / ".omar-bulk" / "journal.sqlite3")
    try:
        rows = db.execute("SELECT path, status, chunk FROM items").fetchall()
    finally:
        db.close()
    return {path.rsplit("/", 1)[1]: (status, chunk) for path, status, chunk in rows}


def test_a_grown_chunk_replaces_only_files_of_its_own_chunking(cli: Cli) -> None:
    """Monthly files, then a ``--chunk none`` quarter of the same meter that later grows:
    the grown quarter replaces the shorter quarter, never the monthly January that starts
    on the same day. The journal records each file's chunking."""
    one = ["--meter", "M1", "--start", "2024-01-01"]
    assert cli("fetch", *one, "--end", "2024-03-31").exit_code == 0
    assert cli("fetch", *one, "--end", "2024-03-31", "--chunk", "none").exit_code == 0
    assert cli("fetch", *one, "--end", "2024-04-02", "--chunk", "none").exit_code == 0
    assert _files(cli.out, "M1") == [
        "M1_20240101_20240131_PST.mdef",
        "M1_20240101_20240402_PST.mdef",
        "M1_20240201_20240229_PST.mdef",
        "M1_20240301_20240331_PST.mdef",
    ]
    rows = _chunks(cli.out)
    assert rows["M1_20240101_20240131_PST.mdef"] == ("downloaded", "month")
    assert rows["M1_20240101_20240331_PST.mdef"] == ("superseded", "none")
    assert rows["M1_20240101_20240402_PST.mdef"] == ("downloaded", "none")
    # the monthly plan still finds its January: nothing to ask
    assert cli.server is not None
    before = len(cli.server.state.downloads())
    assert cli("fetch", *one, "--end", "2024-03-31").exit_code == 0
    assert len(cli.server.state.downloads()) == before
    assert_verified(cli.out)


def test_a_format_2_journal_gains_the_chunk_column(cli: Cli) -> None:
    """A journal of format 2 is migrated to 3 after a backup: its rows keep everything and
    have no chunking until they are written again."""
    one = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-02-29"]
    assert cli("fetch", *one).exit_code == 0
    path = cli.out / ".omar-bulk" / "journal.sqlite3"
    db = sqlite3.connect(path)
    try:
        db.execute("ALTER TABLE items DROP COLUMN chunk")
        db.execute("PRAGMA user_version = 2")
        db.commit()
    finally:
        db.close()
    assert cli("fetch", *one).exit_code == 0  # skips both: nothing written to their rows
    assert (cli.out / ".omar-bulk" / "journal.sqlite3.v2-backup").exists()
    assert set(_chunks(cli.out).values()) == {("downloaded", None)}
    assert cli("fetch", *one, "--overwrite").exit_code == 0  # rewritten: now they know
    assert set(_chunks(cli.out).values()) == {("downloaded", "month")}
    assert_verified(cli.out)
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == format_version()
    finally:
        db.close()


# --- an interrupted run accounts for what it sent ---------------------------------------------


class _StopWhenBusy(NullObserver):
    """Asks the run to stop once one item waits out a Retry-After and another is receiving."""

    def __init__(self, stop: StopSignal) -> None:
        self.stop = stop
        self.waiting = self.receiving = False

    def retrying(self, item: Item, attempt: int, reason: str, delay: float) -> None:
        self.waiting = True
        self._maybe_stop()

    def received(self, item: Item, nbytes: int, expected: int | None) -> None:
        self.receiving = True
        self._maybe_stop()

    def _maybe_stop(self) -> None:
        if self.waiting and self.receiving and not self.stop.requested:
            self.stop.request()


def test_an_interrupted_run_reports_the_items_it_had_sent(pki: TestPKI, tmp_path: Path) -> None:
    """An item in flight and one waiting out a Retry-After are attempted: the report lists
    them as ``interrupted``, and ``not_attempted`` counts only the item never sent."""
    faults = Faults(retry_after=30, trickle=0.5, padding=400_000)
    faults.script = {"M1": ["503*"]}
    manifest = tmp_path / "m.toml"
    manifest.write_text(
        '[[pull]]\nmeters = ["M1", "M2", "M3"]\nstart = 2024-01-01\nend = 2024-01-31\n'
    )
    report = tmp_path / "report.json"
    with serve_in_thread(pki, faults) as server:
        settings = Settings(
            plan=load_manifest(manifest, Defaults()),
            base_url=server.base_url,
            out_dir=tmp_path / "out",
            cert=pki.client_p12,
            ca_bundle=pki.ca,
            password=lambda _what: DEMO_PASSWORD,
            concurrency=2,
            retry_wait=0.01,
            report=report,
        )
        stop = StopSignal()
        result = asyncio.run(
            asyncio.wait_for(
                fetch_async(settings, observer=_StopWhenBusy(stop), stop=stop), timeout=20
            )
        )
    assert result.exit_code == 130
    written = json.loads(report.read_text())
    summary = written["summary"]
    assert summary["interrupted"] is True
    assert (summary["interrupted_items"], summary["not_attempted"]) == (2, 1)
    items = {Path(i["path"]).name.split("_")[0]: i for i in written["items"]}
    assert sorted(items) == ["M1", "M2"]
    assert {i["status"] for i in items.values()} == {"interrupted"}
    assert items["M1"]["attempts"] == 1 and items["M2"]["attempts"] == 1
    assert not list((tmp_path / "out").rglob("*.part"))
    assert_verified(tmp_path / "out")


def test_a_fixed_end_pull_beside_a_yesterday_pull_keeps_both_files_and_asks_nothing_again(
    cli: Cli, tmp_path: Path
) -> None:
    """A shorter file the plan names too is not retired by another pull's longer one."""
    manifest = tmp_path / "two.toml"
    manifest.write_text(
        '[[pull]]\nmeters = ["M1"]\nstart = 2024-03-01\nend = 2024-03-10\n\n'
        '[[pull]]\nmeters = ["M1"]\nstart = 2024-03-01\nend = "yesterday"\n'
    )
    assert cli("fetch", str(manifest), "--today", "2024-03-16").exit_code == 0
    assert cli.server is not None
    first = len(cli.server.state.downloads())
    for _ in range(3):
        assert cli("fetch", str(manifest), "--today", "2024-03-16").exit_code == 0
    assert len(cli.server.state.downloads()) == first
    assert {p.name for p in data_files(cli.out)} == {
        "M1_20240301_20240310_PST.mdef",
        "M1_20240301_20240315_PST.mdef",
    }
    history = cli.out / ".omar-bulk" / "history"
    assert not history.exists() or not [p for p in history.rglob("*") if p.is_file()]
    status = cli(
        "status", str(cli.out), "--manifest", str(manifest), "--today", "2024-03-16", auth=False
    )
    assert status.exit_code == 0, status.stdout
    assert_verified(cli.out)


def _asked_count(server: ServerThread, since: int) -> int:
    return len(server.state.downloads()) - since


def _status(cli: Cli, manifest: Path, *extra: str) -> int:
    return cli("status", str(cli.out), "--manifest", str(manifest), *extra, auth=False).exit_code


def test_a_longer_file_of_another_chunking_does_not_take_a_months_file_away(
    cli: Cli, tmp_path: Path
) -> None:
    """A monthly archive, then one ad-hoc ``--chunk none`` pull of the same meter over the
    quarter (one file for an analysis) into the same OUT. The quarter file starts on
    January's first day and is longer, so it "supersedes" January: the monthly file goes to
    history and its row is marked superseded. From then on the monthly manifest's fetch
    calls January "skipped" (exit 0) although no January file is in meter/, while
    ``status --manifest`` says January is missing (exit 1): fetch and status disagree every
    morning, and no run will ever bring January back."""
    monthly = tmp_path / "monthly.toml"
    monthly.write_text('[[pull]]\nmeters = ["M1"]\nstart = 2024-01-01\nend = 2024-03-31\n')
    assert cli("fetch", str(monthly)).exit_code == 0
    assert _status(cli, monthly) == 0
    january = cli.out / "meter" / "M1" / "M1_20240101_20240131_PST.mdef"
    assert january.is_file()

    adhoc = cli("fetch", "--meter", "M1", "--start", "2024-01-01", "--end", "2024-03-31",
                "--chunk", "none")  # fmt: skip
    assert adhoc.exit_code == 0

    again = cli("fetch", str(monthly))
    # the monthly pull's own file is still where its manifest expects it ...
    assert january.is_file(), "the monthly January file was moved to history by another pull"
    # ... and fetch and status agree about the monthly manifest
    assert (again.exit_code, _status(cli, monthly)) == (0, 0)


def test_an_empty_answer_for_the_grown_month_does_not_retire_its_data(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    """The daily recipe. On 03-15 March (01..14) lands with data. On 04-01 the whole March
    (01..31) is answered with an empty 200 (the server's "no data", or a glitch): the longer
    empty entry "supersedes" the file holding 14 days of data, which leaves meter/ for
    history. ``status`` then shows March as empty and complete (exit 0), and an empty item
    is never asked again (outside ``--revisit-days``): the archive lost March's data
    silently. An empty answer should not replace data (or at least not count as complete)."""
    manifest = tmp_path / "daily.toml"
    manifest.write_text('[[pull]]\nmeters = ["M1"]\nstart = 2024-02-01\nend = "yesterday"\n')
    assert cli("fetch", str(manifest), "--today", "2024-03-15").exit_code == 0
    partial = cli.out / "meter" / "M1" / "M1_20240301_20240314_PST.mdef"
    assert partial.stat().st_size > 0

    faults.script = {"M1": ["empty"]}
    # one request on 04-01: March whole (February is done and outside any revisit window)
    assert cli("fetch", str(manifest), "--today", "2024-04-01").exit_code == 0
    march = list((cli.out / "meter" / "M1").glob("M1_202403*"))
    assert march, "March's data left meter/ for history, replaced by an empty answer"


def test_n_day_chunks_with_a_rolling_start_do_not_refetch_the_whole_window_daily(
    cli: Cli, tmp_path: Path
) -> None:
    """README and RELIABILITY warn that a rolling start (``start = "-1826d"``) makes *the
    first chunk* one day shorter every morning. With ``chunk = "7d"`` every chunk is counted
    from the start, so every boundary moves each day: the next morning re-requests the whole
    window (18 of 18 chunks here; about 26,000 requests a day for 100 meters over five years,
    against a shared production server), 18 more files pile up, and ``status`` calls the
    36 files complete. Refuse the combination (exit 2), anchor N-day chunks to something
    that does not roll, or at least warn and document it."""
    assert cli.server is not None
    manifest = tmp_path / "roll.toml"
    manifest.write_text(
        'chunk = "7d"\n[[pull]]\nmeters = ["M1"]\nstart = "-120d"\nend = "yesterday"\n'
    )
    first = cli("fetch", str(manifest), "--today", "2024-06-01")
    if first.exit_code == 2:  # refused before anything was sent: fine
        return
    before = len(cli.server.state.downloads())
    cli("fetch", str(manifest), "--today", "2024-06-02")
    assert _asked_count(cli.server, before) <= 2, "the whole window was requested again"
