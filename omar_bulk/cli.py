"""The ``omar-bulk`` command: parse options, build Settings, call the library, map exit codes.

Heavy modules (aiohttp, cryptography, rich's progress) are imported inside the commands so that
``omar-bulk --help`` starts quickly.

Exit codes: 0 all items downloaded, skipped or empty; 1 some items failed; 2 bad input or
configuration; 3 aborted by an authentication or TLS failure; 4 aborted by a local write error;
130 interrupted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from . import __version__
from .errors import OmarBulkError

if TYPE_CHECKING:
    from .settings import Settings
    from .tls import PasswordSource

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Bulk, resumable, verified downloads of CAISO OMAR-Online meter data.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"omar-bulk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Bulk, resumable, verified downloads of CAISO OMAR-Online meter data."""


def _fail(exc: OmarBulkError) -> NoReturn:
    typer.echo(f"omar-bulk: error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


def _user_path(raw: str) -> Path:
    """A file named on the command line. ``-`` alone is standard input or output; any other
    spelling of it (``./-``) is the file of that name, so it is made absolute: ``Path``
    would turn ``./-`` back into ``-``."""
    path = Path(raw)
    if raw != "-" and str(path) == "-":
        return path.absolute()
    return path


def _one_reader_of_stdin(**files: Path | None) -> None:
    """``fetch -`` reads the manifest from standard input: nothing else can be read there."""
    for option, path in files.items():
        if path is not None and str(path) == "-":
            from .errors import UsageError

            name = option.replace("_", "-")
            raise UsageError(
                f"fetch - reads the manifest from standard input, so --{name} cannot be - too:"
                f" give --{name} a file (or a pipe such as <(...))"
            )


def _password(what: str) -> str | None:
    """The certificate password: OMAR_CERT_PASSWORD, else a hidden prompt on a terminal.
    (``_password_source`` puts OMAR_CERT_PASSWORD_FILE before both.)"""
    secret = os.environ.get("OMAR_CERT_PASSWORD")
    if secret is not None:
        return secret
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"{what}: ")
    return None


def _password_source(*, warn: bool) -> tuple[PasswordSource, Path | None]:
    """Where the password comes from, checked now (both variables set, a missing file: exit 2)
    but read only when a file needs it; and the password file, if that is where. With
    ``warn``, a password file others can read is warned about on stderr."""
    from .tls import password_file, password_file_warning, read_password_file

    path = password_file(os.environ)
    if path is None:
        return _password, None
    if warn:
        message = password_file_warning(path)
        if message:
            typer.echo(f"omar-bulk: warning: {message}", err=True)
    return (lambda _what: read_password_file(path)), path


# The connection options, declared once for every command that talks to the server.
EnvOption = Annotated[
    str, typer.Option(metavar="prod|test", help="prod or test: which OMAR-Online to use.")
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option(
        envvar="OMAR_BASE_URL", metavar="URL", help="Server URL, overriding --env (https only)."
    ),
]
CertOption = Annotated[
    Path | None,
    typer.Option(envvar="OMAR_CERT", metavar="FILE", help="Client certificate: .p12/.pfx or PEM."),
]
KeyOption = Annotated[
    Path | None,
    typer.Option(envvar="OMAR_KEY", metavar="FILE", help="PEM private key, if separate."),
]
CaBundleOption = Annotated[
    Path | None,
    typer.Option(
        envvar="OMAR_CA_BUNDLE", metavar="FILE", help="Extra CA certificates to trust (PEM)."
    ),
]

ProxyOption = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        help="Forward proxy, http://HOST:PORT or https://HOST:PORT, overriding OMAR_PROXY and"
        " HTTPS_PROXY; '' goes direct. No password here (ps shows it): use the environment"
        " or ~/.netrc.",
    ),
]
NoProxyOption = Annotated[
    bool,
    typer.Option("--no-proxy", help="Connect directly, whatever the environment says."),
]


def _proxy(base_url: str, option: str | None, direct: bool) -> Any:
    """The proxy for ``base_url`` from the options and the environment (``proxy.proxy_for``)."""
    from .errors import UsageError
    from .proxy import netrc_warning, proxy_for

    if direct and option:
        raise UsageError("give --proxy or --no-proxy, not both")
    chosen = proxy_for(base_url, os.environ, option=option, direct=direct)
    message = netrc_warning(chosen, os.environ)
    if message:
        typer.echo(f"omar-bulk: warning: {message}", err=True)
    return chosen


def _state_dir(raw: str) -> Path:
    """``--state-dir``: an empty value (``--state-dir "$STATE"`` with STATE unset) is a
    mistake, not the working folder. An empty OMAR_STATE_DIR counts as unset, as an empty
    XDG_STATE_HOME does."""
    if not raw:
        raise typer.BadParameter("is empty: give a folder, or leave the option out")
    return Path(raw)


StateDirOption = Annotated[
    Path | None,
    typer.Option(
        parser=_state_dir,
        envvar="OMAR_STATE_DIR",
        metavar="DIR",
        help="Keep the journal, lock and report here, not in OUT/.omar-bulk (for an OUT"
        " on a network share; give the same DIR to every fetch and status of OUT).",
    ),
]


@app.command()
def fetch(
    manifest: Annotated[
        str | None,
        typer.Argument(
            metavar="MANIFEST",
            help="TOML or CSV manifest of meters/groups and dates; - reads standard input.",
        ),
    ] = None,
    meter: Annotated[
        list[str] | None,
        typer.Option("--meter", metavar="ID", help="Meter (resource) id; repeatable."),
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", metavar="ID", help="Group id; repeatable.")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            metavar="DATE",
            help="First trade date (with --meter/--group): YYYY-MM-DD, YYYY-MM (its first day),"
            " today, yesterday or -<N>d (N days ago); a relative start is rounded down to its"
            " chunk's first day.",
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(
            metavar="DATE",
            help="Last trade date, inclusive (with --meter/--group): the same forms as --start"
            " (YYYY-MM: its last day).",
        ),
    ] = None,
    file_format: Annotated[
        str,
        typer.Option(
            "--format", metavar="mdef|csv", help="mdef or csv, for pulls that do not say."
        ),
    ] = "mdef",
    time_type: Annotated[
        str, typer.Option(metavar="PST|DST", help="PST or DST, for pulls that do not say.")
    ] = "PST",
    chunk: Annotated[
        str, typer.Option(metavar="CHUNK", help="Split ranges by month, week, day, <N>d, or none.")
    ] = "month",
    out: Annotated[Path, typer.Option(metavar="DIR", help="Output folder.")] = Path("omar-data"),
    env: EnvOption = "prod",
    base_url: BaseUrlOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    ca_bundle: CaBundleOption = None,
    concurrency: Annotated[int, typer.Option(metavar="N", help="Downloads at once.")] = 4,
    rate: Annotated[
        float | None, typer.Option(metavar="R", help="At most this many request starts per second.")
    ] = None,
    retries: Annotated[
        int, typer.Option(metavar="N", help="Further attempts after the first (0 to 100).")
    ] = 5,
    timeout: Annotated[
        float,
        typer.Option(metavar="S", help="Longest silence while connecting or reading, seconds."),
    ] = 120.0,
    retry_wait: Annotated[
        float,
        typer.Option(
            metavar="S", help="Base of the exponential backoff between attempts, seconds."
        ),
    ] = 1.0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Fetch even what the journal says is done.")
    ] = False,
    revisit_days: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Fetch again items whose range ends within the last N days (revised data).",
        ),
    ] = None,
    today: Annotated[
        str | None,
        typer.Option(
            metavar="DATE",
            help="Resolve relative dates as if today were YYYY-MM-DD (default: "
            "today in California).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print every URL a run would request; send nothing.")
    ] = False,
    report: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="Write the JSON report here (default: last-run.json in the state folder); - for"
            " standard output.",
        ),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Progress display (default: on a terminal)."),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="At the end, write the run's metrics here for Prometheus (a .prom file in"
            " node_exporter's textfile folder).",
        ),
    ] = None,
    state_dir: StateDirOption = None,
    proxy: ProxyOption = None,
    no_proxy: NoProxyOption = False,
) -> None:
    """Download every planned file that is not already on disk and verified."""
    try:
        from .manifest import adhoc_plan, load_manifest
        from .settings import Settings

        defaults = _defaults(file_format, time_type, chunk, today)
        if manifest is not None:
            if meter or group or start or end:
                from .errors import UsageError

                raise UsageError("give either a manifest or --meter/--group, not both")
            if manifest == "-":
                _one_reader_of_stdin(cert=cert, key=key, ca_bundle=ca_bundle)
            plan = load_manifest(_user_path(manifest), defaults)
        else:
            plan = adhoc_plan(
                meters=meter or [], groups=group or [], start=start, end=end, defaults=defaults
            )
        server, chosen_proxy = _connection(env, base_url, proxy, no_proxy)
        settings = Settings(
            plan=plan,
            base_url=server,
            out_dir=out,
            cert=cert,
            key=key,
            ca_bundle=ca_bundle,
            password=_password_source(warn=not dry_run)[0],
            concurrency=concurrency,
            rate=rate,
            retries=retries,
            timeout=timeout,
            retry_wait=retry_wait,
            overwrite=overwrite,
            revisit_days=revisit_days,
            today=defaults.today,
            report=_user_path(report) if report is not None else None,
            state_dir=state_dir,
            proxy=chosen_proxy,
        )
        if dry_run:
            _dry_run(settings)
            return
        from .console import run_with_display

        code = run_with_display(
            settings, progress, metrics=_user_path(metrics) if metrics is not None else None
        )
    except OmarBulkError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        typer.echo("omar-bulk: interrupted before anything was fetched", err=True)
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def _connection(env: str, base_url: str | None, proxy: str | None, direct: bool) -> tuple[str, Any]:
    """The connection options of ``fetch`` and ``check``: the server's URL (``--base-url``,
    else ``--env``'s) and the proxy that reaches it."""
    from .errors import UsageError
    from .protocol import ENVIRONMENTS

    if env not in ENVIRONMENTS:
        raise UsageError(f"--env {env!r}: use prod or test")
    server = base_url or ENVIRONMENTS[env]
    return server, _proxy(server, proxy, direct)


def _defaults(file_format: str, time_type: str, chunk: str, today: str | None) -> Any:
    """The planning options of ``fetch`` and ``status``: what a manifest leaves out."""
    from .manifest import Defaults

    return Defaults(format=file_format, time_type=time_type, chunk=chunk, today=_today(today))


def _today(value: str | None) -> Any:
    """``--today``, checked; None when not given."""
    if value is None:
        return None
    from datetime import date

    from .errors import UsageError

    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--today {value!r}: use YYYY-MM-DD") from None


def _dry_run(settings: Settings) -> None:
    from .run import planned_urls

    out = sys.stdout
    try:
        for url in planned_urls(settings, notice=lambda m: typer.echo(f"warning: {m}", err=True)):
            out.write(url + "\n")  # one write per URL: unbuffered stdout makes each a syscall
        out.flush()
    except BrokenPipeError:  # e.g. piped into head
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


@app.command()
def check(
    env: EnvOption = "prod",
    base_url: BaseUrlOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    ca_bundle: CaBundleOption = None,
    timeout: Annotated[
        float, typer.Option(metavar="S", help="Longest wait for each network step, seconds.")
    ] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
    proxy: ProxyOption = None,
    no_proxy: NoProxyOption = False,
) -> None:
    """Check the certificate and the server before a backfill; download nothing.

    Exit 0 ready (warnings printed), 1 unreachable, 2 bad certificate or options,
    3 certificate refused or server not trusted.
    """
    try:
        from .check import report_lines, run_check
        from .errors import UsageError
        from .tls import forbid_core_dumps

        server, chosen_proxy = _connection(env, base_url, proxy, no_proxy)
        if not (timeout > 0 and timeout < float("inf")):
            raise UsageError("--timeout must be a positive number of seconds")
        forbid_core_dumps()
        password, password_path = _password_source(warn=False)  # a check of its own below
        report = run_check(
            base_url=server,
            cert=cert,
            key=key,
            ca_bundle=ca_bundle,
            password=password,
            password_file=password_path,
            timeout=timeout,
            proxy=chosen_proxy,
        )
    except OmarBulkError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if as_json:
        import json

        typer.echo(json.dumps(report.as_json(), indent=2))
    else:
        typer.echo("\n".join(report_lines(report)))
    raise typer.Exit(report.exit_code)


@app.command()
def status(
    out: Annotated[
        Path, typer.Argument(metavar="OUT", help="Output folder of earlier fetches.")
    ] = Path("omar-data"),
    manifest: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="Also count what this manifest plans but was never fetched (- reads stdin).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the view as JSON.")] = False,
    by: Annotated[
        str, typer.Option(metavar="month|year", help="month (a row per id and year) or year.")
    ] = "month",
    today: Annotated[
        str | None,
        typer.Option(metavar="DATE", help="Resolve the manifest's relative dates as of this date."),
    ] = None,
    file_format: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="mdef|csv",
            help="As given to fetch: plan the manifest the same way.",
        ),
    ] = "mdef",
    time_type: Annotated[str, typer.Option(metavar="PST|DST", help="As given to fetch.")] = "PST",
    chunk: Annotated[str, typer.Option(metavar="CHUNK", help="As given to fetch.")] = "month",
    prometheus: Annotated[
        bool,
        typer.Option("--prometheus", help="Print coverage gauges in Prometheus' text format."),
    ] = False,
    prometheus_per_id: Annotated[
        bool,
        typer.Option(
            "--prometheus-per-id",
            help="--prometheus with a series per id as well (implies --prometheus; many ids"
            " make many series).",
        ),
    ] = False,
    state_dir: StateDirOption = None,
) -> None:
    """What is on disk, per id and month, from the journal alone. Exit 1 if incomplete."""
    try:
        from .coverage import read_coverage
        from .errors import UsageError
        from .manifest import load_manifest

        if by not in ("month", "year"):
            raise UsageError(f"--by {by!r}: use month or year")
        if as_json and (prometheus or prometheus_per_id):
            raise UsageError("--json and --prometheus each print the whole view: choose one")
        defaults = _defaults(file_format, time_type, chunk, today)
        plan = load_manifest(_user_path(manifest), defaults) if manifest else None
        view = read_coverage(out, plan=plan, state_dir=state_dir)
    except OmarBulkError as exc:
        _fail(exc)
    if prometheus or prometheus_per_id:
        from .metrics import coverage_registry, exposition

        registry = coverage_registry(view, per_id=prometheus_per_id, planned=plan is not None)
        typer.echo(exposition(registry), nl=False)
    elif as_json:
        import json

        typer.echo(json.dumps(view.as_json(), indent=2))
    else:
        from rich.console import Console

        from .progress import render_coverage

        console = Console(highlight=False)
        if not console.is_terminal:  # a file or a pipe: never cut the table to 80 columns
            console = Console(highlight=False, width=200)
        render_coverage(view, console, by=by)
    raise typer.Exit(0 if view.complete else 1)


@app.command()
def verify(
    out: Annotated[
        Path, typer.Argument(metavar="OUT", help="Output folder of earlier fetches.")
    ] = Path("omar-data"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    state_dir: StateDirOption = None,
) -> None:
    """Hash every file and check it against the journal; change nothing.

    Exit 0 when every promise holds, 1 naming each problem and its fix, 2 on bad input.
    """
    from .verify import verify as check_archive

    try:
        if sys.stderr.isatty():
            from .progress import byte_progress, stderr_console

            with byte_progress(stderr_console(), "hashing") as progress:
                verdict = check_archive(out, state_dir=state_dir, progress=progress)
        else:
            verdict = check_archive(out, state_dir=state_dir)
    except OmarBulkError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        typer.echo("omar-bulk: verify interrupted before it ended: nothing was changed", err=True)
        raise typer.Exit(130) from None
    if as_json:
        import json

        typer.echo(json.dumps(verdict.as_json(), indent=2))
    else:
        from .text import printable

        for note in verdict.notes:
            typer.echo(f"note: {printable(note, limit=2000)}", err=True)
        for problem in verdict.problems:
            typer.echo(str(problem))
        checked = (
            f"{verdict.files} data files and {verdict.history} history files,"
            f" {verdict.bytes:,} bytes hashed"
        )
        if verdict.problems:
            count = len(verdict.problems)
            typer.echo(f"verify: {count} problem{'' if count == 1 else 's'} in {checked}")
        else:
            typer.echo(f"verify: {checked}: all hold")
    raise typer.Exit(verdict.exit_code)


@app.command()
def serve(
    port: Annotated[
        int, typer.Option(metavar="N", help="Port to listen on (0: any free port).")
    ] = 8444,
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="Address to listen on.")
    ] = "127.0.0.1",
    certs: Annotated[
        Path, typer.Option(metavar="DIR", help="Folder for the stand-in's throwaway certificates.")
    ] = Path("omar-standin-certs"),
    latency: Annotated[
        float, typer.Option(metavar="S", help="Seconds before each download answer.")
    ] = 0.0,
    fault_rate: Annotated[
        float, typer.Option(metavar="P", help="Share of downloads that meet a random fault (0..1).")
    ] = 0.0,
    faults: Annotated[
        str, typer.Option(metavar="KINDS", help="Comma-separated fault kinds for --fault-rate.")
    ] = "503,500,cut",
    retry_after: Annotated[
        float, typer.Option(metavar="S", help="Retry-After seconds on 503/429.")
    ] = 1.0,
    session_requests: Annotated[
        int,
        typer.Option(metavar="N", help="Expire a session after this many downloads (0: never)."),
    ] = 0,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of the random faults.")] = 0,
    accept_slashes: Annotated[
        bool,
        typer.Option(
            "--accept-slashes",
            help="Also accept '/' in dates (for tools that cannot send %2F; not the spec).",
        ),
    ] = False,
) -> None:
    """Run the stand-in OMAR-Online server (loopback, mutual TLS, optional faults)."""
    from .demo import serve_forever

    try:
        serve_forever(
            host=host,
            port=port,
            certs=certs,
            latency=latency,
            fault_rate=fault_rate,
            faults=faults,
            retry_after=retry_after,
            session_requests=session_requests,
            seed=seed,
            accept_slashes=accept_slashes,
        )
    except OmarBulkError as exc:
        _fail(exc)


@app.command()
def demo(
    out: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Output folder (default: a new temporary folder)."),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Progress display (default: on a terminal)."),
    ] = None,
) -> None:
    """A real backfill against the bundled stand-in server, faults included."""
    from .demo import run_demo

    try:
        code = run_demo(out=out, progress=progress)
    except OmarBulkError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def main() -> None:
    """Run the command line (the console entry point routes signals first: ``_entry``)."""
    app(prog_name="omar-bulk")


__all__ = [
    "BaseUrlOption",
    "CaBundleOption",
    "CertOption",
    "EnvOption",
    "KeyOption",
    "NoProxyOption",
    "ProxyOption",
    "StateDirOption",
    "app",
    "check",
    "demo",
    "fetch",
    "main",
    "serve",
    "status",
    "verify",
]
