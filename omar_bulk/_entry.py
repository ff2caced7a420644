"""The console entry point: route Ctrl-C and SIGTERM before the heavy imports begin."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .run import SignalRouter


def main() -> None:
    code: int
    router: SignalRouter | None = None
    try:
        from .run import ROUTER

        router = ROUTER
        router.install()
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
        if router is not None:
            router.silence()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


__all__ = [
    "main",
]
