"""The JSON report: a summary and one entry per item, written atomically at the end.

Items are spooled to an anonymous temporary file as they finish, so a run of a million items
does not hold a million dictionaries; the final file is assembled once, then renamed into place.
Folders made for it are 0700, like every folder omar-bulk makes.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO

from .results import ItemResult, Summary
from .storage import make_private_dirs, translate_os_error

#: Where a run's report goes unless ``--report`` says otherwise, under ``OUT/.omar-bulk/``.
REPORT_NAME = "last-run.json"


class ReportWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._spool: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self._count = 0

    def add(self, result: ItemResult) -> None:
        self._spool.write(result.as_json())
        self._spool.write("\n")
        self._count += 1

    def write(self, summary: Summary) -> Path:
        """Write the report file; the spool is consumed."""
        target = self.path
        temp: str | None = None
        try:
            make_private_dirs(target.parent)
            # mkstemp: a fresh unpredictable name, O_EXCL|O_NOFOLLOW, 0600. A fixed name could
            # be planted as a link by anyone who can write beside the report.
            fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write('{"summary": ')
                out.write(json.dumps(summary.as_report()))
                out.write(', "items": [')
                self._spool.seek(0)
                for index, line in enumerate(self._spool):
                    if index:
                        out.write(",")
                    out.write("\n  ")
                    out.write(line.rstrip("\n"))
                out.write("\n]}\n")
            os.replace(temp, target)
        except OSError as exc:
            if temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
            raise translate_os_error(exc, target) from exc
        finally:
            self._spool.close()
        return target

    def close(self) -> None:
        self._spool.close()
