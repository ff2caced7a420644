"""The console entry point: take over Ctrl-C and SIGTERM before the heavy imports begin."""

from __future__ import annotations

import signal
import sys


def _early(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGINT, _early)
    signal.signal(signal.SIGTERM, _early)
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        print("omar-bulk: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    try:
        cli_main()
    finally:
        # Everything is written by now. Python restores the default handlers while it shuts
        # down, and a late Ctrl-C there would end the process with a traceback-less SIGINT
        # status instead of our exit code: ignore signals for the last few milliseconds.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
