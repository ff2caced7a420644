"""``status`` prints exactly what it always printed, however it gets there: the table, the
year view and the JSON of a small archive are pinned here, and the fast table matches rich's
own ``Table`` byte for byte, colours included, on many generated views."""

from __future__ import annotations

import io
import json
import os
import random
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from rich.console import Console

from omar_bulk.coverage import SEVERITY, Cell, Coverage, Failure, Series, read_coverage
from omar_bulk.journal import Journal
from omar_bulk.manifest import Defaults, load_manifest
from omar_bulk.plan import Item
from omar_bulk.progress import render_coverage
from omar_bulk.protocol import relative_key
from omar_bulk.results import ItemResult, Status
from omar_bulk.storage import STATE_DIR

FETCHED_AT = 1_700_000_000.0


@pytest.fixture
def utc() -> Iterator[None]:
    """The "last fetch" line is local time: make it the same everywhere."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def _item(ident: str, start: str, end: str, *, kind: str = "meter", fmt: str = "mdef") -> Item:
    return Item(kind, ident, date.fromisoformat(start), date.fromisoformat(end), fmt, "PST")


def small_archive(out: Path) -> None:
    """Every state, two years, an overlapping weekly chunk, a CSV series, a group, a revisit
    that failed, and a failure whose text holds markup."""
    (out / STATE_DIR).mkdir(parents=True)
    journal = Journal.open(out / STATE_DIR)
    journal.begin_run()
    outcomes = [
        (_item("M1", "2023-11-01", "2023-11-30"), Status.EMPTY, None),
        (_item("M1", "2023-12-01", "2023-12-31"), Status.DOWNLOADED, None),
        (_item("M1", "2024-01-01", "2024-01-31"), Status.DOWNLOADED, None),
        (_item("M1", "2024-02-01", "2024-02-29"), Status.DOWNLOADED, None),
        (_item("M2", "2024-01-01", "2024-01-31"), Status.FAILED, "HTTP 404 [bold]no[/bold]"),
        (_item("M2", "2024-01-29", "2024-02-04"), Status.DOWNLOADED, None),
        (_item("M2", "2024-02-01", "2024-02-29", fmt="csv"), Status.DOWNLOADED, None),
        (_item("G1", "2024-03-01", "2024-03-31", kind="group"), Status.DOWNLOADED, None),
    ]
    for item, status, error in outcomes:
        size = 10 if status == Status.DOWNLOADED else 0
        sha = "ab" * 32 if size else None
        result = ItemResult(item, "https://x/", Path("x"), status, size, sha, 1, error)
        journal.record(relative_key(item), result, 1)
    revised = _item("M1", "2024-02-01", "2024-02-29")
    for _ in range(2):
        result = ItemResult(revised, "https://x/", Path("x"), Status.REVISED, 11, "cd" * 32, 1)
        journal.record(relative_key(revised), result, 1)
    later = _item("M1", "2023-12-01", "2023-12-31")
    previous = journal.get(relative_key(later))
    failed = ItemResult(later, "https://x/", Path("x"), Status.FAILED, 0, None, 3, "HTTP 500")
    journal.record(relative_key(later), failed, 1, previous=previous)
    journal._db.execute("UPDATE items SET fetched_at = ?", (FETCHED_AT,))
    journal.close()


def _printed(view: Coverage, by: str = "month", **console: object) -> str:
    """What ``render_coverage`` writes to a console made with ``console``'s options."""
    sink = io.StringIO()
    options: dict[str, object] = {"width": 200, "force_terminal": False, **console}
    render_coverage(view, Console(file=sink, highlight=False, **options), by=by)  # type: ignore[arg-type]
    return sink.getvalue()


def _plain(view: Coverage, by: str = "month") -> str:
    return _printed(view, by)


PINNED_TABLE = """\
kind  id       year J F M A M J J A S O N D files failed missing revised
group G1       2024     ✓                       1      0       0       0
meter M1 (csv) 2024   ?                         0      0       1       0
meter M1       2023                     · ✗     4      1       0       2
               2024 ✓ 2                                                \x20
meter M2 (csv) 2024   ✓                         1      0       0       0
meter M2       2024 ✗ ✓                         2      1       0       0
✓ downloaded  R revised  · empty  ✗ failed  ? missing
5 series, 8 files: 4 downloaded, 1 revised (2 changes), 1 empty, 2 failed, 1 planned but never \
fetched
last fetch: 2023-11-14 22:13:20 UTC
failures:
  meter/M1/M1_20231201_20231231_PST.mdef: HTTP 500
  meter/M2/M2_20240101_20240131_PST.mdef: HTTP 404 [bold]no[/bold]
note: 1 planned files are missing, but the journal holds other files of the same ids (mdef \
PST): if the fetch ran with --chunk, --format or --time-type, give status the same options
note: 2 failed files are not planned by the manifest: listed, not counted against completeness \
(no run of it asks for them again)
incomplete: {out}
"""

PINNED_YEARS = """\
kind  id       2023 2024 files failed missing revised
group G1             ✓       1      0       0       0
meter M1 (csv)       ?       0      0       1       0
meter M1        ✗    R       4      1       0       2
meter M2 (csv)       ✓       1      0       0       0
meter M2             ✗       2      1       0       0
"""


def test_the_table_of_a_small_archive_is_pinned(tmp_path: Path, utc: None) -> None:
    """Every state, a revision count, a merged overlap and a planned month, as printed."""
    out = tmp_path / "out"
    small_archive(out)
    manifest = tmp_path / "m.csv"
    manifest.write_text("kind,id,start,end,format\nmeter,M1,2024-02-01,2024-02-29,csv\n")
    plan = load_manifest(manifest, Defaults(today=date(2024, 6, 1)))
    view = read_coverage(out, plan=plan)
    assert _plain(view) == PINNED_TABLE.format(out=out)
    assert _plain(view, "year").startswith(PINNED_YEARS)


def test_the_json_of_a_small_archive_is_pinned(tmp_path: Path) -> None:
    """The JSON view, series by series and month by month."""
    out = tmp_path / "out"
    small_archive(out)
    shown = read_coverage(out).as_json()
    assert shown["complete"] is False and shown["last_fetch"] == "2023-11-14T22:13:20+00:00"
    assert shown["totals"] == {
        "failed": 2,
        "missing": 0,
        "revised": 1,
        "downloaded": 4,
        "empty": 1,
        "revisions": 2,
    }
    series = {(s["kind"], s["id"], s["format"]): s for s in shown["series"]}  # type: ignore[attr-defined]
    assert list(series) == [
        ("group", "G1", "mdef"),
        ("meter", "M1", "mdef"),
        ("meter", "M2", "csv"),
        ("meter", "M2", "mdef"),
    ]
    m1 = series[("meter", "M1", "mdef")]
    assert m1["files"] == {"failed": 1, "missing": 0, "revised": 1, "downloaded": 1, "empty": 1}
    assert m1["months"] == {
        "2023-11": {"state": "empty", "revisions": 0},
        "2023-12": {"state": "failed", "revisions": 0},
        "2024-01": {"state": "downloaded", "revisions": 0},
        "2024-02": {"state": "revised", "revisions": 2},
    }
    m2 = series[("meter", "M2", "mdef")]
    assert m2["months"] == {
        "2024-01": {"state": "failed", "revisions": 0},
        "2024-02": {"state": "downloaded", "revisions": 0},
    }
    assert shown["failures"] == [
        {"path": "meter/M1/M1_20231201_20231231_PST.mdef", "error": "HTTP 500"},
        {"path": "meter/M2/M2_20240101_20240131_PST.mdef", "error": "HTTP 404 [bold]no[/bold]"},
    ]
    assert json.loads(json.dumps(shown)) == shown


IDS = ["M1", "MTR_000123456789", "a[b]c", "x\\[y", "名前", "Zählpunkt-Ost", "G:1", "e\u0301t"]


def _random_view(rng: random.Random) -> Coverage:
    """A view with random series, months, states and counts (wide ones included)."""
    series = []
    for _ in range(rng.randint(0, 5)):
        entry = Series(
            rng.choice(["meter", "group"]),
            rng.choice(IDS) + str(rng.randint(0, 10 ** rng.randint(0, 6))),
            rng.choice(["mdef", "csv"]),
            rng.choice(["PST", "DST"]),
        )
        for _ in range(rng.randint(0, 15)):
            month = f"{rng.randint(1999, 2026)}-{rng.randint(1, 12):02d}"
            entry.months[month] = Cell(rng.choice(SEVERITY), rng.choice([0, 0, 1, 2, 9, 10, 300]))
        for state in SEVERITY:
            entry.files[state] = rng.choice([0, 1, 7, 12345, 10**7])
        entry.revisions = rng.choice([0, 3, 123456])
        series.append(entry)
    totals = dict.fromkeys(SEVERITY, 0)
    failures = (Failure("meter/M1/x.mdef", "HTTP 503"),)
    return Coverage(Path("out"), tuple(series), totals, 0, failures, None)


@pytest.mark.parametrize(
    "console",
    [
        {"force_terminal": False},
        {"force_terminal": True, "color_system": "standard"},
        {"force_terminal": True, "color_system": "256", "no_color": True},
    ],
    ids=["file", "colour", "no-colour"],
)
def test_the_fast_table_prints_what_richs_table_prints(console: dict[str, object]) -> None:
    """On 100 random views, at widths around the table's own, colours or not, by month and by
    year: the same bytes as rich's ``Table``, which status used for every table before."""
    from omar_bulk.progress import _coverage_grid

    rng = random.Random(11)
    fast = 0
    for round_ in range(100):
        view = _random_view(rng)
        by = rng.choice(["month", "year"])
        grid = _coverage_grid(view, by)
        natural = sum(grid.widths) + len(grid.widths) - 1
        width = max(20, natural + rng.choice([-1, 0, 0, 1, 40]))
        options: dict[str, object] = {**console, "width": width}
        theirs = io.StringIO()
        Console(file=theirs, highlight=False, **options).print(grid.as_table())  # type: ignore[arg-type]
        ours = io.StringIO()
        Console(file=ours, highlight=False, **options).print(grid)  # type: ignore[arg-type]
        if grid.fits(width):
            fast += 1
            assert ours.getvalue() == theirs.getvalue(), (by, width, view.series)
        if round_ % 5 == 0:  # and render_coverage picks the right one
            assert _printed(view, by, **options).startswith(theirs.getvalue())
    assert fast > 30  # most views took the fast path: the comparison above really ran
