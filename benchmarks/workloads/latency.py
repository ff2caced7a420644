"""Workload 2: latency-bound, the stand-in answering each request after 0.2 s.

400 requests at concurrency 16: ideally 400 / 16 x 0.2 s = 5 s, plus start-up. nginx cannot
add latency, so this one uses the stand-in; the peers get the session cookie from one login.
"""

from __future__ import annotations

from harness import TOOLS, Workload, items_for, run_workload, standin

from workloads.small_files import METERS


def run(rounds: int) -> Workload:
    load = Workload(
        "w2",
        "2: latency-bound (stand-in with 0.2 s per request, 400 requests, 16 at once; ideal 5 s)",
        items_for(METERS[:20]),
        TOOLS[:4],
        rounds,
    )
    with standin(0.2) as strict, standin(0.2, slashes=True) as lenient:
        ends = {t: (lenient if t == "parfive" else strict) for t in TOOLS}
        load.notes.append(
            "Server: the bundled stand-in (nginx cannot add latency); parfive"
            " talks to a second stand-in that also accepts '/' in dates."
        )
        run_workload(load, ends, None)
    return load
