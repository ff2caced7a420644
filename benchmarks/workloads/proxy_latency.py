"""Workload 8: workload 2's latency-bound run, direct and through an authenticating proxy.

The same 400 requests to the stand-in answering after 0.2 s, 16 at once, run by omar-bulk
directly and through proxy.py (the forward proxy the tests use, from the ``test`` extra) asking
for Basic credentials, which omar-bulk reads from a netrc file named by ``NETRC``. Every
connection is then a CONNECT tunnel through one proxy worker process on the same 2 cores.
"""

from __future__ import annotations

from harness import WORK, Endpoint, Workload, items_for, run_workload, standin

from tests.forward_proxy import proxy_py
from workloads.small_files import METERS

DIRECT = "omar-bulk"
PROXIED = "omar-bulk, through proxy.py (Basic auth)"
USER, PASSWORD = "bench", "bench-only-password"


def run(rounds: int) -> Workload:
    load = Workload(
        "w8",
        "8: latency-bound through an authenticating proxy (workload 2, direct and through"
        " proxy.py; ideal 5 s)",
        items_for(METERS[:20]),
        (DIRECT, PROXIED),
        rounds,
    )
    netrc = WORK / "proxy-netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    with standin(0.2) as server, proxy_py(WORK / "proxy", user=USER, password=PASSWORD) as proxy:
        through = Endpoint(
            server.base,
            server.pki,
            env={"HTTPS_PROXY": proxy.url(user=USER), "NETRC": str(netrc)},
        )
        load.notes.append(
            "Server: the bundled stand-in. The proxy: proxy.py with --basic-auth, one worker"
            " process; its log counted "
            "{tunnels} CONNECTs over all rounds. The last column is the direct run's time"
            " divided by the proxied run's, per round."
        )
        run_workload(load, {DIRECT: server, PROXIED: through}, None)
        load.notes[-1] = load.notes[-1].format(tunnels=len(proxy.connects()))
    return load
