"""omar-bulk side by side with curl, aria2c and parfive on the same work (see README.md here).

    python benchmarks/run.py [--rounds 3] [--workloads 1,2,3,4]

Everything runs on loopback: nginx with mutual TLS serving pre-generated bodies (so the server
is never the bottleneck), and the bundled stand-in server where a workload needs latency.
Results go to benchmarks/RESULTS.md and benchmarks/results.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from omar_bulk import __version__  # noqa: E402
from omar_bulk.plan import Chunking, Item  # noqa: E402
from omar_bulk.protocol import relative_path, request_url  # noqa: E402
from omar_bulk.standin.bodies import mdef_body  # noqa: E402
from omar_bulk.standin.certs import TestPKI  # noqa: E402

WORK = HERE / "work"
#: Every tool writes its files here: tmpfs where there is one, so that the disk (on some
#: virtual machines a file creation costs from 30 to 400 microseconds, depending on what was
#: just deleted) does not drown the differences between the tools.
OUTPUT = Path("/dev/shm/omar-bulk-bench") if Path("/dev/shm").is_dir() else WORK / "out"
PY = sys.executable
#: Children run as an installed tool does: with Python's bytecode cache.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
CONCURRENCY = 16
MONTHS = list(Chunking.parse("month").split(date(2023, 1, 1), date(2024, 8, 31)))  # 20 months
TOOLS = ("omar-bulk", "curl --parallel", "aria2c", "parfive", "curl loop")


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Run:
    wall: float
    cpu: float
    rss_mb: float
    ok: bool
    note: str = ""


GNU_TIME = "/usr/bin/time"


def measure(
    command: list[str],
    *,
    stdout: int | None = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
    check: Callable[[], str] | None = None,
) -> Run:
    """Run one command: wall time, the tool's CPU time and peak RSS, and a check of its output.

    CPU and RSS come from GNU time, which starts the tool from a small process: measured from
    this Python process, a forked child's peak RSS would begin at this process's own size.
    """
    with tempfile.NamedTemporaryFile() as figures, tempfile.TemporaryFile() as errors:
        wrapped = [GNU_TIME, "-q", "-f", "%U %S %M", "-o", figures.name, *command]
        start = time.monotonic()
        process = subprocess.Popen(wrapped, stdout=stdout, stderr=errors, env=env or CHILD_ENV)
        code = process.wait()
        wall = time.monotonic() - start
        errors.seek(0)
        tail = errors.read()[-400:].decode(errors="replace").strip()
        user, system, rss_kb = Path(figures.name).read_text().split()[-3:]
    note = "" if code == 0 else f"exit {code}: {tail}"
    if code == 0 and check is not None:
        note = check()
    return Run(wall, float(user) + float(system), int(rss_kb) / 1024, not note, note)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as attempt:
            if attempt.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


# --- servers --------------------------------------------------------------------------------

NGINX_CONF = """
worker_processes 1;
error_log {work}/nginx-error.log warn;
pid {work}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  map $arg_selectedMeters $dir {{ "~^S[0-9]+$" shared; default $arg_selectedMeters; }}
  map $arg_startDate $sd {{ "~^(\\d\\d)%2[Ff](\\d\\d)%2[Ff](\\d{{4}})$" $1-$2-$3; default x; }}
  map $arg_endDate $ed {{ "~^(\\d\\d)%2[Ff](\\d\\d)%2[Ff](\\d{{4}})$" $1-$2-$3; default x; }}
  map $arg_startDate $lsd {{ "~^(\\d\\d)(?:%2[Ff]|/)(\\d\\d)(?:%2[Ff]|/)(\\d{{4}})$" $1-$2-$3;
                             default x; }}
  map $arg_endDate $led {{ "~^(\\d\\d)(?:%2[Ff]|/)(\\d\\d)(?:%2[Ff]|/)(\\d{{4}})$" $1-$2-$3;
                           default x; }}
  server {{
    listen 127.0.0.1:{strict} ssl;
    ssl_certificate {pki}/server.pem; ssl_certificate_key {pki}/server.pem;
    ssl_client_certificate {pki}/ca.pem; ssl_verify_client on;
    root {work}/www;
    location = / {{ add_header Set-Cookie "JSESSIONID=bench; Path=/; Secure"; return 200 "ok"; }}
    location = /getMDEF.jsp {{
      default_type application/octet-stream; try_files /mdef/$dir/${{sd}}_${{ed}} =404; }}
  }}
  server {{  # the same, but also accepting '/' in dates: for parfive, which cannot send %2F
    listen 127.0.0.1:{lenient} ssl;
    ssl_certificate {pki}/server.pem; ssl_certificate_key {pki}/server.pem;
    ssl_client_certificate {pki}/ca.pem; ssl_verify_client on;
    root {work}/www;
    location = / {{ add_header Set-Cookie "JSESSIONID=bench; Path=/; Secure"; return 200 "ok"; }}
    location = /getMDEF.jsp {{
      default_type application/octet-stream; try_files /mdef/$dir/${{lsd}}_${{led}} =404; }}
  }}
}}
"""


@dataclass
class Endpoint:
    """Where a tool sends its requests, with which certificate and cookie."""

    base: str
    pki: Path
    cookie: str = ""
    slashes: bool = False  # dates sent with '/', for parfive


@contextmanager
def nginx(pki: Path) -> Iterator[tuple[Endpoint, Endpoint]]:
    strict, lenient = free_port(), free_port()
    conf = WORK / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=WORK, pki=pki, strict=strict, lenient=lenient))
    subprocess.run(["nginx", "-c", str(conf), "-e", str(WORK / "nginx-error.log")], check=True)
    try:
        wait_port(strict)
        yield (
            Endpoint(f"https://127.0.0.1:{strict}/", pki),
            Endpoint(f"https://127.0.0.1:{lenient}/", pki, slashes=True),
        )
    finally:
        subprocess.run(["nginx", "-c", str(conf), "-s", "stop"], check=False)


@contextmanager
def standin(latency: float, *, slashes: bool = False) -> Iterator[Endpoint]:
    """The bundled stand-in in its own process, with a session cookie for the peers."""
    certs = WORK / ("standin-lenient" if slashes else "standin")
    port = free_port()
    command = [
        PY,
        "-m",
        "omar_bulk",
        "serve",
        "--port",
        str(port),
        "--certs",
        str(certs),
        "--latency",
        str(latency),
    ]
    if slashes:
        command.append("--accept-slashes")
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=CHILD_ENV
    )
    try:
        wait_port(port)
        base = f"https://127.0.0.1:{port}/"
        login = subprocess.run(
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-c",
                "-",
                "--cert",
                str(certs / "client.pem"),
                "--cacert",
                str(certs / "ca.pem"),
                base,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        token = re.search(r"JSESSIONID\s+(\S+)", login)
        cookie = f"JSESSIONID={token.group(1)}" if token else ""
        yield Endpoint(base, certs, cookie, slashes)
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- the work -------------------------------------------------------------------------------


@dataclass
class Workload:
    name: str
    title: str
    items: list[Item]
    tools: tuple[str, ...]
    rounds: int
    sample: int = 0  # curl loop: requests actually made (then extrapolated)
    runs: dict[str, list[Run]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def body_name(item: Item) -> str:
    return f"{item.start:%m-%d-%Y}_{item.end:%m-%d-%Y}"


def make_bodies(meters: list[str]) -> int:
    total = 0
    for meter in meters:
        folder = WORK / "www" / "mdef" / meter
        folder.mkdir(parents=True, exist_ok=True)
        for first, last in MONTHS:
            target = folder / f"{first:%m-%d-%Y}_{last:%m-%d-%Y}"
            if not target.exists():
                target.write_bytes(mdef_body("meter", meter, first, last, "PST"))
            total += target.stat().st_size
    return total


def make_big_body(size: int) -> None:
    folder = WORK / "www" / "mdef" / "BIG"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "01-01-2024_01-31-2024"
    if target.exists() and target.stat().st_size == size:
        return
    block = mdef_body("meter", "BIG", date(2024, 1, 1), date(2024, 1, 31), "PST")
    block = (block * (1 + (1 << 20) // len(block)))[: 1 << 20]
    with open(target, "wb") as handle:
        for _ in range(size >> 20):
            handle.write(block)


def items_for(meters: list[str], months: list[tuple[date, date]] = MONTHS) -> list[Item]:
    return [Item("meter", m, a, b, "mdef", "PST") for m in meters for a, b in months]


def url_for(endpoint: Endpoint, item: Item) -> str:
    url = request_url(endpoint.base, item)
    return url.replace("%2F", "/") if endpoint.slashes else url


def write_manifest(path: Path, items: list[Item]) -> None:
    meters = sorted({i.id for i in items})
    first = min(i.start for i in items)
    last = max(i.end for i in items)
    path.write_text(f"[[pull]]\nmeters = {json.dumps(meters)}\nstart = {first}\nend = {last}\n")


def command_for(
    tool: str, endpoint: Endpoint, items: list[Item], out: Path, job: Path, sample: int
) -> list[str]:
    """The command line a user of ``tool`` would run for these items."""
    pki = endpoint.pki
    job.mkdir(parents=True, exist_ok=True)
    if tool == "omar-bulk":
        manifest = job / "manifest.toml"
        write_manifest(manifest, items)
        return [
            PY,
            "-m",
            "omar_bulk",
            "fetch",
            str(manifest),
            "--base-url",
            endpoint.base,
            "--cert",
            str(pki / "client.pem"),
            "--ca-bundle",
            str(pki / "ca.pem"),
            "--out",
            str(out),
            "--concurrency",
            str(CONCURRENCY),
            "--no-progress",
        ]
    if tool == "curl --parallel":
        config = job / "curl.cfg"
        with open(config, "w") as handle:
            for item in items:
                handle.write(f'url = "{url_for(endpoint, item)}"\n')
                handle.write(f'output = "{out / relative_path(item)}"\n')
        command = [
            "curl",
            "--parallel",
            "--parallel-max",
            str(CONCURRENCY),
            "-K",
            str(config),
            "--cert",
            str(pki / "client.pem"),
            "--cacert",
            str(pki / "ca.pem"),
            "--create-dirs",
            "--fail",
            "-s",
            "-S",
        ]
        return command + (["-b", endpoint.cookie] if endpoint.cookie else [])
    if tool == "aria2c":
        listing = job / "aria2.txt"
        with open(listing, "w") as handle:
            for item in items:
                handle.write(f"{url_for(endpoint, item)}\n  out={relative_path(item)}\n")
        command = [
            "aria2c",
            "-i",
            str(listing),
            "-j",
            str(CONCURRENCY),
            "-d",
            str(out),
            "-x1",
            "-s1",
            "--certificate",
            str(pki / "client-cert.pem"),
            "--private-key",
            str(pki / "client-key.pem"),
            "--ca-certificate",
            str(pki / "ca.pem"),
            "--console-log-level=error",
            "--summary-interval=0",
            "--allow-overwrite=true",
            "--auto-file-renaming=false",
            "--file-allocation=none",
        ]
        return command + ([f"--header=Cookie: {endpoint.cookie}"] if endpoint.cookie else [])
    if tool == "parfive":
        urls = job / "parfive.json"
        urls.write_text(
            json.dumps(
                [
                    [
                        url_for(endpoint, i),
                        str((out / relative_path(i)).parent),
                        relative_path(i).name,
                    ]
                    for i in items
                ]
            )
        )
        command = [
            PY,
            str(HERE / "parfive_client.py"),
            str(urls),
            str(CONCURRENCY),
            str(pki / "client.pem"),
            str(pki / "ca.pem"),
        ]
        return command + ([endpoint.cookie] if endpoint.cookie else [])
    if tool == "curl loop":
        script = job / "loop.sh"
        with open(script, "w") as handle:
            handle.write("set -e\n")
            for item in items[:sample]:
                target = out / relative_path(item)
                cookie = f"-b '{endpoint.cookie}' " if endpoint.cookie else ""
                handle.write(
                    f"curl -s -S --fail --create-dirs --cert {pki / 'client.pem'} --cacert "
                    f"{pki / 'ca.pem'} {cookie}-o '{target}' '{url_for(endpoint, item)}'\n"
                )
        return ["bash", str(script)]
    raise ValueError(tool)


def checker(out: Path, items: list[Item], expected_bytes: int | None) -> Callable[[], str]:
    def check() -> str:
        files = [p for p in out.rglob("*") if p.is_file() and ".omar-bulk" not in p.parts]
        if len(files) != len(items):
            return f"{len(files)} of {len(items)} files"
        size = sum(p.stat().st_size for p in files)
        if expected_bytes is not None and size != expected_bytes:
            return f"{size} bytes, expected {expected_bytes}"
        return ""

    return check


def run_workload(load: Workload, endpoints: dict[str, Endpoint], expected: int | None) -> None:
    print(f"\n== {load.title}", flush=True)
    tools = list(load.tools)
    for round_ in range(load.rounds):
        order = tools[round_ % len(tools) :] + tools[: round_ % len(tools)]
        for tool in order:
            out = OUTPUT / load.name / tool.replace(" ", "-")
            shutil.rmtree(out, ignore_errors=True)
            job = WORK / "jobs" / load.name / tool.replace(" ", "-")
            items = load.items[: load.sample] if tool == "curl loop" else load.items
            want = None if tool == "curl loop" else expected
            command = command_for(tool, endpoints[tool], load.items, out, job, load.sample)
            run = measure(command, check=checker(out, items, want))
            if tool == "curl loop" and load.sample < len(load.items):
                scale = len(load.items) / load.sample
                run = Run(
                    run.wall * scale,
                    run.cpu * scale,
                    run.rss_mb,
                    run.ok,
                    run.note or f"{load.sample} requests, extrapolated x{scale:g}",
                )
            load.runs.setdefault(tool, []).append(run)
            status = "ok" if run.ok else f"FAILED: {run.note}"
            print(
                f"  round {round_ + 1} {tool:16s} {run.wall:7.2f} s  cpu {run.cpu:6.2f} s"
                f"  rss {run.rss_mb:6.1f} MB  {status}",
                flush=True,
            )
            shutil.rmtree(out, ignore_errors=True)


# --- reporting ------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(load: Workload, tool: str) -> float:
    """Median over rounds of omar-bulk's wall time divided by the tool's, same round."""
    mine, theirs = load.runs.get("omar-bulk", []), load.runs.get(tool, [])
    return median([a.wall / b.wall for a, b in zip(mine, theirs, strict=False) if b.wall])


def versions() -> dict[str, str]:
    def first_line(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            return (done.stdout or done.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "not found"

    import aiohttp
    import parfive

    return {
        "omar-bulk": __version__,
        "Python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "uvloop": _version_of("uvloop"),
        "curl": first_line(["curl", "--version"]).split(" (")[0].removeprefix("curl "),
        "aria2c": first_line(["aria2c", "--version"]).removeprefix("aria2 version "),
        "parfive": parfive.__version__,
        "nginx": first_line(["nginx", "-v"]).removeprefix("nginx version: nginx/"),
    }


def _version_of(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except ImportError:
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


def write_results(loads: list[Workload], extra: dict[str, str]) -> None:
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
    shown = [v for k, v in extra.items() if k in ("startup", "one file", "dry run")]
    lines += ["## Start-up and plan scale", "", *[f"- {v}" for v in shown], ""]
    lines += targets(loads, extra)
    (HERE / "RESULTS.md").write_text("\n".join(lines))
    saved = [
        {
            "name": load.name,
            "title": load.title,
            "tools": list(load.tools),
            "notes": load.notes,
            "runs": {tool: [vars(r) for r in runs] for tool, runs in load.runs.items()},
        }
        for load in loads
    ]
    (WORK / "results.json").write_text(json.dumps({"loads": saved, "extra": extra}, indent=1))
    chart(loads)


def report_only() -> None:
    """Rewrite RESULTS.md and the chart from the last run's saved figures."""
    data = json.loads((WORK / "results.json").read_text())
    loads = []
    for entry in data["loads"]:
        load = Workload(entry["name"], entry["title"], [], tuple(entry["tools"]), 0)
        load.notes = entry["notes"]
        load.runs = {tool: [Run(**r) for r in runs] for tool, runs in entry["runs"].items()}
        loads.append(load)
    write_results(loads, data["extra"])


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
    rows.append(
        ("4: 20,000-request run peak RSS <= 120 MB", f"{rss('w4'):.0f} MB", rss("w4") <= 120)
    )
    rows.append(("`omar-bulk --help` in <= 0.3 s", f"{float(start):.3f} s", float(start) <= 0.3))
    out = ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    out += [f"| {what} | {figure} | {'yes' if ok else 'no'} |" for what, figure, ok in rows]
    return [*out, ""]


def chart(loads: list[Workload]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [load for load in loads if load.runs]
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
    figure.savefig(HERE / "results.png", dpi=110)


# --- main -----------------------------------------------------------------------------------


def startup_time() -> float:
    script = shutil.which("omar-bulk") or str(Path(PY).parent / "omar-bulk")
    walls = []
    for _ in range(10):
        walls.append(measure([script, "--help"]).wall)
    return median(walls)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workloads", default="1,2,3,4")
    parser.add_argument("--big-mib", type=int, default=1024, help="size of workload 3's body")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite RESULTS.md from the last run"
    )
    args = parser.parse_args()
    if args.report_only:
        report_only()
        return 0
    chosen = {int(x) for x in args.workloads.split(",")}
    WORK.mkdir(exist_ok=True)
    subprocess.run(
        [PY, "-m", "compileall", "-q", str(ROOT / "omar_bulk")], check=True, env=CHILD_ENV
    )
    pki = WORK / "pki"
    if not (pki / "ca.pem").exists():
        TestPKI.create(pki)
    have_nginx = shutil.which("nginx") is not None
    if not have_nginx:
        print(
            "nginx not found: install it with `apt-get install -y nginx-light` for figures that"
            " are not server-bound. Falling back to the bundled stand-in.",
            file=sys.stderr,
        )
    loads: list[Workload] = []
    help_time = startup_time()
    extra = {
        "startup": f"`omar-bulk --help`: {help_time:.3f} s (median of 10)",
        "startup_seconds": f"{help_time:.3f}",
    }
    print(extra["startup"], flush=True)

    meters = [f"M{n:03d}" for n in range(100)]
    w1 = Workload(
        "w1",
        "1: many small files (2,000 monthly MDEF files, 16 at once)",
        items_for(meters),
        TOOLS,
        args.rounds,
        sample=100,
    )
    w2 = Workload(
        "w2",
        "2: latency-bound (stand-in with 0.2 s per request, 400 requests, 16 at once; ideal 5 s)",
        items_for(meters[:20]),
        TOOLS[:4],
        args.rounds,
    )
    w3 = Workload(
        "w3",
        f"3: one {args.big_mib} MiB body",
        [Item("meter", "BIG", date(2024, 1, 1), date(2024, 1, 31), "mdef", "PST")],
        ("omar-bulk", "curl loop", "aria2c", "parfive"),
        args.rounds,
        sample=1,
    )
    shared = [f"S{n:04d}" for n in range(1000)]
    w4 = Workload(
        "w4",
        "4: plan scale (a real run of 20,000 requests, 16 at once)",
        items_for(shared),
        TOOLS[:4],
        args.rounds,
    )

    if have_nginx:
        size1 = make_bodies(meters) if 1 in chosen else 0
        make_bodies(["shared"]) if 4 in chosen else None
        if 3 in chosen:
            make_big_body(args.big_mib << 20)
        with nginx(pki) as (strict, lenient):
            ends = {t: (lenient if t == "parfive" else strict) for t in TOOLS}
            one = items_for(meters[:1], MONTHS[:1])
            walls = []
            for _ in range(5):
                out = OUTPUT / "one"
                shutil.rmtree(out, ignore_errors=True)
                job = WORK / "jobs" / "one"
                walls.append(measure(command_for("omar-bulk", strict, one, out, job, 0)).wall)
            extra["one_file_seconds"] = f"{median(walls):.3f}"
            extra["one file"] = (
                "a one-file `omar-bulk fetch` (start-up, certificate, journal, login, one"
                f" request, report): {median(walls):.3f} s (median of 5)"
            )
            print(extra["one file"], flush=True)
            if 1 in chosen:
                w1.notes.append(
                    f"Bodies: {size1 / 2000 / 1000:.1f} kB on average. The curl loop"
                    " runs 100 requests one after another and is scaled to 2,000."
                )
                run_workload(w1, ends, size1)
                loads.append(w1)
            if 3 in chosen:
                w3.tools = ("omar-bulk", "curl loop", "aria2c", "parfive")
                w3.notes.append(
                    "`curl loop` here is a single `curl -o`; aria2c and parfive use"
                    " one connection (no ranged splitting), like the others."
                )
                run_workload(w3, ends, args.big_mib << 20)
                loads.append(w3)
                mine = median([r.wall for r in w3.runs.get("omar-bulk", [])])
                curls = median([r.wall for r in w3.runs.get("curl loop", [])])
                w3.notes.append(
                    f"omar-bulk {args.big_mib / mine:.0f} MiB/s, curl {args.big_mib / curls:.0f}"
                    f" MiB/s: omar-bulk runs at {100 * curls / mine:.0f}% of curl's speed."
                )
            if 4 in chosen:
                w4.notes.append("All 1,000 meters share the same 20 bodies on the server side.")
                run_workload(w4, ends, None)
                loads.append(w4)
    if 2 in chosen:
        with standin(0.2) as strict, standin(0.2, slashes=True) as lenient:
            ends = {t: (lenient if t == "parfive" else strict) for t in TOOLS}
            w2.notes.append(
                "Server: the bundled stand-in (nginx cannot add latency); parfive"
                " talks to a second stand-in that also accepts '/' in dates."
            )
            run_workload(w2, ends, None)
            loads.append(w2)
    if 4 in chosen:
        manifest = WORK / "plan-252k.toml"
        ids = [f"MTR{n:04d}" for n in range(1000)]
        manifest.write_text(
            f"[[pull]]\nmeters = {json.dumps(ids)}\nstart = 2000-01-01\nend = 2020-12-31\n"
        )
        dry = []
        for _ in range(args.rounds):
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
        extra["dry_seconds"] = f"{median([r.wall for r in dry]):.3f}"
        extra["dry_rss"] = f"{median([r.rss_mb for r in dry]):.1f}"
        extra["dry run"] = (
            f"`omar-bulk fetch` of 1,000 meters x 21 years monthly (252,000 requests) with"
            f" `--dry-run`: {median([r.wall for r in dry]):.2f} s, peak RSS "
            f"{median([r.rss_mb for r in dry]):.0f} MB (median of {len(dry)}); peers have no plan"
            " to expand: they are handed a URL list."
        )
    write_results(loads, extra)
    print(f"\nwrote {HERE / 'RESULTS.md'} and {HERE / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
