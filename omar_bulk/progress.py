"""What a person sees: rich progress on a terminal, plain lines elsewhere, and the summary.

These are ``Observer``s; the engine calls them and never imports this module.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

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
from .results import EMPTY, FAILED, ItemResult, RunResult

MAX_LISTED_FAILURES = 20


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


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
        if result.status == FAILED:
            self.progress.console.print(
                f"[red]failed[/] {escape(str(result.path))}: {escape(result.error or '')}"
            )

    def notice(self, message: str) -> None:
        self.progress.console.print(f"[yellow]warning:[/] {escape(message)}")


class PlainObserver:
    """For logs and cron: failures and warnings as lines on stderr, no progress noise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def __enter__(self) -> PlainObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def planned(self, total: int) -> None:
        pass

    def started(self, item: Item, path: Path, attempt: int) -> None:
        pass

    def received(self, item: Item, nbytes: int, expected: int | None) -> None:
        pass

    def retrying(self, item: Item, attempt: int, reason: str, delay: float) -> None:
        pass

    def finished(self, result: ItemResult) -> None:
        if result.status == FAILED:
            print(f"failed: {result.path}: {result.error}", file=self.stream, flush=True)

    def notice(self, message: str) -> None:
        print(f"warning: {message}", file=self.stream, flush=True)


def render_summary(result: RunResult, console: Console) -> None:
    """The closing summary every run prints: counts, bytes, time, report, failures."""
    s = result.summary
    if result.aborted:
        console.print(f"[bold red]run aborted:[/] {escape(result.aborted)}")
    elif s.interrupted:
        console.print("[bold yellow]interrupted[/]: a rerun of the same command finishes the job")
    parts = [
        f"{s.planned} planned",
        f"[green]{s.downloaded} downloaded[/]",
        f"{s.skipped} skipped",
        f"{s.empty} {EMPTY}",
        f"[red]{s.failed} failed[/]" if s.failed else "0 failed",
    ]
    if s.revised or s.unchanged:
        parts.append(f"[cyan]{s.revised} revised[/], {s.unchanged} unchanged")
    if s.not_attempted:
        parts.append(f"{s.not_attempted} not attempted")
    console.print(", ".join(parts))
    console.print(f"{filesize.decimal(s.bytes)} in {_duration(s.seconds)}")
    if result.report:
        console.print(f"report: {escape(str(result.report))}")
    if result.failures:
        console.print("[bold red]failures:[/]")
        for failure in result.failures[:MAX_LISTED_FAILURES]:
            console.print(f"  {escape(str(failure.path))}: {escape(failure.error or '')}")
        hidden = len(result.failures) - MAX_LISTED_FAILURES + result.more_failures
        if hidden > 0:
            console.print(f"  ... and {hidden} more (see the report)")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


def make_observer(show_progress: bool, console: Console | None = None) -> Any:
    """A rich display for a terminal, plain lines otherwise."""
    return RichObserver(console) if show_progress else PlainObserver()
