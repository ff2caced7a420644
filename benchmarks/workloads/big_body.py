"""Workload 3: one large body (1 GiB unless ``--big-mib`` says otherwise)."""

from __future__ import annotations

from datetime import date

from harness import FLOORS, Endpoint, Workload, make_big_body, median, run_workload

from omar_bulk.plan import Item


def prepare(mib: int) -> None:
    make_big_body(mib << 20)


def run(rounds: int, endpoints: dict[str, Endpoint], mib: int) -> Workload:
    load = Workload(
        "w3",
        f"3: one {mib} MiB body",
        [Item("meter", "BIG", date(2024, 1, 1), date(2024, 1, 31), "mdef", "PST")],
        ("omar-bulk", "curl loop", "aria2c", "parfive", *FLOORS),
        rounds,
        sample=1,
    )
    load.notes.append(
        "`curl loop` here is a single `curl -o`; aria2c and parfive use"
        " one connection (no ranged splitting), like the others. The two aiohttp rows are"
        " the floor (benchmarks/aiohttp_floor.py): a bare aiohttp client that only reads"
        " the body, and one that also hashes and writes it, all on its event loop."
    )
    run_workload(load, endpoints, mib << 20)
    mine = median([r.wall for r in load.runs.get("omar-bulk", [])])
    curls = median([r.wall for r in load.runs.get("curl loop", [])])
    load.notes.append(
        f"omar-bulk {mib / mine:.0f} MiB/s, curl {mib / curls:.0f}"
        f" MiB/s: omar-bulk runs at {100 * curls / mine:.0f}% of curl's speed."
    )
    for tool in FLOORS:
        speeds = [
            c.wall / f.wall
            for f, c in zip(load.runs.get(tool, []), load.runs.get("curl loop", []), strict=False)
        ]
        if speeds:
            load.notes.append(f"{tool}: {100 * median(speeds):.0f}% of curl's speed (per round).")
    return load
