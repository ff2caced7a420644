"""omar-bulk side by side with curl, aria2c and parfive on the same work (see README.md here).

    python benchmarks/run.py [--rounds 3] [--workloads 1,2,3,4,5,6,7,8] [--results FILE]

Everything runs on loopback: nginx with mutual TLS serving pre-generated bodies (so the server
is never the bottleneck), and the bundled stand-in server where a workload needs latency.
Workload 5 measures omar-bulk alone: its live display on and off, in a pseudo-terminal;
workload 7 measures ``status`` on synthetic journals of 20,000 and 60,000 files; workload 8
runs workload 2's requests direct and through an authenticating proxy (proxy.py).
Results go to benchmarks/RESULTS.md and benchmarks/results.png.

Each workload lives in its own module under ``workloads/``; ``harness.py`` holds what they
share and ``report.py`` writes the results.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from harness import CHILD_ENV, DISK_OUTPUT, FLOORS, HERE, PY, ROOT, TOOLS, WORK, nginx, standin
from report import report_only, write_results
from workloads import (
    big_body,
    display,
    latency,
    plan_scale,
    proxy_latency,
    slow_disk,
    small_files,
    startup,
    status_scale,
)

from omar_bulk.standin.certs import TestPKI


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workloads", default="1,2,3,4,5,6,7,8")
    parser.add_argument("--big-mib", type=int, default=1024, help="size of workload 3's body")
    parser.add_argument(
        "--disk-dir",
        type=Path,
        default=DISK_OUTPUT,
        help="where workload 1 runs a second time, on a real disk (default: benchmarks/work/out)",
    )
    parser.add_argument("--no-disk", action="store_true", help="run workload 1 on tmpfs only")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite RESULTS.md from the last run"
    )
    parser.add_argument(
        "--results", type=Path, default=HERE / "RESULTS.md", help="where to write the tables"
    )
    args = parser.parse_args()
    if args.report_only:
        report_only(args.results)
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
    loads = []
    extra = startup.help_time()
    if have_nginx:
        size1 = small_files.prepare() if 1 in chosen else 0
        if 4 in chosen:
            plan_scale.prepare()
        if 3 in chosen:
            big_body.prepare(args.big_mib)
        size6 = slow_disk.prepare() if 6 in chosen else 0
        with nginx(pki) as (strict, lenient):
            ends = {t: (lenient if t == "parfive" else strict) for t in (*TOOLS, *FLOORS)}
            extra |= startup.one_file(strict)
            if 1 in chosen:
                loads.append(small_files.run(args.rounds, ends, size1))
                if not args.no_disk:
                    loads.append(small_files.run(args.rounds, ends, size1, args.disk_dir))
            if 3 in chosen:
                loads.append(big_body.run(args.rounds, ends, args.big_mib))
            if 4 in chosen:
                loads.append(plan_scale.run(args.rounds, ends))
            if 6 in chosen and slow_disk.available():
                loads.append(slow_disk.run(args.rounds, strict, size6))
    elif 6 in chosen and slow_disk.available():
        with standin(0) as endpoint:
            loads.append(slow_disk.run(args.rounds, endpoint, None))
    if 2 in chosen:
        loads.append(latency.run(args.rounds))
    if 8 in chosen:
        loads.append(proxy_latency.run(args.rounds))
    if 4 in chosen:
        extra |= plan_scale.dry_run(args.rounds)
        extra |= plan_scale.csv_dry_run(args.rounds)
    if 5 in chosen:
        loads.append(display.run(args.rounds))
    if 6 in chosen and not slow_disk.available():
        print("strace not found: workload 6 needs it (apt-get install -y strace)", file=sys.stderr)
    if 7 in chosen:
        extra |= status_scale.run(args.rounds)
    write_results(loads, extra, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
