"""Workload 1: many small files (2,000 monthly MDEF bodies of about 20 kB), 16 at once.

Run twice: writing to tmpfs, where creating a file is nearly free and the clients' own costs
show, and writing to a real disk (``--disk-dir``), which is where users write.
"""

from __future__ import annotations

from pathlib import Path

from harness import TOOLS, Endpoint, Workload, items_for, make_bodies, run_workload

METERS = [f"M{n:03d}" for n in range(100)]


def prepare() -> int:
    """Writes the bodies nginx serves; returns their total size."""
    return make_bodies(METERS)


def run(
    rounds: int, endpoints: dict[str, Endpoint], size: int, disk: Path | None = None
) -> Workload:
    """On tmpfs, or with ``disk`` on that folder (named ``w1-disk``)."""
    where = f"written to the disk under {disk}" if disk else "written to tmpfs"
    load = Workload(
        "w1-disk" if disk else "w1",
        f"1{'b' if disk else ''}: many small files (2,000 monthly MDEF files, 16 at once, {where})",
        items_for(METERS),
        TOOLS,
        rounds,
        sample=100,
        output=disk,
    )
    load.notes.append(
        f"Bodies: {size / 2000 / 1000:.1f} kB on average. The curl loop"
        " runs 100 requests one after another and is scaled to 2,000."
    )
    run_workload(load, endpoints, size)
    return load
