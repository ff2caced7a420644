"""RESULTS.md and results.png from the workloads' runs (and back from the saved figures)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

from harness import HERE, WORK, Run, Workload, median, ratio
from workloads import display, slow_disk

from omar_bulk import __version__


def versions() -> dict[str, str]:
    def first_line(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            return (done.stdout or done.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "not found"

    import aiohttp

    return {
        "omar-bulk": __version__,
        "Python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "uvloop": _version_of("uvloop"),
        "curl": first_line(["curl", "--version"]).split(" (")[0].removeprefix("curl "),
        "aria2c": first_line(["aria2c", "--version"]).removeprefix("aria2 version "),
        "parfive": _version_of("parfive"),
        "proxy.py": _distribution("proxy.py"),
        "nginx": first_line(["nginx", "-v"]).removeprefix("nginx version: nginx/"),
    }


def _version_of(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except ImportError:
        return "not installed"


def _distribution(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> str:
    memory = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({model or platform.machine()}), {memory} GiB, {platform.system()}"
    )


def write_results(
    loads: list[Workload], extra: dict[str, str], target: Path = HERE / "RESULTS.md"
) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"Made by `python benchmarks/run.py` on {time.strftime('%Y-%m-%d')}: {machine()}.",
        "Every tool runs the same requests against the same loopback server with the same client",
        "certificate; rounds are interleaved (the order rotates each round); figures are medians",
        "over rounds, and ratios are computed per round, then their median taken. Wall time",
        "includes each tool's start-up. CPU is user + system time of the tool's process.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".",
        "",
    ]
    for load in loads:
        if not load.runs:
            continue
        if load.table == "display":
            lines += [f"## {load.title}", "", *display.table(load), "", *load.notes, ""]
            continue
        if load.table == "slow":
            lines += [f"## {load.title}", "", *slow_disk.table(load), "", *load.notes, ""]
            continue
        lines += [
            f"## {load.title}",
            "",
            *load.notes,
            "",
            "| tool | wall (s) | CPU (s) | peak RSS (MB) | omar-bulk time / tool time | notes |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for tool in load.tools:
            runs = load.runs.get(tool)
            if not runs:
                continue
            failed = [r.note for r in runs if not r.ok]
            note = failed[0] if failed else next((r.note for r in runs if r.note), "")
            share = "" if tool == "omar-bulk" else f"{ratio(load, tool):.2f}"
            lines.append(
                f"| {tool} | {median([r.wall for r in runs]):.2f} | "
                f"{median([r.cpu for r in runs]):.2f} | {median([r.rss_mb for r in runs]):.0f} | "
                f"{share} | {note.replace('|', '/')} |"
            )
        lines.append("")
    keys = ("startup", "one file", "dry run", "csv dry run", "status 20000", "status 60000")
    shown = [v for k, v in extra.items() if k in keys]
    lines += ["## Start-up, plan scale and status", "", *[f"- {v}" for v in shown], ""]
    lines += targets(loads, extra)
    target.write_text("\n".join(lines))
    saved = [
        {
            "name": load.name,
            "title": load.title,
            "tools": list(load.tools),
            "notes": load.notes,
            "table": load.table,
            "runs": {tool: [vars(r) for r in runs] for tool, runs in load.runs.items()},
        }
        for load in loads
    ]
    (WORK / "results.json").write_text(json.dumps({"loads": saved, "extra": extra}, indent=1))
    # RESULTS.md's chart is results.png (as the READMEs say); another --results gets its own
    chart(
        loads, HERE / "results.png" if target == HERE / "RESULTS.md" else target.with_suffix(".png")
    )


def report_only(target: Path = HERE / "RESULTS.md") -> None:
    """Rewrite RESULTS.md and the chart from the last run's saved figures."""
    data = json.loads((WORK / "results.json").read_text())
    loads = []
    for entry in data["loads"]:
        load = Workload(
            entry["name"],
            entry["title"],
            [],
            tuple(entry["tools"]),
            0,
            table=entry.get("table", "peers"),
        )
        load.notes = entry["notes"]
        load.runs = {tool: [Run(**r) for r in runs] for tool, runs in entry["runs"].items()}
        loads.append(load)
    write_results(loads, data["extra"], target)


def targets(loads: list[Workload], extra: dict[str, str]) -> list[str]:
    """The targets set for omar-bulk, each with the figure measured above and a verdict."""
    by = {load.name: load for load in loads}

    def wall(name: str, tool: str) -> float:
        return median([r.wall for r in by[name].runs.get(tool, [])]) if name in by else nan

    def rss(name: str, tool: str = "omar-bulk") -> float:
        return median([r.rss_mb for r in by[name].runs.get(tool, [])]) if name in by else nan

    def rat(name: str, tool: str) -> float:
        return ratio(by[name], tool) if name in by else nan

    nan = float("nan")
    rows: list[tuple[str, str, bool]] = []
    rows.append(
        (
            "1: no slower than aria2c",
            f"{rat('w1', 'aria2c'):.2f}x aria2c's time",
            rat("w1", "aria2c") <= 1,
        )
    )
    rows.append(
        (
            "1: within 3x of curl --parallel",
            f"{rat('w1', 'curl --parallel'):.2f}x",
            rat("w1", "curl --parallel") <= 3,
        )
    )
    rows.append(
        (
            "1: at least 3x faster than parfive",
            f"{1 / rat('w1', 'parfive'):.2f}x faster",
            1 / rat("w1", "parfive") >= 3,
        )
    )
    rows.append(("1: peak RSS <= 100 MB", f"{rss('w1'):.0f} MB", rss("w1") <= 100))
    start = extra.get("startup_seconds", "0")
    begin = float(extra.get("one_file_seconds", "0"))
    rows.append(
        (
            "2: within 10% of the ideal 5 s, plus start-up (a one-file run)",
            f"{wall('w2', 'omar-bulk'):.2f} s (limit {5.5 + begin:.2f} s; curl"
            f" {wall('w2', 'curl --parallel'):.2f} s)",
            wall("w2", "omar-bulk") <= 5.5 + begin,
        )
    )
    share = wall("w3", "curl loop") / wall("w3", "omar-bulk")
    rows.append(("3: at least 80% of curl's speed", f"{100 * share:.0f}%", share >= 0.8))
    rows.append(("3: peak RSS <= 80 MB", f"{rss('w3'):.0f} MB", rss("w3") <= 80))
    dry_wall = float(extra.get("dry_seconds", "nan"))
    dry_rss = float(extra.get("dry_rss", "nan"))
    rows.append(
        (
            "4: 252,000-URL dry run in <= 5 s and <= 150 MB",
            f"{dry_wall:.2f} s, {dry_rss:.0f} MB",
            dry_wall <= 5 and dry_rss <= 150,
        )
    )
    csv_wall = float(extra.get("csv_dry_seconds", "nan"))
    csv_rss = float(extra.get("csv_dry_rss", "nan"))
    rows.append(
        (
            "4: 1,000,000-row CSV dry run in <= 10 s and <= 150 MB",
            f"{csv_wall:.2f} s, {csv_rss:.0f} MB",
            csv_wall <= 10 and csv_rss <= 150,
        )
    )
    rows.append(
        ("4: 20,000-request run peak RSS <= 120 MB", f"{rss('w4'):.0f} MB", rss("w4") <= 120)
    )
    forms = ("table", "--json", "--manifest", "--prometheus")
    small = [float(extra.get(f"status_20000_{f}", "nan")) for f in forms]
    large = [float(extra.get(f"status_60000_{f}", "nan")) for f in forms]
    rows.append(
        (
            "7: `status` of 20,000 files in <= 1 s (table, --json, --manifest, --prometheus)",
            ", ".join(f"{s:.2f}" for s in small) + " s",
            max(small) <= 1,
        )
    )
    rows.append(
        (
            "7: 60,000 files take at most 3x the time of 20,000 (no faster growth than files)",
            ", ".join(f"{b / a:.2f}x" for a, b in zip(small, large, strict=True)),
            all(b <= 3 * a for a, b in zip(small, large, strict=True)),
        )
    )
    shown = by.get("w5")
    wall5 = display.ratios(shown, 64, "wall") if shown else nan
    cpu5 = display.ratios(shown, 64, "cpu") if shown else nan
    rows.append(
        (
            "5: display on at concurrency 64: wall <= 1.1x, CPU <= 1.5x of --no-progress",
            f"wall {wall5:.2f}x, CPU {cpu5:.2f}x",
            wall5 <= 1.1 and cpu5 <= 1.5,
        )
    )
    for name in ("w1-disk",):
        if name in by:
            rows.append(
                (
                    "1b (real disk): within 1.5x of curl --parallel",
                    f"{rat(name, 'curl --parallel'):.2f}x",
                    rat(name, "curl --parallel") <= 1.5,
                )
            )
            rows.append(
                (
                    "1b (real disk): ahead of aria2c",
                    f"{rat(name, 'aria2c'):.2f}x aria2c's time",
                    rat(name, "aria2c") < 1,
                )
            )
    if "w6" in by:
        extra6 = slow_disk.cost(by["w6"], "omar-bulk")
        rows.append(
            (
                "6: slow renames add at most 1 s to 200 files",
                f"{extra6:+.2f} s",
                extra6 <= 1,
            )
        )
    rows.append(("`omar-bulk --help` in <= 0.3 s", f"{float(start):.3f} s", float(start) <= 0.3))
    out = ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    out += [f"| {what} | {figure} | {'yes' if ok else 'no'} |" for what, figure, ok in rows]
    return [*out, ""]


def chart(loads: list[Workload], target: Path = HERE / "results.png") -> None:
    shown = [load for load in loads if load.runs and load.table == "peers"]
    if not shown:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 4.2), squeeze=False)
    for axis, load in zip(axes[0], shown, strict=True):
        tools = [t for t in load.tools if t in load.runs]
        walls = [median([r.wall for r in load.runs[t]]) for t in tools]
        colours = ["#2a7ab9" if t == "omar-bulk" else "#9a9a9a" for t in tools]
        axis.bar(range(len(tools)), walls, color=colours)
        axis.set_xticks(range(len(tools)), tools, rotation=35, ha="right", fontsize=8)
        axis.set_title(load.title.split(" (")[0], fontsize=9)
        axis.set_ylabel("wall time, s (median)")
        for x, wall in enumerate(walls):
            axis.text(x, wall, f"{wall:.1f}", ha="center", va="bottom", fontsize=7)
    figure.tight_layout()
    figure.savefig(target, dpi=110)
