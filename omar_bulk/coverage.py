"""What is on disk, per id and month, from the journal alone (no network): ``omar-bulk status``.

Each cell of the view is one id's month; the items that overlap it decide its state, the worst
winning: failed, then missing (planned by ``--manifest`` but never fetched), then revised
(its data changed at least once), then downloaded, then empty.

Without a manifest, the archive is complete when nothing failed. With one, it is complete
when nothing the manifest plans is failed or missing: a file it no longer plans (an id taken
out after it failed) is still listed, with a note, but no run will ask for it again, so it
does not keep the daily job failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from .archive import Archive
from .errors import UsageError
from .plan import Plan
from .protocol import relative_key

FAILED_STATE = "failed"
MISSING = "missing"
REVISED_STATE = "revised"
DOWNLOADED_STATE = "downloaded"
EMPTY_STATE = "empty"
#: Worst first: a cell shows the worst state among its items.
SEVERITY = (FAILED_STATE, MISSING, REVISED_STATE, DOWNLOADED_STATE, EMPTY_STATE)
_RANK = {state: rank for rank, state in enumerate(SEVERITY)}


@dataclass(slots=True)
class Cell:
    """One id's month: its state and how many times its data changed."""

    state: str
    revisions: int = 0

    def merge(self, state: str, revisions: int) -> None:
        if _RANK[state] < _RANK[self.state]:
            self.state = state
        self.revisions += revisions


@dataclass(slots=True)
class Series:
    """One meter or group in one format and time type."""

    kind: str
    id: str
    format: str
    time_type: str
    months: dict[str, Cell] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEVERITY, 0))
    revisions: int = 0

    @property
    def files_held(self) -> int:
        """Files the journal lists for this series (everything but the missing)."""
        return sum(self.files.values()) - self.files[MISSING]

    @property
    def label(self) -> str:
        extra = [] if self.format == "mdef" else [self.format]
        extra += [] if self.time_type == "PST" else [self.time_type]
        return self.id + (f" ({' '.join(extra)})" if extra else "")


@dataclass(frozen=True, slots=True)
class Failure:
    path: str
    error: str


@dataclass(frozen=True, slots=True)
class Coverage:
    """The whole view: series by id, overall counts, failures, the last fetch time."""

    out: Path
    series: tuple[Series, ...]
    totals: dict[str, int]
    revisions: int
    failures: tuple[Failure, ...]
    last_fetch: float | None
    #: What the table alone would not tell: nothing fetched yet, files under other names.
    notes: tuple[str, ...] = ()
    #: Failed files among those ``--manifest`` plans; None without a manifest (every
    #: failure counts).
    planned_failed: int | None = None

    @property
    def complete(self) -> bool:
        """Everything planned is on disk, and there is something at all: an empty archive
        (a run that reached no server) is not complete."""
        if not self.series:
            return False
        failed = self.totals[FAILED_STATE] if self.planned_failed is None else self.planned_failed
        return not (failed or self.totals[MISSING])

    def as_json(self) -> dict[str, object]:
        from datetime import UTC, datetime

        return {
            "out": str(self.out),
            "complete": self.complete,
            "last_fetch": (
                datetime.fromtimestamp(self.last_fetch, UTC).isoformat(timespec="seconds")
                if self.last_fetch
                else None
            ),
            "totals": {**self.totals, "revisions": self.revisions},
            "series": [
                {
                    "kind": s.kind,
                    "id": s.id,
                    "format": s.format,
                    "time_type": s.time_type,
                    "files": s.files,
                    "revisions": s.revisions,
                    "months": {
                        month: {"state": cell.state, "revisions": cell.revisions}
                        for month, cell in sorted(s.months.items())
                    },
                }
                for s in self.series
            ],
            "failures": [{"path": f.path, "error": f.error} for f in self.failures],
            "notes": list(self.notes),
        }


def months_between(start: date, end: date) -> list[str]:
    """``YYYY-MM`` of every month that the inclusive range touches."""
    months = []
    year, month = start.year, start.month
    while (year, month) <= (end.year, end.month):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def read_coverage(
    out: Path, *, plan: Plan | None = None, state_dir: Path | None = None
) -> Coverage:
    """Build the view from ``out``'s journal (read-only; in ``state_dir`` if given, see
    ``archive.state_folder``), and from ``plan`` if given."""
    rows = _journal_rows(out, planned=plan is not None, state_dir=state_dir)
    series: dict[tuple[str, str, str, str], Series] = {}
    totals = dict.fromkeys(SEVERITY, 0)
    failures: list[Failure] = []
    seen: set[str] = set()
    last_fetch: float | None = None
    revisions_total = 0
    chunks: dict[str, str | None] = {}
    for (
        key,
        kind,
        ident,
        start,
        end,
        fmt,
        time_type,
        status,
        error,
        revisions,
        fetched,
        chunk,
    ) in rows:
        seen.add(key)
        chunks[key] = chunk
        state = _state(status, error, revisions)
        entry = series.get((kind, ident, fmt, time_type))
        if entry is None:  # not setdefault: that would build a Series for every row
            entry = series[(kind, ident, fmt, time_type)] = Series(kind, ident, fmt, time_type)
        entry.files[state] += 1
        entry.revisions += revisions
        totals[state] += 1
        revisions_total += revisions
        last_fetch = max(last_fetch or fetched, fetched)
        if state == FAILED_STATE:
            failures.append(Failure(key, error or "failed"))
        if start[:7] == end[:7]:  # one month, as most items are: no dates to parse
            months = [start[:7]]
        else:
            months = months_between(date.fromisoformat(start), date.fromisoformat(end))
        for month in months:
            cell = entry.months.get(month)
            if cell is None:
                entry.months[month] = Cell(state, revisions)
            else:
                cell.merge(state, revisions)
    notes: list[str] = []
    planned_failed: int | None = None
    if plan is not None:
        failed = {failure.path for failure in failures}
        count, ids, planned_failed, grown = _plan_missing(plan, chunks, failed, series, totals)
        if grown:
            notes.append(
                f"{grown} planned files have grown since they were fetched (the same start, a"
                " later end, as a chunk that ends today does): the next fetch brings them"
            )
        if count:
            notes.append(_other_names_hint(count, ids, series))
        if len(failed) > planned_failed:
            notes.append(
                f"{len(failed) - planned_failed} failed files are not planned by the manifest:"
                " listed, not counted against completeness (no run of it asks for them again)"
            )
    if not rows:
        notes.append(
            f"nothing has been fetched into {out} yet: the journal lists no files "
            "(did the last fetch reach the server?)"
        )
    ordered = tuple(sorted(series.values(), key=lambda s: (s.kind, s.id, s.format, s.time_type)))
    return Coverage(
        out,
        ordered,
        totals,
        revisions_total,
        tuple(failures),
        last_fetch,
        tuple(notes),
        planned_failed,
    )


_Row = tuple[str, str, str, str, str, str, str, str, str | None, int, float, str | None]


def _journal_rows(out: Path, *, planned: bool, state_dir: Path | None = None) -> list[_Row]:
    """Every item the journal of ``out`` lists (none without a journal, if ``planned``)."""
    with Archive.locate(out, state_dir).reading(strict=True) as journal:
        if journal is None:
            if not planned:
                raise UsageError(f"{out} has no omar-bulk journal: nothing was fetched there yet")
            return []
        return [
            (r.path, r.kind, r.id, r.start, r.end, r.format, r.time_type, r.status, r.error,
             r.revisions, r.fetched_at, r.chunk)
            for r in journal.records()
        ]  # fmt: skip


def _plan_missing(
    plan: Plan,
    seen: dict[str, str | None],
    failed: set[str],
    series: dict[tuple[str, str, str, str], Series],
    totals: dict[str, int],
) -> tuple[int, set[tuple[str, str]], int, int]:
    """Count what ``plan`` plans that the journal lacks. Return how many of those missing
    files belong to ids the journal does hold under other names, which ids, how many of the
    ``failed`` keys the plan plans, and how many missing files are a journal file grown
    longer (same series, start and chunking, a later end: not another naming, only a later
    day). ``seen`` maps each journal key to its chunking (None where the journal predates it:
    such a file is never taken for a grown one)."""
    journal_ids = {(kind, ident) for kind, ident, _, _ in series}
    starts: set[tuple[tuple[str, str], str]] | None = None  # built once something is missing
    elsewhere = planned_failed = grown = 0
    ids: set[tuple[str, str]] = set()
    for item in plan:
        key = relative_key(item)
        if key in seen:
            if failed and key in failed:
                planned_failed += 1
            continue
        if starts is None:
            starts = {(_start_of(k), chunk) for k, chunk in seen.items() if chunk}
        if item.chunk and (_start_of(key), item.chunk) in starts:
            grown += 1
        elif (item.kind, item.id) in journal_ids:
            elsewhere += 1
            ids.add((item.kind, item.id))
        entry = series.setdefault(
            item.series, Series(item.kind, item.id, item.format, item.time_type)
        )
        entry.files[MISSING] += 1
        totals[MISSING] += 1
        for month in months_between(item.start, item.end):
            cell = entry.months.get(month)
            if cell is None:
                entry.months[month] = Cell(MISSING)
            else:
                cell.merge(MISSING, 0)
    return elsewhere, ids, planned_failed, grown


def _start_of(key: str) -> tuple[str, str]:
    """A key without its end date: ``kind/id/id_START`` and ``TT.ext`` (ids may hold ``_``,
    the end date and what follows never do)."""
    head, _end, tail = key.rsplit("_", 2)
    return head, tail


def _other_names_hint(
    count: int, ids: set[tuple[str, str]], series: dict[tuple[str, str, str, str], Series]
) -> str:
    """Say why planned files may look missing: the fetch planned them differently."""
    held = sorted(
        {
            f"{fmt} {time_type}"
            for (kind, ident, fmt, time_type), entry in series.items()
            if (kind, ident) in ids and entry.files_held
        }
    )
    return (
        f"{count} planned files are missing, but the journal holds other files of the same ids"
        f" ({', '.join(held)}): if the fetch ran with --chunk, --format or --time-type,"
        " give status the same options"
    )


def _state(status: str, error: str | None, revisions: int) -> str:
    if status == "failed" or (error and status in ("downloaded", "empty")):
        return FAILED_STATE  # failed, or data whose latest revisit failed
    if revisions:
        return REVISED_STATE
    return DOWNLOADED_STATE if status == "downloaded" else EMPTY_STATE


__all__ = [
    "DOWNLOADED_STATE",
    "EMPTY_STATE",
    "FAILED_STATE",
    "MISSING",
    "REVISED_STATE",
    "SEVERITY",
    "Cell",
    "Coverage",
    "Failure",
    "Series",
    "months_between",
    "read_coverage",
]
