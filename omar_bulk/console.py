"""The terminal glue of ``omar-bulk``: run with the right display, then print the summary.

On a terminal the rich display (``progress.py``) is used; anywhere else (cron, a pipe, a log)
``PlainObserver`` prints failures and warnings as plain lines and rich is never imported.
Both the CLI and the demo run through ``run_with_display``.
"""

from __future__ import annotations

import sys
from typing import TextIO

from .results import ItemResult, NullObserver, RunResult, Status
from .settings import Settings
from .summary import summary_lines


def print_summary(result: RunResult, stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    for line in summary_lines(result):
        print("".join(text for text, _ in line), file=out)
    out.flush()


class PlainObserver(NullObserver):
    """For logs and cron: failures and warnings as lines on stderr, no progress noise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def __enter__(self) -> PlainObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def finished(self, result: ItemResult) -> None:
        if result.status == Status.FAILED:
            print(f"failed: {result.path}: {result.error}", file=self.stream, flush=True)

    def notice(self, message: str) -> None:
        print(f"warning: {message}", file=self.stream, flush=True)


def run_with_display(settings: Settings, progress: bool | None) -> RunResult:
    """Run with the display that suits where we are; print the summary; return the result.

    ``progress`` None: the live display on a terminal (stderr), plain lines elsewhere.
    """
    from .run import fetch

    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        with PlainObserver() as plain:
            result = fetch(settings, observer=plain)
        print_summary(result)
        return result
    from .progress import RichObserver, render_summary, stderr_console

    console = stderr_console()
    with RichObserver(console) as observer:
        result = fetch(settings, observer=observer)
    render_summary(result, console)
    return result


__all__ = ["PlainObserver", "print_summary", "run_with_display"]
