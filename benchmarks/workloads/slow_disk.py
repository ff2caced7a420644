"""Workload 6: a slow disk. Every rename takes 30 ms longer, by fault injection.

200 files (10 meters x 20 months) at concurrency 16 from nginx (the stand-in without it), each
tool run as it is and under ``strace -f --seccomp-bpf -e trace=rename,renameat,renameat2 -e
inject=rename,renameat,renameat2:delay_exit=30000``: the kernel does the rename, then strace
holds the calling thread for 30 ms, the time a rename can take on a busy network share. Only
those three calls stop in strace (``--seccomp-bpf``), so the rest of the run goes at full speed.

If the renames run one after another, as on an event loop, the run takes 200 x 30 ms = 6 s
longer; overlapped 16 at a time, about 0.4 s. omar-bulk runs twice more with its file system
calls pinned inline (``OMAR_OFFLOAD=inline``): the way it wrote small files before, for the
comparison. curl and aria2c write in place with no rename, so the injection leaves them as they
are: they are shown for scale. Needs strace (``apt-get install -y strace``).
"""

from __future__ import annotations

import shutil

from harness import (
    CHILD_ENV,
    OUTPUT,
    WORK,
    Endpoint,
    Run,
    Workload,
    checker,
    command_for,
    items_for,
    make_bodies,
    measure,
    median,
)

from workloads.small_files import METERS

DELAY_US = 30_000
FILES = 200
SLOW = [
    "strace",
    "-f",
    "--seccomp-bpf",
    "-o",
    "/dev/null",
    "-e",
    "trace=rename,renameat,renameat2",
    "-e",
    f"inject=rename,renameat,renameat2:delay_exit={DELAY_US}",
]
#: (label, tool, environment additions)
VARIANTS = (
    ("omar-bulk", "omar-bulk", {}),
    ("omar-bulk, calls inline (before)", "omar-bulk", {"OMAR_OFFLOAD": "inline"}),
    ("curl --parallel", "curl --parallel", {}),
    ("aria2c", "aria2c", {}),
)


def available() -> bool:
    return shutil.which("strace") is not None


def label(name: str, slow: bool) -> str:
    return f"{name}, slow renames" if slow else name


def meters() -> list[str]:
    return METERS[: FILES // 20]


def prepare() -> int:
    """Writes the bodies nginx serves; returns their total size."""
    return make_bodies(meters())


def run(rounds: int, endpoint: Endpoint, size: int | None) -> Workload:
    """``size``: the total bytes of the 200 bodies, checked after each run (None: not)."""
    items = items_for(meters())
    chosen = [v for v in VARIANTS if v[1] == "omar-bulk" or shutil.which(v[1].split()[0])]
    load = Workload(
        "w6",
        f"6: a slow disk ({FILES} files, 16 at once, every rename delayed {DELAY_US // 1000} ms)",
        items,
        tuple(label(name, slow) for name, _, _ in chosen for slow in (False, True)),
        rounds,
        table="slow",
    )
    print(f"\n== {load.title}", flush=True)
    runs = [(v, slow) for v in chosen for slow in (False, True)]
    for round_ in range(rounds):
        order = runs[round_ % len(runs) :] + runs[: round_ % len(runs)]
        for (name, tool, extra), slow in order:
            out = OUTPUT / load.name
            shutil.rmtree(out, ignore_errors=True)
            job = WORK / "jobs" / load.name / tool.replace(" ", "-")
            words = command_for(tool, endpoint, items, out, job, 0)
            result = measure(
                [*SLOW, *words] if slow else words,
                env=CHILD_ENV | extra,
                check=checker(out, items, size),
            )
            load.runs.setdefault(label(name, slow), []).append(result)
            print(
                f"  round {round_ + 1} {label(name, slow):44s} {result.wall:6.2f} s"
                f"  cpu {result.cpu:5.2f} s  {result.note}",
                flush=True,
            )
            shutil.rmtree(out, ignore_errors=True)
    return load


def cost(load: Workload, name: str) -> float:
    """Median over rounds of the slow run's wall time minus the plain run's, same round."""
    slow = load.runs.get(label(name, True), [])
    plain = load.runs.get(label(name, False), [])
    return median([a.wall - b.wall for a, b in zip(slow, plain, strict=False)])


def table(load: Workload) -> list[str]:
    lines = [
        "| tool | wall (s) | wall, slow renames (s) | slow - plain, per round (s) | notes |",
        "|---|---:|---:|---:|---|",
    ]
    for name, _, _ in VARIANTS:
        slow: list[Run] = load.runs.get(label(name, True), [])
        plain: list[Run] = load.runs.get(label(name, False), [])
        if not slow or not plain:
            continue
        failed = [r.note for r in slow + plain if not r.ok]
        lines.append(
            f"| {name} | {median([r.wall for r in plain]):.2f}"
            f" | {median([r.wall for r in slow]):.2f} | {cost(load, name):+.2f}"
            f" | {(failed[0] if failed else '').replace('|', '/')} |"
        )
    return lines
