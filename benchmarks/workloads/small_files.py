"""Workload 1: many small files (2,000 monthly MDEF bodies of about 20 kB), 16 at once."""

from __future__ import annotations

from harness import TOOLS, Endpoint, Workload, items_for, make_bodies, run_workload

METERS = [f"M{n:03d}" for n in range(100)]


def prepare() -> int:
    """Writes the bodies nginx serves; returns their total size."""
    return make_bodies(METERS)


def run(rounds: int, endpoints: dict[str, Endpoint], size: int) -> Workload:
    load = Workload(
        "w1",
        "1: many small files (2,000 monthly MDEF files, 16 at once)",
        items_for(METERS),
        TOOLS,
        rounds,
        sample=100,
    )
    load.notes.append(
        f"Bodies: {size / 2000 / 1000:.1f} kB on average. The curl loop"
        " runs 100 requests one after another and is scaled to 2,000."
    )
    run_workload(load, endpoints, size)
    return load
