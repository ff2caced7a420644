"""The run's closing summary, and the observer for logs and cron: no terminal, no rich.

The summary is composed once, as lines of (text, style) segments; ``progress.py`` renders
them with rich on a terminal, ``print_summary`` as plain text everywhere else, so a cron run
does not pay for importing a terminal library it does not use.
"""

from __future__ import annotations

import sys
from typing import TextIO

from .results import EMPTY, FAILED, ItemResult, NullObserver, RunResult

MAX_LISTED_FAILURES = 20

Segment = tuple[str, str]  # (text, rich style or "")


def summary_lines(result: RunResult) -> list[list[Segment]]:
    """The closing summary every run prints: counts, bytes, time, report, failures."""
    s = result.summary
    lines: list[list[Segment]] = []
    if result.aborted:
        lines.append([("run aborted: ", "bold red"), (result.aborted, "")])
    elif s.interrupted:
        lines.append(
            [("interrupted", "bold yellow"), (": a rerun of the same command finishes the job", "")]
        )
    counts: list[Segment] = [
        (f"{s.planned} planned, ", ""),
        (f"{s.downloaded} downloaded", "green"),
        (f", {s.skipped} skipped, {s.empty} {EMPTY}, ", ""),
        (f"{s.failed} failed", "red" if s.failed else ""),
    ]
    if s.revised or s.unchanged:
        counts += [(", ", ""), (f"{s.revised} revised", "cyan"), (f", {s.unchanged} unchanged", "")]
    if s.not_attempted:
        counts.append((f", {s.not_attempted} not attempted", ""))
    lines.append(counts)
    lines.append([(f"{decimal_size(s.bytes)} in {duration(s.seconds)}", "")])
    pool = s.concurrency
    if pool.get("decreases"):
        lines.append(
            [
                (
                    f"the server pushed back {pool['decreases']} time(s): downloads at once"
                    f" went as low as {pool['lowest']} of {pool['max']},"
                    f" ending at {pool['final']}",
                    "yellow",
                )
            ]
        )
    if result.report:
        lines.append([(f"report: {result.report}", "")])
    if result.failures:
        lines.append([("failures:", "bold red")])
        for failure in result.failures[:MAX_LISTED_FAILURES]:
            lines.append([(f"  {failure.path}: {failure.error or ''}", "")])
        hidden = len(result.failures) - MAX_LISTED_FAILURES + result.more_failures
        if hidden > 0:
            lines.append([(f"  ... and {hidden} more (see the report)", "")])
    return lines


def print_summary(result: RunResult, stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    for line in summary_lines(result):
        print("".join(text for text, _ in line), file=out)
    out.flush()


def decimal_size(size: int) -> str:
    """Bytes in decimal units, as rich and most download tools show them."""
    if size < 1000:
        return f"{size} bytes"
    for unit in ("kB", "MB", "GB", "TB"):
        size_f = size / 1000
        if size_f < 1000 or unit == "TB":
            return f"{size_f:.1f} {unit}"
        size = int(size_f)
    return f"{size} bytes"  # pragma: no cover


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


class PlainObserver(NullObserver):
    """For logs and cron: failures and warnings as lines on stderr, no progress noise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def __enter__(self) -> PlainObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def finished(self, result: ItemResult) -> None:
        if result.status == FAILED:
            print(f"failed: {result.path}: {result.error}", file=self.stream, flush=True)

    def notice(self, message: str) -> None:
        print(f"warning: {message}", file=self.stream, flush=True)
