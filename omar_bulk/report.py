"""The JSON report: a summary and one entry per item, written once at the end.

Items are spooled to an anonymous temporary file as they finish, so a run of a million items
does not hold a million dictionaries; the report is assembled once, through
``userfiles.write_output``: a file is written whole beside its name and renamed into place,
``-`` is standard output, a FIFO or ``/dev/null`` is written in place. Folders made for it are
0700, like every folder omar-bulk makes.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import IO

from .results import ItemResult, Summary
from .storage import make_private_dirs, translate_os_error
from .userfiles import is_stdio, write_output

#: Where a run's report goes unless ``--report`` says otherwise, under ``OUT/.omar-bulk/``.
REPORT_NAME = "last-run.json"


class ReportWriter:
    """Collects a run's item results, then writes the report to ``path`` (``-``: stdout)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._spool: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self._count = 0

    def add(self, result: ItemResult) -> None:
        self._spool.write(result.as_json())
        self._spool.write("\n")
        self._count += 1

    def write(self, summary: Summary) -> Path:
        """Write the report; the spool is consumed."""
        target = self.path
        try:
            if not is_stdio(target):
                make_private_dirs(target.parent)
            with write_output(target, mode=0o600) as out:
                out.write(b'{"summary": ')
                out.write(json.dumps(summary.as_report()).encode())
                out.write(b', "items": [')
                self._spool.seek(0)
                for index, line in enumerate(self._spool):
                    out.write(b",\n  " if index else b"\n  ")
                    out.write(line.rstrip("\n").encode())
                out.write(b"\n]}\n")
        except OSError as exc:
            where = "standard output" if is_stdio(target) else target
            raise translate_os_error(exc, where) from exc
        finally:
            self._spool.close()
        return target

    def close(self) -> None:
        self._spool.close()


__all__ = ["REPORT_NAME", "ReportWriter"]
