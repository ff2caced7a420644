"""Start-up: ``omar-bulk --help``, and a one-file fetch (certificate, journal, login, report)."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness import MONTHS, OUTPUT, PY, WORK, Endpoint, command_for, items_for, measure, median


def help_time() -> dict[str, str]:
    script = shutil.which("omar-bulk") or str(Path(PY).parent / "omar-bulk")
    seconds = median([measure([script, "--help"]).wall for _ in range(10)])
    line = f"`omar-bulk --help`: {seconds:.3f} s (median of 10)"
    print(line, flush=True)
    return {"startup": line, "startup_seconds": f"{seconds:.3f}"}


def one_file(endpoint: Endpoint) -> dict[str, str]:
    one = items_for(["M000"], MONTHS[:1])
    walls = []
    for _ in range(5):
        out = OUTPUT / "one"
        shutil.rmtree(out, ignore_errors=True)
        job = WORK / "jobs" / "one"
        walls.append(measure(command_for("omar-bulk", endpoint, one, out, job, 0)).wall)
    line = (
        "a one-file `omar-bulk fetch` (start-up, certificate, journal, login, one"
        f" request, report): {median(walls):.3f} s (median of 5)"
    )
    print(line, flush=True)
    return {"one_file_seconds": f"{median(walls):.3f}", "one file": line}
