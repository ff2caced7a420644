"""The terminal glue of ``omar-bulk``: run with the right display, then print the summary.

On a terminal the rich display (``progress.py``) is used; anywhere else (cron, a pipe, a log)
``PlainObserver`` prints failures and warnings as plain lines and rich is never imported.
Both the CLI and the demo run through ``run_with_display``.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, TextIO

from .errors import OmarBulkError
from .results import ItemResult, NullObserver, Observer, RunResult, Status
from .run import INTERRUPTED
from .settings import Settings
from .summary import summary_lines


def say(text: str, stream: TextIO | None = None) -> None:
    """Write one line for the person or the log, if it can be written at all.

    A log on a full disk or a pipe whose reader died (``2>&1 | head -1``) must not stop the
    downloads: the files, the journal, the report and the exit code still tell everything.
    """
    out = stream or sys.stderr
    with contextlib.suppress(OSError, ValueError):  # ValueError: the stream was closed
        print(text, file=out, flush=True)


def print_summary(result: RunResult, stream: TextIO | None = None) -> None:
    for line in summary_lines(result):
        say("".join(text for text, _ in line), stream)


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
            say(f"failed: {result.path}: {result.error}", self.stream)

    def notice(self, message: str) -> None:
        say(f"warning: {message}", self.stream)


def run_with_display(
    settings: Settings, progress: bool | None, *, metrics: Path | None = None
) -> int:
    """Run with the display that suits where we are, print the summary, return the exit code.

    ``progress`` None: the live display on a terminal (stderr), plain lines elsewhere. With
    ``metrics``, the run's Prometheus metrics are written when it ends, however it ends (also
    when it stops before it begins); prometheus_client is imported only then.
    """
    from .run import fetch
    from .tls import forbid_core_dumps

    record = _recorder(
        metrics,
        settings.out_dir,
        settings.report or settings.default_report(),
        settings.state_folder(),
    )
    forbid_core_dumps()  # before the key is decrypted and the password asked for
    show = sys.stderr.isatty() if progress is None else progress
    console: Any = None
    try:
        if not show:
            with PlainObserver() as plain:
                result = fetch(settings, observer=record.watch(plain))
        else:
            from .progress import RichObserver, stderr_console

            console = stderr_console()
            with RichObserver(console) as observer:
                result = fetch(settings, observer=record.watch(observer))
    except OmarBulkError as exc:  # stopped before it began: a certificate, a locked folder
        record.ended(None, exc.exit_code, _warn)
        raise
    except KeyboardInterrupt:
        record.ended(None, INTERRUPTED, _warn)
        raise
    # Metrics first: a summary that cannot be printed must not cost the monitoring its data.
    code: int = record.ended(result, result.exit_code, _warn)
    if console is None:
        print_summary(result)
    else:
        from .progress import render_summary

        render_summary(result, console)
    return code


class _NoMetrics:
    """Stands in for ``metrics.RunRecorder`` when no metrics are asked for."""

    def watch(self, observer: Observer) -> Observer:
        return observer

    def ended(self, result: RunResult | None, exit_code: int, warn: object) -> int:
        return exit_code


def _recorder(path: Path | None, out: Path, report: Path, state: Path) -> Any:
    if path is None:
        return _NoMetrics()  # prometheus_client is not even imported
    from .metrics import RunRecorder

    return RunRecorder(path, out, report, state)


def _warn(message: str) -> None:
    say(f"omar-bulk: warning: {message}")


__all__ = ["PlainObserver", "print_summary", "run_with_display"]
