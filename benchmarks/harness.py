"""What every workload shares: paths, the measuring, the servers, the items and each tool's command.

The workloads (``workloads/``) build on this; ``report.py`` turns their runs into RESULTS.md.
"""

from __future__ import annotations

import json
import os
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

from omar_bulk.plan import Chunking, Item  # noqa: E402
from omar_bulk.protocol import relative_path, request_url  # noqa: E402
from omar_bulk.standin.bodies import mdef_body  # noqa: E402

WORK = HERE / "work"
#: Every tool writes its files here: tmpfs where there is one, so that the disk (on some
#: virtual machines a file creation costs from 30 to 400 microseconds, depending on what was
#: just deleted) does not drown the differences between the tools.
OUTPUT = Path("/dev/shm/omar-bulk-bench") if Path("/dev/shm").is_dir() else WORK / "out"
#: Where a workload that measures the disk itself writes (``--disk-dir``): this checkout's disk.
DISK_OUTPUT = WORK / "out"
PY = sys.executable
#: Children run as an installed tool does: with Python's bytecode cache.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
CONCURRENCY = 16
MONTHS = list(Chunking.parse("month").split(date(2023, 1, 1), date(2024, 8, 31)))  # 20 months
TOOLS = ("omar-bulk", "curl --parallel", "aria2c", "parfive", "curl loop")
#: Workload 3's floor: a bare aiohttp client (aiohttp_floor.py) in each of its modes.
FLOORS = {"aiohttp, read only": "read", "aiohttp, hash + write": "hash+write"}


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
    #: Extra environment of the tool's process (workload 8: HTTPS_PROXY and NETRC).
    env: dict[str, str] = field(default_factory=dict)


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
    table: str = "peers"  # how report.py shows it: "peers" (tools side by side) or "display"
    output: Path | None = None  # where the tools write; OUTPUT (tmpfs) unless set


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
    if tool.startswith("omar-bulk"):  # "omar-bulk", or workload 8's "omar-bulk, through ..."
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
    if tool in FLOORS:
        target = out / relative_path(items[0])
        return [
            PY,
            str(HERE / "aiohttp_floor.py"),
            FLOORS[tool],
            url_for(endpoint, items[0]),
            str(pki / "client.pem"),
            str(pki / "ca.pem"),
            str(target),
        ]
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
            out = (load.output or OUTPUT) / load.name / tool.replace(" ", "-")
            shutil.rmtree(out, ignore_errors=True)
            job = WORK / "jobs" / load.name / tool.replace(" ", "-")
            items = load.items[: load.sample] if tool == "curl loop" else load.items
            want = None if tool == "curl loop" else expected
            command = command_for(tool, endpoints[tool], load.items, out, job, load.sample)
            # The read-only floor keeps nothing to check; its exit status says it had a 200.
            check = None if FLOORS.get(tool) == "read" else checker(out, items, want)
            env = {**CHILD_ENV, **endpoints[tool].env} if endpoints[tool].env else None
            run = measure(command, check=check, env=env)
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


# --- figures -------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(load: Workload, tool: str) -> float:
    """Median over rounds of omar-bulk's wall time divided by the tool's, same round."""
    mine, theirs = load.runs.get("omar-bulk", []), load.runs.get(tool, [])
    return median([a.wall / b.wall for a, b in zip(mine, theirs, strict=False) if b.wall])
