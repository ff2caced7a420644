"""The run's closing summary, composed once as lines of (text, style) segments.

``progress.py`` renders them with rich on a terminal, ``console.print_summary`` as plain text
everywhere else, so a cron run does not pay for importing a terminal library it does not use.
"""

from __future__ import annotations

from .results import RunResult, Status
from .text import printable

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
        (f", {s.skipped} skipped, {s.empty} {Status.EMPTY}, ", ""),
        (f"{s.failed} failed", "red" if s.failed else ""),
    ]
    if s.revised or s.unchanged:
        counts += [(", ", ""), (f"{s.revised} revised", "cyan"), (f", {s.unchanged} unchanged", "")]
    if s.interrupted_items:
        counts.append((f", {s.interrupted_items} interrupted in flight", ""))
    if s.not_attempted:
        counts.append((f", {s.not_attempted} not attempted", ""))
    lines.append(counts)
    if s.superseded:
        lines.append([(f"{s.superseded} shorter file(s) of a growing chunk moved to history", "")])
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
        shown = "standard output" if str(result.report) == "-" else result.report
        lines.append([(f"report: {shown}", "")])
    if result.failures:
        lines.append([("failures:", "bold red")])
        for failure in result.failures[:MAX_LISTED_FAILURES]:
            lines.append([(f"  {printable(str(failure.path))}: {failure.error or ''}", "")])
        hidden = len(result.failures) - MAX_LISTED_FAILURES + result.more_failures
        if hidden > 0:
            lines.append([(f"  ... and {hidden} more (see the report)", "")])
    return lines


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


__all__ = [
    "MAX_LISTED_FAILURES",
    "Segment",
    "decimal_size",
    "duration",
    "summary_lines",
]
