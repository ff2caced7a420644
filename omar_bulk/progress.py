"""What a person sees: rich progress on a terminal, plain lines elsewhere, and the summary.

These are ``Observer``s; the engine calls them and never imports this module.

The live display costs next to nothing, whatever the run does: the observer's methods run on the
event loop (``received`` once per chunk) and only update counters and a dict; a thread draws
the screen from them a few times a second, and prints the failures, retries and warnings that
came in since the last frame. Drawing per event with rich's ``Progress`` (a task per download)
took a whole core at 64 downloads at once and made the run 8x slower. The frame is cut to the
terminal: lines never longer than its width, at most as many file rows as its height allows.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import filesize
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from .plan import Item
from .results import ItemResult, RunResult, Status
from .summary import MAX_LISTED_FAILURES, summary_lines
from .text import printable

if TYPE_CHECKING:
    from .coverage import Coverage

#: Frames per second. Four is smooth enough for counters and a bar, and costs a few ms a second.
REFRESH_PER_SECOND = 4.0
#: At most this many downloads get a row of their own, however tall the terminal.
MAX_FILE_ROWS = 20
#: Lines printed above the display per frame: more than anyone reads in a quarter second; the
#: rest are counted, and every failure is in the summary and the report anyway.
MAX_MESSAGES_PER_FRAME = 30
#: Lines of the frame that are not file rows: the overall line, the counts, "and N more", and
#: the line the cursor rests on.
_OTHER_ROWS = 4
_AMOUNT_WIDTH = 31  # "1023.9 MB/1073.7 MB  123.4 MB/s"


def stderr_console(width: int | None = None) -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True, width=width)


@dataclass(slots=True)
class _Flight:
    """One download in flight, as the display knows it."""

    label: str
    since: float
    received: int = 0
    expected: int | None = None


class RichObserver:
    """One overall line (bar, files, bytes, rate, time left), counts, and a row per download.

    A context manager: entering starts the display, leaving draws its last frame (the overall
    line, with no file rows) and stops it.
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        refresh_per_second: float = REFRESH_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console or stderr_console()
        self.frames = 0  # frames drawn so far
        self._interval = 1 / refresh_per_second
        self._clock = clock
        self._lock = threading.Lock()  # guards _flights' shape and _messages
        self._flights: dict[Item, _Flight] = {}
        self._messages: list[tuple[str, str, str]] = []  # (head, style, rest)
        self._total: int | None = None
        self._since = clock()
        self._done = self._failed = self._retries = self._bytes = 0
        self._level = self._maximum = 0
        self._stop = threading.Event()
        self._painter = threading.Thread(target=self._paint, name="omar-bulk display", daemon=True)
        self._begun = False
        self._live = Live(self, console=self.console, auto_refresh=False, vertical_overflow="crop")

    def __enter__(self) -> RichObserver:
        # Nothing is drawn yet: a password prompt may come first (the certificate is loaded
        # after the observer is set up), and a live display would paint over it.
        return self

    def _begin(self) -> None:
        if not self._begun and not self._stop.is_set():
            self._begun = True
            self._live.start()
            self._painter.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if not self._begun:
            return  # the run stopped before it began: nothing was drawn, nothing to clear
        self._painter.join(timeout=5)
        with self._lock:
            self._flights.clear()
        self._flush()
        self._live.stop()

    # --- the observer: called on the event loop, so each is a few dict and integer operations

    def planned(self, total: int) -> None:
        self._total = total
        self._since = self._clock()
        self._begin()  # the identity is loaded by now: the screen is ours

    def started(self, item: Item, path: Path, attempt: int) -> None:
        label = path.name if attempt == 1 else f"{path.name} (attempt {attempt})"
        flight = _Flight(label, self._clock())
        with self._lock:
            self._flights[item] = flight

    def received(self, item: Item, nbytes: int, expected: int | None) -> None:
        flight = self._flights.get(item)
        if flight is not None:
            flight.received += nbytes
            flight.expected = expected
        self._bytes += nbytes

    def retrying(self, item: Item, attempt: int, reason: str, delay: float) -> None:
        self._retries += 1
        name = f"{item.id} {item.start:%Y-%m-%d}..{item.end:%Y-%m-%d}"
        wait = f", again in {delay:.1f} s" if delay else ""
        self._say("retry", "yellow", f" {name}: {reason} (attempt {attempt}{wait})")

    def finished(self, result: ItemResult) -> None:
        with self._lock:
            self._flights.pop(result.item, None)
        self._done += 1
        if result.status == Status.FAILED:
            self._failed += 1
            self._say("failed", "red", f" {result.path}: {result.error or ''}")

    def notice(self, message: str) -> None:
        self._say("warning:", "yellow", f" {message}")

    def pool(self, level: int, maximum: int) -> None:
        self._level, self._maximum = level, maximum

    def _say(self, head: str, style: str, rest: str) -> None:
        with self._lock:
            self._messages.append((head, style, rest))

    # --- the painter thread

    def _paint(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._flush()
            except Exception:
                # A broken frame must not take the run down with it, nor print a traceback
                # over the screen: the run goes on without a live display, the summary follows.
                return

    def _flush(self) -> None:
        """One frame, with the lines that came in since the last one printed above it."""
        with self._lock:
            messages, self._messages = self._messages, []
        if not messages:
            self._live.refresh()
            return
        lines = [Text.assemble((head, style), rest) for head, style, rest in messages]
        hidden = len(lines) - MAX_MESSAGES_PER_FRAME
        if hidden > 0:
            lines = lines[:MAX_MESSAGES_PER_FRAME]
            lines.append(Text(f"... and {hidden} more (failures: see the summary)", "dim"))
        # One print: the display is redrawn once below all of them, not once per line.
        self.console.print(Group(*lines), soft_wrap=False)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        self.frames += 1
        now = self._clock()
        width = options.max_width
        room = max(0, min(MAX_FILE_ROWS, options.size.height - _OTHER_ROWS))
        with self._lock:
            count = len(self._flights)
            shown = list(islice(self._flights.values(), room if count <= room else room - 1))
        yield _line(self._overall(width, now))
        counts = self._counts(count)
        if counts:
            yield _line(counts)
        for flight in shown:
            yield _line(_row(flight, width, now))
        if count > len(shown):
            yield _line(Text(f"  ... and {count - len(shown)} more downloading", "dim"))

    def _overall(self, width: int, now: float) -> Text:
        head = Text("omar-bulk", "bold")
        if self._level < self._maximum:
            head.append(f" {self._level}/{self._maximum} at once", "yellow")
        total = self._total or 0
        elapsed = max(now - self._since, 1e-6)
        tail = f"{self._done}/{total} files  {filesize.decimal(self._bytes)}"
        if self._bytes:
            tail += f"  {filesize.decimal(int(self._bytes / elapsed))}/s"
        tail += f"  {_time_left(self._done, total, elapsed)}"
        bar = max(10, min(40, width - head.cell_len - len(tail) - 2))
        line = head + Text(" ") + _bar(self._done, total, bar)
        line.append(" " + tail)
        return line

    def _counts(self, downloading: int) -> Text | None:
        parts = []
        if downloading:
            parts.append((f"{downloading} downloading", ""))
        if self._retries:
            parts.append((f"{self._retries} retries", "yellow"))
        if self._failed:
            parts.append((f"{self._failed} failed", "red"))
        if not parts:
            return None
        line = Text("  ")
        for index, (words, style) in enumerate(parts):
            line.append(("  " if index else "") + words, style)
        return line


def _line(text: Text) -> Text:
    """A line of the frame: cut at the terminal's edge, never folded onto the next row."""
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


def _bar(done: int, total: int, width: int) -> Text:
    filled = width if total == 0 or done >= total else width * done // total
    style = "bar.finished" if total and done >= total else "bar.complete"
    return Text.assemble(("━" * filled, style), ("━" * (width - filled), "bar.back"))


def _time_left(done: int, total: int, elapsed: float) -> str:
    if not done or done >= total:
        return "-:--:--" if not done else "0:00:00"
    seconds = int(elapsed * (total - done) / done)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _row(flight: _Flight, width: int, now: float) -> Text:
    seconds = now - flight.since
    if not flight.received:
        amount, style = f"waiting {seconds:.1f} s", "dim"
    else:
        amount, style = filesize.decimal(flight.received), ""
        if flight.expected:
            amount += f"/{filesize.decimal(flight.expected)}"
        if seconds >= 1:
            amount += f"  {filesize.decimal(int(flight.received / seconds))}/s"
    room = max(10, width - 2 - 2 - _AMOUNT_WIDTH - 1)
    name = flight.label if len(flight.label) <= room else flight.label[: room - 3] + "..."
    return Text.assemble(f"  {name:<{room}}  ", (f"{amount:>{_AMOUNT_WIDTH}}", style))


@contextlib.contextmanager
def byte_progress(console: Console, label: str) -> Iterator[Callable[[int, int], None]]:
    """A transient bar of bytes done out of a total, for long reads (``verify``); yields the
    ``progress(done, total)`` callback the core calls."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


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

    legend = "  ".join(f"[{style}]{mark}[/] {name}" for name, (mark, style) in MARKS.items())
    grid = _coverage_grid(view, by)
    console.print(grid if grid.fits(console.width) else grid.as_table())
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


#: One cell of the status table: its text and its style (None: plain).
_Cell = tuple[str, str | None]
_EMPTY: _Cell = ("", None)


def _coverage_grid(view: Coverage, by: str) -> _Grid:
    """The status table's cells, row by row."""
    from .coverage import SEVERITY

    rank = {state: number for number, state in enumerate(SEVERITY)}
    if by == "year":
        years = sorted({m[:4] for s in view.series for m in s.months})
        header = ["kind", "id", *years]
        justify = ["left", "left", *["center"] * len(years)]
    else:
        header = ["kind", "id", "year", *MONTH_HEADERS]
        justify = ["left", "left", "left", *["center"] * 12]
    header += ["files", "failed", "missing", "revised"]
    justify += ["right"] * 4
    grid = _Grid(header, justify, month_columns=by != "year")
    for series in view.series:
        counts = series.files
        files = sum(counts.values()) - counts["missing"]
        tail = [
            (str(files), None),
            _count(counts["failed"], "red"),
            _count(counts["missing"], "yellow"),
            _count(series.revisions, "cyan"),
        ]
        label = (series.label, None)
        if by == "year":
            worst: dict[str, str] = {}
            for month, found in series.months.items():
                year = month[:4]
                held = worst.get(year)
                if held is None or rank[found.state] < rank[held]:
                    worst[year] = found.state
            marks = [_mark(worst[year]) if year in worst else _EMPTY for year in years]
            grid.add((series.kind, None), label, *marks, *tail)
            continue
        first = True
        for year in sorted({m[:4] for m in series.months}):
            marks = []
            for number in _MONTH_NUMBERS:
                cell = series.months.get(f"{year}-{number}")
                marks.append(_mark(cell.state, cell.revisions) if cell else _EMPTY)
            if first:
                grid.add((series.kind, None), label, (year, None), *marks, *tail)
                first = False
            else:
                grid.add(_EMPTY, _EMPTY, (year, None), *marks, *_NO_TAIL)
    return grid


_MONTH_NUMBERS = tuple(f"{number:02d}" for number in range(1, 13))
_NO_TAIL = (_EMPTY,) * 4


class _Grid:
    """The status table, drawn without rich's ``Table`` when it fits the console.

    ``Table`` measures, wraps and pads every cell through several layers of objects: 36,000
    cells (20,000 files) took 5 s. This lays out the same rows into the same segments (so the
    same bytes, colours included) in one pass. A table wider than the console is handed to
    ``Table``, which shrinks and wraps columns in ways not worth copying.
    """

    def __init__(self, header: list[str], justify: list[str], *, month_columns: bool) -> None:
        from rich.cells import cell_len

        self._cell_len = cell_len
        self.header = header
        self.justify = justify
        self.month_columns = month_columns
        self.rows: list[tuple[_Cell, ...]] = []
        self.widths = [cell_len(name) for name in header]
        self._plain = True  # every text shows as itself, a column wide per character

    def add(self, *cells: _Cell) -> None:
        self.rows.append(cells)
        widths = self.widths
        label = cells[1][0]
        # Ids come from outside: one that rich's markup would change (an ":emoji:" code, an
        # escaped bracket, a character it does not print as itself) goes through Table.
        if self._plain and not (label.isprintable() and ":" not in label and "\\" not in label):
            self._plain = False
        for index, (text, _) in enumerate(cells):
            width = len(text) if text.isascii() else self._cell_len(text)
            widths[index] = max(widths[index], width)

    def fits(self, width: int) -> bool:
        return self._plain and sum(self.widths) + len(self.widths) - 1 <= width

    def as_table(self) -> Any:
        """The same rows as rich's ``Table``."""
        from rich.table import Table

        table = Table(
            box=None, pad_edge=False, show_edge=False, header_style="bold", collapse_padding=True
        )
        for index, (name, justify) in enumerate(zip(self.header, self.justify, strict=True)):
            if index < 2:
                table.add_column(name, no_wrap=True)
            elif index == 2 and self.month_columns:
                table.add_column(name)
            elif justify == "center":
                month = self.month_columns and index < 15
                table.add_column(name, justify="center", min_width=1 if month else None)
            else:
                table.add_column(name, justify="right")
        for row in self.rows:
            table.add_row(
                *(f"[{style}]{text}[/]" if style else escape(text) for text, style in row)
            )
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.segment import Segment
        from rich.style import Style

        cell_len = self._cell_len
        widths = self.widths
        styles: dict[str, Style] = {}
        bold = Style(bold=True)
        line = Segment.line()
        gap = Segment(" ", bold)
        for index, (name, width, justify) in enumerate(
            zip(self.header, widths, self.justify, strict=True)
        ):
            if index:
                yield gap
            yield Segment(_aligned(name, width - cell_len(name), justify), bold)
        yield line
        layout = list(zip(widths, self.justify, strict=True))
        for row in self.rows:
            plain: list[str] = []
            for index, ((text, style), (width, justify)) in enumerate(
                zip(row, layout, strict=True)
            ):
                if index:
                    plain.append(" ")
                room = width - (len(text) if text.isascii() else cell_len(text))
                if style is None:
                    plain.append(_aligned(text, room, justify))
                    continue
                left = room if justify == "right" else room // 2 if justify == "center" else 0
                plain.append(" " * left)
                yield Segment("".join(plain))
                plain = [" " * (room - left)]
                found = styles.get(style)
                if found is None:
                    found = styles[style] = console.get_style(style)
                yield Segment(text, found)
            plain.append("\n")
            yield Segment("".join(plain))


def _aligned(text: str, room: int, justify: str) -> str:
    if room <= 0:
        return text
    if justify == "right":
        return " " * room + text
    if justify == "center":
        return " " * (room // 2) + text + " " * (room - room // 2)
    return text + " " * room


def _mark(state: str, revisions: int = 0) -> _Cell:
    mark, style = MARKS[state]
    if state == "revised" and 1 < revisions < 10:
        mark = str(revisions)
    return mark, style


def _count(value: int, style: str) -> _Cell:
    return (str(value), style) if value else ("0", None)


__all__ = [
    "MARKS",
    "MAX_FILE_ROWS",
    "MAX_MESSAGES_PER_FRAME",
    "MONTH_HEADERS",
    "REFRESH_PER_SECOND",
    "RichObserver",
    "byte_progress",
    "render_coverage",
    "render_summary",
    "stderr_console",
]
