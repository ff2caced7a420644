"""Workload 5: what the live display costs, in a terminal of 80 x 24.

960 files from the stand-in answering each request after 0.5 s, at concurrency 16 and 64, with
the display on and with ``--no-progress``. Both run in a pseudo-terminal of the same size, so the
display is the only difference; the terminal's output is read as fast as it comes, as a terminal
emulator would. One more run, inside tmux, captures the screen mid-run to check that it fits:
no row folded (``capture-pane -J`` joins folded rows, so a joined row wider than the terminal was
folded; so is a row indented under a column, as a table folds a cell that does not fit) and
nothing cut (no "..." where rows were dropped).
"""

from __future__ import annotations

import fcntl
import os
import select
import shlex
import shutil
import struct
import subprocess
import termios
import time
from pathlib import Path

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
    median,
    standin,
)

LATENCY = 0.5
METERS = [f"D{n:03d}" for n in range(48)]  # x 20 months: 960 files
LEVELS = (16, 64)
COLUMNS, ROWS = 80, 24
TERMINAL_ENV = {k: v for k, v in CHILD_ENV.items() if k not in ("COLUMNS", "LINES")} | {
    "TERM": "xterm-256color"
}


def tool(display: bool, concurrency: int) -> str:
    return f"{'display' if display else '--no-progress'}, {concurrency} at once"


def command(endpoint: Endpoint, out: Path, concurrency: int, *, display: bool) -> list[str]:
    job = WORK / "jobs" / "display"
    words = command_for("omar-bulk", endpoint, items_for(METERS), out, job, 0)
    words[words.index("--concurrency") + 1] = str(concurrency)
    words[words.index("--no-progress")] = "--progress" if display else "--no-progress"
    return words


def in_terminal(words: list[str], *, columns: int = COLUMNS, rows: int = ROWS) -> Run:
    """Run a command with a pseudo-terminal of ``columns`` x ``rows`` as stdin, stdout, stderr."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    start = time.monotonic()
    process = subprocess.Popen(
        words, stdin=slave, stdout=slave, stderr=slave, env=TERMINAL_ENV, start_new_session=True
    )
    os.close(slave)
    shown = 0
    tail = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: every holder of the terminal's other end has closed it
                break
            if not data:
                break
            shown += len(data)
            tail = (tail + data)[-400:]
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        os.close(master)
    wall = time.monotonic() - start
    code = process.returncode
    note = "" if code == 0 else f"exit {code}: {tail.decode(errors='replace')[-200:]}"
    run = Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, not note, note)
    run.note = run.note or f"{shown / 1000:.0f} kB to the terminal"
    return run


def screen(endpoint: Endpoint, concurrency: int) -> list[str]:
    """Captures of an 80 x 24 tmux pane mid-run, and what they show about fit."""
    if shutil.which("tmux") is None:
        return ["tmux not found: the screen was not captured."]
    out = OUTPUT / "display-screen"
    shutil.rmtree(out, ignore_errors=True)
    server = ["tmux", "-L", f"omar-bulk-bench-{os.getpid()}", "-f", "/dev/null"]
    words = command(endpoint, out, concurrency, display=True)
    script = f"{shlex.join(words)}; {shlex.join([*server, 'wait-for', '-S', 'finished'])}"
    size = ["-x", str(COLUMNS), "-y", str(ROWS)]
    subprocess.run([*server, "new-session", "-d", *size, "-s", "bench", script], check=True)
    captures: list[tuple[list[str], list[str]]] = []
    try:
        for _ in range(3):
            time.sleep(2)
            pane = [*server, "capture-pane", "-p", "-t", "bench"]
            plain, joined = (
                subprocess.run(argv, capture_output=True, text=True, check=True).stdout
                for argv in (pane, [*pane, "-J"])
            )
            captures.append((plain.splitlines(), joined.splitlines()))
        subprocess.run([*server, "wait-for", "finished"], timeout=300, check=False)
    finally:
        subprocess.run([*server, "kill-server"], check=False, capture_output=True)
        shutil.rmtree(out, ignore_errors=True)
    folded = sum(_folded(joined) for _, joined in captures)
    cut = any(line.strip() == "..." for plain, _ in captures for line in plain)
    tall = max(_rows_used(plain) for plain, _ in captures)
    middle = captures[1][0]
    return [
        f"Screen at {COLUMNS}x{ROWS}, concurrency {concurrency}, captured with tmux"
        f" `capture-pane -p` 2, 4 and 6 s into the run: {folded} folded rows in the three"
        f" captures, {'cut short' if cut else 'nothing cut'}, at most {tall} rows used."
        " The capture at 4 s:",
        "",
        "```",
        *[line.rstrip() for line in middle],
        "```",
    ]


def _folded(rows: list[str]) -> int:
    """Rows folded by the terminal (wider than it, once tmux joins them) or by the display.

    A display that lays its rows out as a table folds a cell that does not fit onto a row of its
    own, indented under its column: a row indented deeper than a file row's two spaces.
    """
    return sum(1 for row in rows if len(row.rstrip()) > COLUMNS or row.startswith(" " * 6))


def _rows_used(rows: list[str]) -> int:
    return max((n + 1 for n, row in enumerate(rows) if row.strip()), default=0)


def run(rounds: int) -> Workload:
    load = Workload(
        "w5",
        f"5: the live display (stand-in with {LATENCY} s per request, 960 files,"
        f" a {COLUMNS}x{ROWS} terminal)",
        items_for(METERS),
        tuple(tool(d, c) for c in LEVELS for d in (False, True)),
        rounds,
        table="display",
    )
    print(f"\n== {load.title}", flush=True)
    with standin(LATENCY) as endpoint:
        runs = [(d, c) for c in LEVELS for d in (False, True)]
        for round_ in range(rounds):
            order = runs[round_ % len(runs) :] + runs[: round_ % len(runs)]
            for display, concurrency in order:
                out = OUTPUT / load.name
                shutil.rmtree(out, ignore_errors=True)
                result = in_terminal(command(endpoint, out, concurrency, display=display))
                trouble = checker(out, load.items, None)()
                if trouble:
                    result.ok, result.note = False, trouble
                load.runs.setdefault(tool(display, concurrency), []).append(result)
                print(
                    f"  round {round_ + 1} {tool(display, concurrency):26s} {result.wall:7.2f} s"
                    f"  cpu {result.cpu:6.2f} s  {result.note}",
                    flush=True,
                )
                shutil.rmtree(out, ignore_errors=True)
        load.notes += screen(endpoint, max(LEVELS))
    for line in load.notes:
        print(f"  {line}")
    return load


def ratios(load: Workload, concurrency: int, figure: str) -> float:
    """Median over rounds of the display's figure divided by --no-progress's, same round."""
    on = load.runs.get(tool(True, concurrency), [])
    off = load.runs.get(tool(False, concurrency), [])
    pairs = zip(on, off, strict=False)
    return median([getattr(a, figure) / getattr(b, figure) for a, b in pairs if getattr(b, figure)])


def table(load: Workload) -> list[str]:
    lines = [
        "| at once | wall, no display (s) | wall, display (s) | ratio | CPU, no display (s)"
        " | CPU, display (s) | ratio | notes |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for concurrency in LEVELS:
        on = load.runs.get(tool(True, concurrency), [])
        off = load.runs.get(tool(False, concurrency), [])
        if not on or not off:
            continue
        notes = [r.note for r in on if not r.ok] + [r.note for r in off if not r.ok]
        notes = notes or [on[0].note]
        lines.append(
            f"| {concurrency} | {median([r.wall for r in off]):.2f}"
            f" | {median([r.wall for r in on]):.2f} | {ratios(load, concurrency, 'wall'):.2f}"
            f" | {median([r.cpu for r in off]):.2f} | {median([r.cpu for r in on]):.2f}"
            f" | {ratios(load, concurrency, 'cpu'):.2f} | {notes[0].replace('|', '/')} |"
        )
    return lines
