"""The terminal glue of ``omar-bulk``: run with the right display, then print the summary.

On a terminal the rich display (``progress.py``) is used; anywhere else (cron, a pipe, a log)
``PlainObserver`` prints failures and warnings as plain lines and rich is never imported.
Both the CLI and the demo run through ``run_with_display``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from .errors import OmarBulkError
from .results import ItemResult, NullObserver, Observer, RunResult, Status
from .run import INTERRUPTED
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

    record = _recorder(metrics, settings.out_dir)
    forbid_core_dumps()  # before the key is decrypted and the password asked for
    show = sys.stderr.isatty() if progress is None else progress
    try:
        if not show:
            with PlainObserver() as plain:
                result = fetch(settings, observer=record.watch(plain))
            print_summary(result)
        else:
            from .progress import RichObserver, render_summary, stderr_console

            console = stderr_console()
            with RichObserver(console) as observer:
                result = fetch(settings, observer=record.watch(observer))
            render_summary(result, console)
    except OmarBulkError as exc:  # stopped before it began: a certificate, a locked folder
        record.ended(None, exc.exit_code, _warn)
        raise
    except KeyboardInterrupt:
        record.ended(None, INTERRUPTED, _warn)
        raise
    code: int = record.ended(result, result.exit_code, _warn)
    return code


class _NoMetrics:
    """Stands in for ``metrics.RunRecorder`` when no metrics are asked for."""

    def watch(self, observer: Observer) -> Observer:
        return observer

    def ended(self, result: RunResult | None, exit_code: int, warn: object) -> int:
        return exit_code


def _recorder(path: Path | None, out: Path) -> Any:
    if path is None:
        return _NoMetrics()  # prometheus_client is not even imported
    from .metrics import RunRecorder

    return RunRecorder(path, out)


def _warn(message: str) -> None:
    print(f"omar-bulk: warning: {message}", file=sys.stderr, flush=True)


__all__ = ["PlainObserver", "print_summary", "run_with_display"]
