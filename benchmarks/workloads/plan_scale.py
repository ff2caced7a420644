"""Workload 4: plan scale.

A real run of 20,000 requests (1,000 meters x 20 months; on the server they share 20 bodies),
the plan of 1,000 meters x 21 years monthly (252,000 requests) printed by ``--dry-run``, and a
CSV manifest of 1,000,000 rows (distinct ids, one month each, the month changing from row to
row) printed the same way: many rows, not many chunks.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from harness import (
    CHILD_ENV,
    PY,
    TOOLS,
    WORK,
    Endpoint,
    Run,
    Workload,
    items_for,
    make_bodies,
    measure,
    median,
    run_workload,
)


def prepare() -> None:
    make_bodies(["shared"])


def run(rounds: int, endpoints: dict[str, Endpoint]) -> Workload:
    load = Workload(
        "w4",
        "4: plan scale (a real run of 20,000 requests, 16 at once)",
        items_for([f"S{n:04d}" for n in range(1000)]),
        TOOLS[:4],
        rounds,
    )
    load.notes.append("All 1,000 meters share the same 20 bodies on the server side.")
    run_workload(load, endpoints, None)
    return load


def dry_run(rounds: int) -> dict[str, str]:
    manifest = WORK / "plan-252k.toml"
    ids = [f"MTR{n:04d}" for n in range(1000)]
    manifest.write_text(
        f"[[pull]]\nmeters = {json.dumps(ids)}\nstart = 2000-01-01\nend = 2020-12-31\n"
    )
    dry: list[Run] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as scratch:
            out_file = Path(scratch) / "urls.txt"
            with open(out_file, "w") as sink:
                run = measure(
                    [
                        PY,
                        "-m",
                        "omar_bulk",
                        "fetch",
                        str(manifest),
                        "--dry-run",
                        "--base-url",
                        "https://127.0.0.1:9/",
                        "--out",
                        str(Path(scratch) / "out"),
                    ],
                    stdout=sink.fileno(),
                )
            with open(out_file) as printed:
                lines = sum(1 for _ in printed)
            run.note = "" if lines == 252_000 else f"{lines} URLs"
            run.ok = run.ok and not run.note
        dry.append(run)
        print(f"  dry run 252,000 URLs {run.wall:7.2f} s  rss {run.rss_mb:6.1f} MB", flush=True)
    wall = median([r.wall for r in dry])
    rss = median([r.rss_mb for r in dry])
    return {
        "dry_seconds": f"{wall:.3f}",
        "dry_rss": f"{rss:.1f}",
        "dry run": (
            f"`omar-bulk fetch` of 1,000 meters x 21 years monthly (252,000 requests) with"
            f" `--dry-run`: {wall:.2f} s, peak RSS {rss:.0f} MB (median of {len(dry)}); peers"
            " have no plan to expand: they are handed a URL list."
        ),
    }


CSV_ROWS = 1_000_000


def csv_dry_run(rounds: int) -> dict[str, str]:
    manifest = WORK / "plan-1m.csv"
    if not manifest.exists():
        with open(manifest, "w") as sink:
            sink.write("kind,id,start,end\n")
            for n in range(CSV_ROWS):
                month = n % 12 + 1
                sink.write(f"meter,MTR{n:07d},2024-{month:02d}-01,2024-{month:02d}-28\n")
    # As a user's shell runs it: stdout block-buffered (PYTHONUNBUFFERED, if this process has
    # it, would make every URL two write calls).
    env = {k: v for k, v in CHILD_ENV.items() if k != "PYTHONUNBUFFERED"}
    runs: list[Run] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as scratch:
            command = [PY, "-m", "omar_bulk", "fetch", str(manifest), "--dry-run"]
            command += ["--base-url", "https://127.0.0.1:9/", "--out", str(Path(scratch) / "out")]
            with open(os.devnull, "w") as sink:
                run = measure(command, stdout=sink.fileno(), env=env)
        runs.append(run)
        print(
            f"  dry run 1,000,000 CSV rows {run.wall:7.2f} s  rss {run.rss_mb:6.1f} MB", flush=True
        )
    wall = median([r.wall for r in runs])
    rss = median([r.rss_mb for r in runs])
    return {
        "csv_dry_seconds": f"{wall:.3f}",
        "csv_dry_rss": f"{rss:.1f}",
        "csv dry run": (
            f"`omar-bulk fetch` of a 1,000,000-row CSV manifest (distinct ids, one month each)"
            f" with `--dry-run > /dev/null`: {wall:.2f} s, peak RSS {rss:.0f} MB (median of"
            f" {len(runs)})."
        ),
    }
