"""Run ``omar-bulk`` with a SIGKILL at a named step between a rename and its journal commit.

Invoked as ``python kill_driver.py POINT fetch ARGS...``: the process kills itself (SIGKILL,
nothing cleaned up, as ``kill -9`` would) the first time the run reaches POINT:

    before-keep       a revision: its intent committed, the old version not yet linked
    after-keep        a revision: the old version linked into history, the new one not renamed
    before-record     a revision: the new file renamed into place, its outcome not committed
    before-retire     a grown chunk: the shorter file's intent committed, nothing moved
    retire-linked     a grown chunk: the shorter file linked into history, not yet unlinked
    before-supersede  a grown chunk: the shorter file moved to history, not yet recorded
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str) -> None:
    from omar_bulk.journal import Journal
    from omar_bulk.results import Status
    from omar_bulk.storage import Storage

    keep, retire = Storage.keep, Storage.retire
    record, supersede = Journal.record, Journal.supersede
    retiring = [False]

    def patched_keep(self: Storage, *args: Any) -> None:
        if point == "before-keep" and not retiring[0]:
            die()
        keep(self, *args)
        if (point == "after-keep" and not retiring[0]) or (
            point == "retire-linked" and retiring[0]
        ):
            die()

    def patched_retire(self: Storage, *args: Any) -> None:
        if point == "before-retire":
            die()
        retiring[0] = True
        try:
            retire(self, *args)
        finally:
            retiring[0] = False

    def patched_record(self: Journal, key: str, result: Any, *args: Any, **kwargs: Any) -> None:
        if point == "before-record" and result.status == Status.REVISED:
            die()
        record(self, key, result, *args, **kwargs)

    def patched_supersede(self: Journal, *args: Any) -> None:
        if point == "before-supersede":
            die()
        supersede(self, *args)

    Storage.keep = patched_keep  # type: ignore[method-assign]
    Storage.retire = patched_retire  # type: ignore[method-assign]
    Journal.record = patched_record  # type: ignore[method-assign]
    Journal.supersede = patched_supersede  # type: ignore[method-assign]


def main() -> None:
    point = sys.argv[1]
    install(point)
    sys.argv = ["omar-bulk", *sys.argv[2:]]
    from omar_bulk._entry import main as entry

    entry()


if __name__ == "__main__":
    main()
