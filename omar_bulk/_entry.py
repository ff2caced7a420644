"""The console entry point: take over Ctrl-C and SIGTERM before the heavy imports begin."""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def _early(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGINT, _early)
    signal.signal(signal.SIGTERM, _early)
    code: int
    try:
        from .cli import main as cli_main

        cli_main()
        code = 0
    except KeyboardInterrupt:
        print("omar-bulk: interrupted", file=sys.stderr)
        code = 130
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:
            print(exit_.code, file=sys.stderr)
            code = 1
    finally:
        # Everything is written by now. Ignore late signals, and leave without the
        # interpreter's shutdown, which restores default handlers and can turn a Ctrl-C that
        # lands in its last milliseconds into a different exit status than ours.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
