"""``omar-bulk demo`` and ``omar-bulk serve``: the stand-in server, for people to try."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import date
from pathlib import Path

from .errors import UsageError
from .plan import Plan, make_pull
from .standin.certs import DEMO_PASSWORD, TestPKI
from .standin.server import FAULT_NAMES, Faults, StandIn, serve_in_thread, start

DEMO_METERS = ("MTR_SOLAR_01", "MTR_WIND_07", "MTR_LOAD_112")
DEMO_GROUP = "GRP_NORTH"


def run_demo(*, out: Path | None, progress: bool | None) -> int:
    """Backfill three meters and a group over two years, and one month of a retired fourth
    meter, from a faulty stand-in, then rerun."""
    from .console import run_with_display
    from .progress import stderr_console
    from .settings import Settings

    console = stderr_console()
    work = Path(tempfile.mkdtemp(prefix="omar-bulk-demo-"))
    out = out or work / "omar-data"
    pki = TestPKI.create(work / "certs")
    faults = Faults(
        latency=0.08,
        retry_after=0.5,
        rate=0.06,
        kinds=("503", "500", "cut", "login"),
        seed=7,
        script={DEMO_METERS[1]: ["503", "cut"], "MTR_RETIRED_99": ["404*"]},
    )

    def pulls() -> list:  # type: ignore[type-arg]
        first, last = date(2023, 1, 1), date(2024, 12, 31)
        return [
            make_pull(
                kind="meter",
                ids=DEMO_METERS,
                start=first,
                end=last,
                format="mdef",
                time_type="PST",
                chunk="month",
                where="demo",
            ),
            make_pull(
                kind="group",
                ids=[DEMO_GROUP],
                start=first,
                end=last,
                format="csv",
                time_type="PST",
                chunk="month",
                where="demo",
            ),
            make_pull(
                kind="meter",
                ids=["MTR_RETIRED_99"],
                start=date(2024, 12, 1),
                end=last,
                format="mdef",
                time_type="PST",
                chunk="month",
                where="demo",
            ),
        ]

    with serve_in_thread(pki, faults) as server:
        console.print(
            f"[bold]stand-in OMAR-Online[/] at {server.base_url} (certificates in {pki.folder})"
        )
        console.print(
            f"backfilling {len(DEMO_METERS)} meters (MDEF) and group {DEMO_GROUP} (CSV), "
            "2023-01 to 2024-12, monthly, and one month of a retired meter that the server "
            "no longer knows (404), into " + str(out)
        )
        console.print("the server injects 503s, 500s, cut bodies and expired sessions on purpose\n")
        settings = Settings(
            plan=Plan(pulls, name="demo"),
            base_url=server.base_url,
            out_dir=out,
            cert=pki.client_p12,
            ca_bundle=pki.ca,
            password=lambda _what: DEMO_PASSWORD,
            concurrency=4,
            retry_wait=0.3,
            retries=5,
        )
        first = run_with_display(settings, progress)
        console.print("\n[bold]the same command again[/]: only what is missing is requested")
        before = len(server.state.downloads())
        again = run_with_display(settings, progress)
        asked = len(server.state.downloads()) - before
        console.print(f"the rerun sent {asked} download request(s)\n")
    # The retired meter answers 404 on purpose, so each run ends with exit 1 (some items
    # failed) and the rerun asks for that one item again: the demo going as planned. Anything
    # else (a run aborted on TLS, say) is a failure of the demo, said as such, with no archive
    # shown as if it were the result.
    if (first, again, asked) != (1, 1, 1):
        console.print(
            "[bold red]the demo did not go as planned:[/] the runs ended with exit codes "
            f"{first} and {again} and the rerun sent {asked} request(s), where 1, 1 and 1 "
            "were expected; the messages above say what went wrong"
        )
        return first or again or 1
    from .coverage import read_coverage
    from .progress import render_coverage, stderr_console

    console.print(f"[bold]what is on disk now[/] (omar-bulk status {out}):")
    wide = console if console.is_terminal else stderr_console(width=200)
    render_coverage(read_coverage(out), wide)
    console.print(f"\nfiles are in {out}")
    console.print("the retired meter's 404 is deliberate: the demo went as planned")
    return 0


def serve_forever(
    *,
    host: str,
    port: int,
    certs: Path,
    latency: float,
    fault_rate: float,
    faults: str,
    retry_after: float,
    session_requests: int,
    seed: int,
    accept_slashes: bool = False,
) -> None:
    """Run the stand-in until Ctrl-C, printing how to point omar-bulk at it."""
    kinds = tuple(k.strip() for k in faults.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_NAMES]
    if unknown:
        raise UsageError(f"unknown fault {', '.join(unknown)}: use {', '.join(FAULT_NAMES)}")
    if not 0 <= fault_rate <= 1:
        raise UsageError("--fault-rate must be between 0 and 1")
    if latency < 0 or retry_after < 0:
        raise UsageError("--latency and --retry-after must not be negative")
    pki = TestPKI.create(certs)
    state = StandIn(
        pki,
        Faults(
            latency=latency,
            retry_after=retry_after,
            rate=fault_rate,
            kinds=kinds,
            seed=seed,
            session_requests=session_requests,
            accept_slashes=accept_slashes,
        ),
    )

    async def main() -> None:
        try:
            running = await start(state, host=host, port=port)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        print(f"stand-in OMAR-Online listening at {running.base_url}", flush=True)
        print(f"certificates in {pki.folder} (client password: {DEMO_PASSWORD})", flush=True)
        print(
            f"try: OMAR_CERT_PASSWORD={DEMO_PASSWORD} omar-bulk fetch --base-url "
            f"{running.base_url} --cert {pki.client_p12} --ca-bundle {pki.ca} "
            "--meter M1 --start 2024-01-01 --end 2024-03-31",
            flush=True,
        )
        try:
            await asyncio.Event().wait()
        finally:
            await running.runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("stand-in stopped", flush=True)


__all__ = [
    "DEMO_GROUP",
    "DEMO_METERS",
    "run_demo",
    "serve_forever",
]
