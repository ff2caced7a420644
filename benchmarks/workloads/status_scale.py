"""Workload 7: ``status`` on a large archive, and how its time grows.

A synthetic journal of 100 meters x 200 months (20,000 files) and one three times as large
(60,000): ``status`` reads only the journal, so the files themselves need not exist. Every
form a person or a monitor asks for is timed: the table, ``--json``, ``--manifest`` (a
manifest planning one month more than was fetched) and ``--prometheus``.

Also a command of its own, to compare outputs before and after a change::

    python benchmarks/workloads/status_scale.py OUT [METERS] [MONTHS]
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from datetime import date
from pathlib import Path

if __name__ == "__main__":  # run as a script: find harness.py and the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import PY, WORK, measure, median

from omar_bulk.journal import Journal
from omar_bulk.plan import Chunking, Item
from omar_bulk.protocol import relative_key
from omar_bulk.storage import STATE_DIR

FIRST_MONTH = date(2008, 1, 1)
#: A fixed clock, so two archives built alike print alike.
FETCHED_AT = 1_700_000_000.0


def _months(count: int) -> list[tuple[date, date]]:
    last = date(FIRST_MONTH.year + (count - 1) // 12, (count - 1) % 12 + 1, 1)
    return list(Chunking.parse("month").split(FIRST_MONTH, last.replace(day=28)))[:count]


def _row(n: int, m: int, item: Item) -> tuple[object, ...]:
    """One journal row; the state depends on (meter, month) alone, so archives repeat."""
    status, error, revisions, size = "downloaded", None, 0, 20_000
    if (n * 7 + m) % 97 == 0:
        status, error, size = "failed", f"HTTP 503 for month {m}", 0
    elif (n + m * 3) % 53 == 0:
        status, size = "empty", 0
    elif (n * 5 + m) % 31 == 0:
        revisions = 1 + (n + m) % 12  # 1 to 12: digits and "R" both show
    elif (n + m) % 211 == 0:
        error = "revisit failed: HTTP 500"  # data whose latest revisit failed
    return (
        relative_key(item),
        item.kind,
        item.id,
        item.start.isoformat(),
        item.end.isoformat(),
        item.format,
        item.time_type,
        "https://127.0.0.1:9/",
        status,
        size,
        None if status != "downloaded" else f"{n:032x}{m:032x}",
        1,
        error,
        None,
        FETCHED_AT + n * 1000 + m,
        1,
        revisions,
        FETCHED_AT,
    )


def build_archive(out: Path, meters: int = 100, months: int = 200) -> Path:
    """A journal of ``meters`` x ``months`` monthly files under ``out``; every tenth meter is
    fetched as CSV. Returns a manifest planning the MDEF months and one month more."""
    state = out / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    Journal.open(state).close()  # the schema and format version, as a fetch makes them
    spans = _months(months)
    rows = []
    for n in range(meters):
        ident = f"MTR{n:05d}"
        fmt = "csv" if n % 10 == 9 else "mdef"
        for m, (start, end) in enumerate(spans):
            rows.append(_row(n, m, Item("meter", ident, start, end, fmt, "PST")))
    db = sqlite3.connect(state / "journal.sqlite3")
    try:
        with db:
            # Named columns: columns later journal formats add keep their defaults.
            db.executemany(
                "INSERT INTO items (path, kind, id, start, end, format, time_type, url, status,"
                " bytes, sha256, attempts, error, mtime_ns, fetched_at, run_id, revisions,"
                f" checked_at) VALUES ({','.join('?' * 18)})",
                rows,
            )
    finally:
        db.close()
    manifest = out.parent / f"{out.name}-manifest.csv"
    extra = _months(months + 1)[-1][1]
    lines = ["kind,id,start,end"]
    lines += [
        f"meter,MTR{n:05d},{FIRST_MONTH.isoformat()},{extra.isoformat()}" for n in range(meters)
    ]
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


FORMS = {
    "table": [],
    "--json": ["--json"],
    "--manifest": ["--manifest", "{manifest}"],
    "--prometheus": ["--prometheus"],
}


def run(rounds: int) -> dict[str, str]:
    figures: dict[str, str] = {}
    parts = []
    for meters in (100, 300):
        files = meters * 200
        with tempfile.TemporaryDirectory(dir=WORK) as scratch:
            out = Path(scratch) / "archive"
            manifest = build_archive(out, meters, 200)
            for form, args in FORMS.items():
                command = [PY, "-m", "omar_bulk", "status", str(out)]
                command += [a.format(manifest=manifest) for a in args]
                runs = [measure(command) for _ in range(rounds)]
                wall = median([r.wall for r in runs])
                rss = median([r.rss_mb for r in runs])
                figures[f"status_{files}_{form}"] = f"{wall:.3f}"
                parts.append(f"{form} {wall:.2f} s ({rss:.0f} MB)")
                print(f"  status {files:,} files {form:13} {wall:6.2f} s", flush=True)
        figures[f"status {files}"] = (
            f"`omar-bulk status` of {files:,} files ({meters} meters x 200 months; median of"
            f" {rounds}): " + ", ".join(parts)
        )
        parts = []
    return figures


if __name__ == "__main__":
    target = Path(sys.argv[1])
    count = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (100, 200)
    print(build_archive(target, *count))
