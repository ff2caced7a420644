"""The status view from a journal built in a temporary folder: no server, no subprocess.

Fast enough to run for every mutant of coverage.py (``make mutation``); the end-to-end checks of
``omar-bulk status`` are in e2e/test_currency and e2e/test_status.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from omar_bulk.coverage import (
    Cell,
    Coverage,
    Failure,
    Series,
    months_between,
    read_coverage,
)
from omar_bulk.errors import UsageError
from omar_bulk.journal import JOURNAL_NAME, Entry, Journal
from omar_bulk.plan import Item, Plan, make_pull
from omar_bulk.protocol import relative_key
from omar_bulk.results import ItemResult, Status

JAN = (date(2024, 1, 1), date(2024, 1, 31))
FEB = (date(2024, 2, 1), date(2024, 2, 29))
MAR = (date(2024, 3, 1), date(2024, 3, 31))


def item(
    ident: str,
    span: tuple[date, date],
    *,
    kind: str = "meter",
    fmt: str = "mdef",
    time_type: str = "PST",
) -> Item:
    return Item(kind, ident, span[0], span[1], fmt, time_type)


class Archive:
    """An output folder with a journal, filled through the journal's own API."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.state = out / ".omar-bulk"
        self.state.mkdir(parents=True)
        self.journal = Journal.open(self.state)
        self.journal.begin_run()

    def put(
        self, it: Item, status: Status, *, error: str | None = None, previous: Entry | None = None
    ) -> str:
        key = relative_key(it)
        digest = "ab" * 32 if status in (Status.DOWNLOADED, Status.REVISED) else None
        result = ItemResult(it, "https://x/", self.out / key, status, 3, digest, 1, error)
        self.journal.record(key, result, 1, previous=previous)
        return key

    def downloaded(self, it: Item) -> str:
        return self.put(it, Status.DOWNLOADED)

    def revised(self, it: Item, times: int = 1) -> str:
        key = self.downloaded(it)
        for _ in range(times):
            self.put(it, Status.REVISED)
        return key

    def failed_revisit(self, it: Item, error: str) -> str:
        key = self.downloaded(it)
        previous = self.journal.get(key)
        assert previous is not None
        return self.put(it, Status.FAILED, error=error, previous=previous)

    def set_fetched(self, key: str, when: float) -> None:
        db = sqlite3.connect(self.state / JOURNAL_NAME)
        with db:
            db.execute("UPDATE items SET fetched_at=? WHERE path=?", (when, key))
        db.close()

    def close(self) -> None:
        self.journal.close()


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    made = Archive(tmp_path / "out")
    yield made
    made.close()


def plan_of(*pulls: tuple[str, tuple[date, date], str]) -> Plan:
    """A plan of meter pulls (id, range, chunk), mdef PST."""
    built = [
        make_pull(
            kind="meter",
            ids=[ident],
            start=span[0],
            end=span[1],
            format="mdef",
            time_type="PST",
            chunk=chunk,
            where="test",
        )
        for ident, span, chunk in pulls
    ]
    return Plan(lambda: built)


# --- months_between ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "months"),
    [
        (date(2024, 1, 1), date(2024, 1, 31), ["2024-01"]),
        (date(2024, 1, 31), date(2024, 2, 1), ["2024-01", "2024-02"]),
        (date(2023, 11, 15), date(2024, 2, 3), ["2023-11", "2023-12", "2024-01", "2024-02"]),
        (date(2024, 12, 1), date(2025, 1, 1), ["2024-12", "2025-01"]),
        (date(1, 1, 1), date(1, 1, 1), ["0001-01"]),
        (date(2024, 3, 1), date(2024, 2, 28), []),
    ],
)
def test_months_between_lists_every_month_the_range_touches(
    start: date, end: date, months: list[str]
) -> None:
    assert months_between(start, end) == months


def test_months_between_spans_whole_years() -> None:
    months = months_between(date(2020, 1, 1), date(2022, 12, 31))
    assert len(months) == 36 and months[0] == "2020-01" and months[-1] == "2022-12"
    assert months[12] == "2021-01"


# --- cells and series ----------------------------------------------------------------------------


SEVERITY = ["failed", "missing", "revised", "downloaded", "empty"]


@pytest.mark.parametrize("first", SEVERITY)
@pytest.mark.parametrize("second", SEVERITY)
def test_a_cell_shows_the_worst_state_and_adds_revisions(first: str, second: str) -> None:
    cell = Cell(first, 2)
    cell.merge(second, 3)
    assert cell.state == SEVERITY[min(SEVERITY.index(first), SEVERITY.index(second))]
    assert cell.revisions == 5


def test_a_new_cell_has_no_revisions() -> None:
    assert Cell("downloaded").revisions == 0


@pytest.mark.parametrize(
    ("fmt", "time_type", "label"),
    [
        ("mdef", "PST", "M1"),
        ("csv", "PST", "M1 (csv)"),
        ("mdef", "DST", "M1 (DST)"),
        ("csv", "DST", "M1 (csv DST)"),
    ],
)
def test_a_series_label_names_only_what_is_not_the_default(
    fmt: str, time_type: str, label: str
) -> None:
    assert Series("meter", "M1", fmt, time_type).label == label


def test_files_held_counts_everything_but_the_missing() -> None:
    series = Series("meter", "M1", "mdef", "PST")
    assert series.files == dict.fromkeys(SEVERITY, 0)
    assert series.revisions == 0 and series.months == {}
    series.files.update(failed=1, missing=7, revised=2, downloaded=3, empty=4)
    assert series.files_held == 10
    # Each series has its own counts.
    assert Series("meter", "M2", "mdef", "PST").files["missing"] == 0


# --- read_coverage: the states of cells ----------------------------------------------------------


def cells(coverage: Coverage, ident: str = "M1") -> dict[str, tuple[str, int]]:
    (series,) = [s for s in coverage.series if s.id == ident]
    return {month: (c.state, c.revisions) for month, c in series.months.items()}


@pytest.mark.parametrize(
    ("make", "state"),
    [
        (lambda a, it: a.downloaded(it), "downloaded"),
        (lambda a, it: a.put(it, Status.EMPTY), "empty"),
        (lambda a, it: a.put(it, Status.FAILED, error="HTTP 500"), "failed"),
        (lambda a, it: a.revised(it), "revised"),
        (lambda a, it: a.failed_revisit(it, "timed out"), "failed"),
        (lambda a, it: (a.put(it, Status.EMPTY), a.put(it, Status.REVISED)), "revised"),
    ],
    ids=["downloaded", "empty", "failed", "revised", "failed-revisit", "empty-then-revised"],
)
def test_each_journal_state_becomes_its_cell(archive: Archive, make: object, state: str) -> None:
    make(archive, item("M1", JAN))  # type: ignore[operator]
    coverage = read_coverage(archive.out)
    assert [s.state for s in [coverage.series[0].months["2024-01"]]] == [state]
    assert coverage.totals == {s: int(s == state) for s in SEVERITY}
    assert coverage.series[0].files == coverage.totals
    assert coverage.complete is (state not in ("failed", "missing"))


def test_an_empty_file_whose_revisit_failed_is_failed(archive: Archive) -> None:
    it = item("M1", JAN)
    key = archive.put(it, Status.EMPTY)
    previous = archive.journal.get(key)
    archive.put(it, Status.FAILED, error="HTTP 503", previous=previous)
    coverage = read_coverage(archive.out)
    assert cells(coverage) == {"2024-01": ("failed", 0)}
    assert coverage.failures == (Failure(key, "HTTP 503"),)


def test_failures_carry_the_journals_error_or_say_failed(archive: Archive) -> None:
    with_error = archive.put(item("M1", JAN), Status.FAILED, error="HTTP 500 at the server")
    without = archive.put(item("M1", FEB), Status.FAILED)
    coverage = read_coverage(archive.out)
    assert sorted(coverage.failures, key=lambda f: f.path) == sorted(
        [Failure(with_error, "HTTP 500 at the server"), Failure(without, "failed")],
        key=lambda f: f.path,
    )


def test_revisions_are_counted_per_cell_series_and_total(archive: Archive) -> None:
    archive.revised(item("M1", JAN), times=2)
    archive.revised(item("M1", FEB), times=1)
    archive.downloaded(item("M1", MAR))
    archive.revised(item("M2", JAN), times=3)
    coverage = read_coverage(archive.out)
    assert cells(coverage) == {
        "2024-01": ("revised", 2),
        "2024-02": ("revised", 1),
        "2024-03": ("downloaded", 0),
    }
    by_id = {s.id: s for s in coverage.series}
    assert by_id["M1"].revisions == 3 and by_id["M2"].revisions == 3
    assert by_id["M1"].files["revised"] == 2 and by_id["M1"].files["downloaded"] == 1
    assert coverage.revisions == 6
    assert coverage.totals == {"failed": 0, "missing": 0, "revised": 3, "downloaded": 1, "empty": 0}


def test_items_that_share_a_month_merge_into_its_cell(archive: Archive) -> None:
    # Weekly chunks: several items per month, and one that straddles two months.
    archive.downloaded(item("M1", (date(2024, 1, 1), date(2024, 1, 7))))
    archive.revised(item("M1", (date(2024, 1, 8), date(2024, 1, 14))))
    archive.put(item("M1", (date(2024, 1, 29), date(2024, 2, 4))), Status.EMPTY)
    archive.put(item("M1", (date(2024, 2, 5), date(2024, 2, 11))), Status.FAILED, error="x")
    archive.revised(item("M1", (date(2024, 3, 4), date(2024, 3, 10))), times=2)
    archive.revised(item("M1", (date(2024, 3, 11), date(2024, 3, 17))), times=1)
    coverage = read_coverage(archive.out)
    assert cells(coverage) == {
        "2024-01": ("revised", 1),
        "2024-02": ("failed", 0),
        "2024-03": ("revised", 3),
    }


def test_one_item_over_several_months_fills_each_of_them(archive: Archive) -> None:
    archive.revised(item("M1", (date(2023, 12, 15), date(2024, 2, 10))))
    coverage = read_coverage(archive.out)
    assert cells(coverage) == {m: ("revised", 1) for m in ("2023-12", "2024-01", "2024-02")}


def test_series_are_kept_apart_and_ordered(archive: Archive) -> None:
    archive.downloaded(item("M2", JAN))
    archive.downloaded(item("M1", JAN, time_type="DST"))
    archive.downloaded(item("M1", JAN, fmt="csv"))
    archive.downloaded(item("M1", JAN))
    archive.downloaded(item("G1", JAN, kind="group"))
    archive.downloaded(item("M1", FEB))
    coverage = read_coverage(archive.out)
    assert [(s.kind, s.id, s.format, s.time_type) for s in coverage.series] == [
        ("group", "G1", "mdef", "PST"),
        ("meter", "M1", "csv", "PST"),
        ("meter", "M1", "mdef", "DST"),
        ("meter", "M1", "mdef", "PST"),
        ("meter", "M2", "mdef", "PST"),
    ]
    assert [s.files["downloaded"] for s in coverage.series] == [1, 1, 1, 2, 1]
    assert coverage.totals["downloaded"] == 6
    assert coverage.complete and coverage.notes == () and coverage.failures == ()
    assert coverage.out == archive.out


def test_the_last_fetch_is_the_latest_time_in_the_journal(archive: Archive) -> None:
    keys = [archive.downloaded(item("M1", span)) for span in (JAN, FEB, MAR)]
    for key, when in zip(keys, (1_700_000_000.0, 1_700_000_500.0, 1_699_000_000.0), strict=True):
        archive.set_fetched(key, when)
    assert read_coverage(archive.out).last_fetch == 1_700_000_500.0


def test_a_superseded_file_is_not_counted(archive: Archive) -> None:
    short = archive.downloaded(item("M1", (date(2024, 1, 1), date(2024, 1, 15))))
    longer = archive.downloaded(item("M1", JAN))
    old = archive.journal.get(short)
    assert old is not None
    archive.journal.supersede(old, longer, None)
    coverage = read_coverage(archive.out)
    assert coverage.totals["downloaded"] == 1
    assert cells(coverage) == {"2024-01": ("downloaded", 0)}


# --- read_coverage: a plan, an empty or absent journal -------------------------------------------


def test_no_journal_and_no_plan_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no omar-bulk journal"):
        read_coverage(tmp_path)


def test_a_damaged_journal_is_said_to_be_unreadable_not_absent(tmp_path: Path) -> None:
    state = tmp_path / ".omar-bulk"
    state.mkdir()
    (state / JOURNAL_NAME).write_bytes(b"this is not a database, " * 100)
    with pytest.raises(UsageError, match="cannot read the journal"):
        read_coverage(tmp_path)


def test_a_journal_that_lists_nothing_is_not_complete(archive: Archive) -> None:
    coverage = read_coverage(archive.out)
    assert coverage.series == () and coverage.last_fetch is None
    assert not coverage.complete
    assert coverage.notes == (
        f"nothing has been fetched into {archive.out} yet: the journal lists no files"
        " (did the last fetch reach the server?)",
    )


def test_a_plan_without_a_journal_is_all_missing(tmp_path: Path) -> None:
    coverage = read_coverage(tmp_path, plan=plan_of(("M1", (JAN[0], MAR[1]), "month")))
    assert cells(coverage) == {m: ("missing", 0) for m in ("2024-01", "2024-02", "2024-03")}
    assert coverage.totals == {"failed": 0, "missing": 3, "revised": 0, "downloaded": 0, "empty": 0}
    assert coverage.series[0].files_held == 0
    assert not coverage.complete
    (note,) = coverage.notes
    assert note.startswith("nothing has been fetched")


def test_missing_items_alone_make_status_incomplete(archive: Archive) -> None:
    archive.downloaded(item("M1", JAN))
    archive.downloaded(item("M1", FEB))
    plan = plan_of(("M1", (JAN[0], MAR[1]), "month"))
    coverage = read_coverage(archive.out, plan=plan)
    assert cells(coverage) == {
        "2024-01": ("downloaded", 0),
        "2024-02": ("downloaded", 0),
        "2024-03": ("missing", 0),
    }
    assert coverage.totals["missing"] == 1 and coverage.totals["downloaded"] == 2
    assert coverage.series[0].files == {
        "failed": 0,
        "missing": 1,
        "revised": 0,
        "downloaded": 2,
        "empty": 0,
    }
    assert not coverage.complete
    # The missing file's id is in the journal, so status says which files it holds there.
    (hint,) = coverage.notes
    assert hint.startswith("1 planned files are missing") and "(mdef PST)" in hint


def test_a_complete_plan_is_complete(archive: Archive) -> None:
    for span in (JAN, FEB):
        archive.downloaded(item("M1", span))
    coverage = read_coverage(archive.out, plan=plan_of(("M1", (JAN[0], FEB[1]), "month")))
    assert coverage.complete and coverage.notes == () and coverage.totals["missing"] == 0


def test_a_missing_item_merges_into_a_held_month_as_its_worst_state(archive: Archive) -> None:
    # Weekly plan, one week of January held, the rest missing; February's item is revised, so
    # missing (worse) shows there too; a failed month stays failed.
    archive.revised(item("M1", (date(2024, 2, 5), date(2024, 2, 11))))
    archive.put(item("M1", (date(2024, 3, 4), date(2024, 3, 10))), Status.FAILED, error="x")
    plan = plan_of(("M1", (date(2024, 1, 29), date(2024, 3, 10)), "week"))
    coverage = read_coverage(archive.out, plan=plan)
    assert cells(coverage) == {
        "2024-01": ("missing", 0),
        "2024-02": ("missing", 1),
        "2024-03": ("failed", 0),
    }
    assert coverage.totals["missing"] == 4


def test_files_held_under_other_names_are_hinted_at(archive: Archive) -> None:
    # Fetched month by month in csv; status asked about mdef weeks of the same id, and about an
    # id the journal has never seen.
    archive.downloaded(item("M1", JAN, fmt="csv"))
    archive.downloaded(item("M1", JAN, fmt="csv", time_type="DST"))
    plan = plan_of(("M1", (date(2024, 1, 1), date(2024, 1, 14)), "week"), ("M9", JAN, "month"))
    coverage = read_coverage(archive.out, plan=plan)
    (hint,) = coverage.notes
    assert hint.startswith("2 planned files are missing, but the journal holds other files")
    assert "(csv DST, csv PST)" in hint
    assert "--chunk, --format or --time-type" in hint
    planned = {(s.id, s.format): s.files["missing"] for s in coverage.series}
    assert planned == {("M1", "csv"): 0, ("M1", "mdef"): 2, ("M9", "mdef"): 1}


def test_the_hint_names_only_held_formats_of_the_same_ids(archive: Archive) -> None:
    archive.downloaded(item("M1", JAN, fmt="csv"))
    archive.downloaded(item("M2", JAN, time_type="DST"))
    plan = plan_of(("M1", FEB, "month"))
    (hint,) = read_coverage(archive.out, plan=plan).notes
    # M1 mdef PST is only planned (nothing held), M2 is not an id of the missing file.
    assert "(csv PST)" in hint and "DST" not in hint


def test_planned_files_the_journal_holds_are_not_missing(archive: Archive) -> None:
    archive.put(item("M1", JAN), Status.EMPTY)
    coverage = read_coverage(archive.out, plan=plan_of(("M1", JAN, "month")))
    assert coverage.totals["missing"] == 0 and coverage.complete
    assert cells(coverage) == {"2024-01": ("empty", 0)}


def test_a_state_dir_elsewhere_is_read(tmp_path: Path) -> None:
    elsewhere = Archive(tmp_path / "state-owner")
    try:
        elsewhere.downloaded(item("M1", JAN))
    finally:
        elsewhere.close()
    out = tmp_path / "out"
    out.mkdir()
    # A folder of its own: another OUT's own ``.omar-bulk`` would be refused (it serves that OUT)
    state = elsewhere.state.rename(tmp_path / "state")
    coverage = read_coverage(out, state_dir=state)
    assert coverage.totals["downloaded"] == 1 and coverage.out == out


# --- as_json -------------------------------------------------------------------------------------


def test_as_json_lists_everything_the_view_holds(archive: Archive) -> None:
    feb = archive.revised(item("M1", FEB))
    jan = archive.downloaded(item("M1", JAN))
    bad = archive.put(item("G1", JAN, kind="group", fmt="csv"), Status.FAILED, error="HTTP 500")
    for key in (feb, jan, bad):
        archive.set_fetched(key, 1_704_067_200.0)  # 2024-01-01T00:00:00Z
    archive.set_fetched(jan, 1_704_067_261.5)
    plan = plan_of(("M1", (JAN[0], MAR[1]), "month"))
    document = read_coverage(archive.out, plan=plan).as_json()
    none = dict.fromkeys(SEVERITY, 0)
    assert document == {
        "out": str(archive.out),
        "complete": False,
        "last_fetch": "2024-01-01T00:01:01+00:00",
        "totals": {
            **none,
            "failed": 1,
            "missing": 1,
            "revised": 1,
            "downloaded": 1,
            "revisions": 1,
        },
        "series": [
            {
                "kind": "group",
                "id": "G1",
                "format": "csv",
                "time_type": "PST",
                "files": {**none, "failed": 1},
                "revisions": 0,
                "months": {"2024-01": {"state": "failed", "revisions": 0}},
            },
            {
                "kind": "meter",
                "id": "M1",
                "format": "mdef",
                "time_type": "PST",
                "files": {**none, "missing": 1, "revised": 1, "downloaded": 1},
                "revisions": 1,
                "months": {
                    "2024-01": {"state": "downloaded", "revisions": 0},
                    "2024-02": {"state": "revised", "revisions": 1},
                    "2024-03": {"state": "missing", "revisions": 0},
                },
            },
        ],
        "failures": [{"path": bad, "error": "HTTP 500"}],
        "notes": [
            "1 planned files are missing, but the journal holds other files of the same ids"
            " (mdef PST): if the fetch ran with --chunk, --format or --time-type, give status"
            " the same options",
            "1 failed files are not planned by the manifest: listed, not counted against"
            " completeness (no run of it asks for them again)",
        ],
    }
    assert list(document["series"][1]["months"]) == ["2024-01", "2024-02", "2024-03"]  # type: ignore[index]


def test_as_json_of_an_empty_journal(archive: Archive) -> None:
    document = read_coverage(archive.out).as_json()
    assert document["last_fetch"] is None and document["complete"] is False
    assert document["series"] == [] and document["failures"] == []
    assert document["totals"] == {**dict.fromkeys(SEVERITY, 0), "revisions": 0}
    assert isinstance(document["notes"], list) and len(document["notes"]) == 1


def test_months_come_out_in_order_whatever_order_they_were_filled(archive: Archive) -> None:
    for span in (MAR, JAN, FEB):
        archive.downloaded(item("M1", span))
    months = read_coverage(archive.out).as_json()["series"][0]["months"]  # type: ignore[index]
    assert list(months) == ["2024-01", "2024-02", "2024-03"]


def test_grown_files_and_planned_failures_are_counted_one_by_one(archive: Archive) -> None:
    """Two months that grew since they were fetched (same start and chunking, a later end)
    are two, named as grown; two failures the plan plans count two; none of it is blamed on
    other options."""
    for ident in ("M1", "M2"):
        archive.put(
            Item("meter", ident, MAR[0], date(2024, 3, 14), "mdef", "PST", chunk="month"),
            Status.DOWNLOADED,
        )
        archive.put(item(ident, JAN), Status.FAILED, error="HTTP 503")
    plan = plan_of(
        ("M1", (JAN[0], date(2024, 1, 31)), "month"),
        ("M2", (JAN[0], date(2024, 1, 31)), "month"),
        ("M1", (MAR[0], date(2024, 3, 15)), "month"),
        ("M2", (MAR[0], date(2024, 3, 15)), "month"),
    )
    coverage = read_coverage(archive.out, plan=plan)
    assert coverage.planned_failed == 2
    (note,) = coverage.notes
    assert note.startswith("2 planned files have grown since they were fetched")
