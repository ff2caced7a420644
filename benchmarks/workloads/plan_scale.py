"""Workload 4: plan scale.

A real run of 20,000 requests (1,000 meters x 20 months; on the server they share 20 bodies),
and the plan of 1,000 meters x 21 years monthly (252,000 requests) printed by ``--dry-run``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from harness import (
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
