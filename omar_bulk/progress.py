"""What a person sees: rich progress on a terminal, plain lines elsewhere, and the summary.

These are ``Observer``s; the engine calls them and never imports this module.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich import filesize
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from .plan import Item
from .results import ItemResult, RunResult, Status
from .summary import MAX_LISTED_FAILURES, summary_lines
from .text import printable

if TYPE_CHECKING:
    from .coverage import Cell, Coverage


def stderr_console(width: int | None = None) -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True, width=width)


class _Amount(ProgressColumn):
    """Files and bytes on the overall line; bytes of the body on a download's line."""

    def render(self, task: Task) -> Text:
        if task.fields.get("overall"):
            done = f"{int(task.completed)}/{int(task.total or 0)} files"
            return Text(f"{done}  {filesize.decimal(task.fields.get('bytes', 0))}")
        if not task.completed:
            return Text("waiting for the server", style="dim")
        size = filesize.decimal(int(task.completed))
        if task.total:
            size += f"/{filesize.decimal(int(task.total))}"
        return Text(size, style="dim")


class _Rate(ProgressColumn):
    """Bytes per second: over the whole run overall, per transfer on a download's line."""

    def render(self, task: Task) -> Text:
        if task.fields.get("overall"):
            started = task.fields.get("since") or time.monotonic()
            elapsed = max(time.monotonic() - started, 1e-6)
            speed: float | None = task.fields.get("bytes", 0) / elapsed
        else:
            speed = task.speed
        if not speed:
            return Text("", style="dim")
        return Text(f"{filesize.decimal(int(speed))}/s", style="cyan")


class RichObserver:
    """One overall bar (files, bytes, rate, ETA) and a line per download in flight."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or stderr_console()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            _Amount(),
            _Rate(),
            TimeRemainingColumn(),
            console=self.console,
            refresh_per_second=4,
            transient=False,
        )
        self._overall: TaskID | None = None
        self._tasks: dict[Item, TaskID] = {}
        self._bytes = 0

    def __enter__(self) -> RichObserver:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for task in list(self._tasks.values()):
            self.progress.remove_task(task)
        self._tasks.clear()
        self.progress.stop()

    def planned(self, total: int) -> None:
        self._overall = self.progress.add_task(
            "[bold]omar-bulk", total=total, overall=True, bytes=0, since=time.monotonic()
        )

    def started(self, item: Item, path: Path, attempt: int) -> None:
        label = path.name if attempt == 1 else f"{path.name} (attempt {attempt})"
        task = self._tasks.get(item)
        if task is None:
            self._tasks[item] = self.progress.add_task(f"  {escape(label)}", total=None)
        else:
            self.progress.reset(task, description=f"  {escape(label)}", total=None)

    def received(self, item: Item, nbytes: int, expected: int | None) -> None:
        task = self._tasks.get(item)
        if task is not None:
            self.progress.update(task, advance=nbytes, total=expected)
        self._bytes += nbytes
        if self._overall is not None:
            self.progress.update(self._overall, bytes=self._bytes)

    def retrying(self, item: Item, attempt: int, reason: str, delay: float) -> None:
        name = f"{item.id} {item.start:%Y-%m-%d}..{item.end:%Y-%m-%d}"
        wait = f", again in {delay:.1f} s" if delay else ""
        self.progress.console.print(
            f"[yellow]retry[/] {escape(name)}: {escape(reason)} (attempt {attempt}{wait})"
        )

    def finished(self, result: ItemResult) -> None:
        task = self._tasks.pop(result.item, None)
        if task is not None:
            self.progress.remove_task(task)
        if self._overall is not None:
            self.progress.advance(self._overall)
        if result.status == Status.FAILED:
            self.progress.console.print(
                f"[red]failed[/] {escape(str(result.path))}: {escape(result.error or '')}"
            )

    def notice(self, message: str) -> None:
        self.progress.console.print(f"[yellow]warning:[/] {escape(message)}")

    def pool(self, level: int, maximum: int) -> None:
        if self._overall is not None:
            label = (
                "[bold]omar-bulk"
                if level == maximum
                else (f"[bold]omar-bulk[/] [yellow]{level}/{maximum} at once[/]")
            )
            self.progress.update(self._overall, description=label)


def render_summary(result: RunResult, console: Console) -> None:
    """``plain.summary_lines``, with their colours."""
    for line in summary_lines(result):
        text = Text()
        for part, style in line:
            text.append(part, style=style or None)
        console.print(text)


MARKS = {
    "downloaded": ("✓", "green"),
    "revised": ("R", "cyan"),
    "empty": ("·", "dim"),
    "failed": ("✗", "bold red"),
    "missing": ("?", "yellow"),
}
MONTH_HEADERS = ("J", "F", "M", "A", "M", "J", "J", "A", "S", "O", "N", "D")


def render_coverage(view: Coverage, console: Console, *, by: str = "month") -> None:
    """The ``status`` table: a row per id and year with a mark per month (or per year)."""
    from datetime import datetime

    from rich.table import Table

    legend = "  ".join(f"[{style}]{mark}[/] {name}" for name, (mark, style) in MARKS.items())
    table = Table(
        box=None, pad_edge=False, show_edge=False, header_style="bold", collapse_padding=True
    )
    table.add_column("kind", no_wrap=True)
    table.add_column("id", no_wrap=True)
    if by == "year":
        years = sorted({m[:4] for s in view.series for m in s.months})
        for year in years:
            table.add_column(year, justify="center")
    else:
        table.add_column("year")
        for header in MONTH_HEADERS:
            table.add_column(header, justify="center", min_width=1)
    for name in ("files", "failed", "missing", "revised"):
        table.add_column(name, justify="right")
    for series in view.series:
        counts = series.files
        files = sum(counts.values()) - counts["missing"]
        tail = [
            str(files),
            _count(counts["failed"], "red"),
            _count(counts["missing"], "yellow"),
            _count(series.revisions, "cyan"),
        ]
        if by == "year":
            cells = []
            for year in years:
                states = [c for m, c in series.months.items() if m.startswith(year)]
                cells.append(_mark(_worst(states)) if states else "")
            table.add_row(series.kind, escape(series.label), *cells, *tail)
            continue
        first = True
        for year in sorted({m[:4] for m in series.months}):
            marks = []
            for number in range(1, 13):
                cell = series.months.get(f"{year}-{number:02d}")
                marks.append(_mark(cell.state, cell.revisions) if cell else "")
            label = escape(series.label) if first else ""
            table.add_row(
                series.kind if first else "", label, year, *marks, *(tail if first else [""] * 4)
            )
            first = False
    console.print(table)
    console.print(legend)
    t = view.totals
    files = sum(t.values()) - t["missing"]
    summary = (
        f"{len(view.series)} series, {files} files: {t['downloaded']} downloaded,"
        f" {t['revised']} revised ({view.revisions} changes), {t['empty']} empty,"
        f" {t['failed']} failed"
    )
    if t["missing"]:
        summary += f", {t['missing']} planned but never fetched"
    console.print(summary)
    if view.last_fetch:
        when = datetime.fromtimestamp(view.last_fetch).astimezone()
        console.print(f"last fetch: {when:%Y-%m-%d %H:%M:%S %Z}")
    if view.failures:
        console.print("[bold red]failures:[/]")
        for failure in view.failures[:MAX_LISTED_FAILURES]:
            console.print(f"  {escape(failure.path)}: {escape(printable(failure.error))}")
        if len(view.failures) > MAX_LISTED_FAILURES:
            console.print(f"  ... and {len(view.failures) - MAX_LISTED_FAILURES} more (--json)")
    for note in view.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    verdict = "[green]complete[/]" if view.complete else "[red]incomplete[/]"
    console.print(f"{verdict}: {view.out}")


def _mark(state: str, revisions: int = 0) -> str:
    mark, style = MARKS[state]
    if state == "revised" and 1 < revisions < 10:
        mark = str(revisions)
    return f"[{style}]{mark}[/]"


def _worst(cells: list[Cell]) -> str:
    from .coverage import SEVERITY

    return min((c.state for c in cells), key=SEVERITY.index)


def _count(value: int, style: str) -> str:
    return f"[{style}]{value}[/]" if value else "0"
