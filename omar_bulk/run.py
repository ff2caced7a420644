"""A whole run, start to finish: the library's entry point behind ``omar-bulk fetch``.

    identity check ─▶ the archive opened for a run (``archive.Archive.run``: checks, lock,
    journal, sweep of what a killed run left) ─▶ engine ─▶ report

``fetch`` blocks and returns a ``RunResult``; ``fetch_async`` is the same for callers that
already run an event loop. ``planned_urls`` is the dry run: what a real run would request.
Signals are routed here too, by one ``SignalRouter`` for the whole process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .archive import Archive
from .errors import LocalWriteError, OmarBulkError, UsageError
from .journal import Entry, Journal, lost_journal_entries
from .policy import decide, needs_disk_check, on_disk
from .protocol import relative_key, request_url
from .report import REPORT_NAME, ReportWriter
from .results import NullObserver, Observer, RunResult, Summary, Tally
from .settings import Settings
from .storage import Storage

INTERRUPTED = 130


class StopSignal:
    """A request to stop one run, carried from a signal handler into it.

    Before it is ``armed`` nothing needs cleaning up, so a signal unwinds the stack as usual
    (KeyboardInterrupt). Once armed, ``request`` asks the run to stop gracefully: stop
    starting work, cancel transfers, remove ``.part`` files, write the journal and report. It
    is safe to call from a signal handler at any moment, even after the run.
    """

    def __init__(self) -> None:
        self.armed = False
        self.requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._target: Callable[[], None] | None = None

    def request(self) -> None:
        self.requested = True
        loop, target = self._loop, self._target
        if loop is not None and target is not None and not loop.is_closed():
            loop.call_soon_threadsafe(target)

    def bind(self, loop: asyncio.AbstractEventLoop, target: Callable[[], None]) -> None:
        self._loop, self._target = loop, target

    def unbind(self) -> None:
        self._loop = self._target = None


class SignalRouter:
    """The process's one handler for Ctrl-C and SIGTERM.

    The console entry point installs it before anything else is imported; ``fetch`` installs
    it for the duration of a run when a library caller has not. A signal goes to the run in
    progress once that run is armed, and otherwise raises KeyboardInterrupt where the program
    is, which is how a start-up (password prompt, certificate loading) is abandoned.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.installed = False
        self._current: StopSignal | None = None

    def install(self) -> None:
        """Take over SIGINT and SIGTERM for the rest of the process (main thread only)."""
        for number in self.SIGNALS:
            signal.signal(number, self._handle)
        self.installed = True

    def silence(self) -> None:
        """Ignore both signals from now on: everything is written, the process is leaving."""
        for number in self.SIGNALS:
            signal.signal(number, signal.SIG_IGN)

    @contextlib.contextmanager
    def routing(self, stop: StopSignal) -> Iterator[StopSignal]:
        """Send signals to ``stop`` while the block runs; restore what was there after."""
        if threading.current_thread() is not threading.main_thread():
            yield stop  # signals reach only the main thread; the caller handles them
            return
        previous = None if self.installed else {n: signal.getsignal(n) for n in self.SIGNALS}
        if previous is not None:
            for number in self.SIGNALS:
                signal.signal(number, self._handle)
        outer, self._current = self._current, stop
        try:
            yield stop
        finally:
            # A signal that lands after the run, while its summary is printed and the process
            # leaves, goes to the finished run's stop (which has nothing left to stop): the
            # run's outcome and exit code are settled, and no late KeyboardInterrupt may
            # turn them into a traceback.
            self._current = outer if outer is not None else (stop if stop.armed else None)
            if previous is not None:
                for number, handler in previous.items():
                    signal.signal(number, handler)

    def _handle(self, signum: int, frame: object) -> None:
        stop = self._current
        if stop is not None and stop.armed:
            stop.request()
            return
        raise KeyboardInterrupt


#: The router of this process.
ROUTER = SignalRouter()


def fetch(
    settings: Settings, *, observer: Observer | None = None, stop: StopSignal | None = None
) -> RunResult:
    """Run ``settings`` to the end and return its result. Blocking.

    The certificate is loaded (and its password asked for) first, while Ctrl-C still simply
    raises KeyboardInterrupt. Called from the main thread, Ctrl-C and SIGTERM then stop the
    run gracefully (``stop``, if given, can also be requested from elsewhere); the previous
    handlers are back when it returns.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # no loop running in this thread: the ordinary case
    else:
        raise UsageError(
            "omar_bulk.fetch() blocks, so it cannot run inside an event loop:"
            " use 'await omar_bulk.fetch_async(settings)' there"
        )
    context, warnings = open_tls(settings)
    stop = stop or StopSignal()
    with ROUTER.routing(stop):
        stop.armed = True
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(
                fetch_async(
                    settings,
                    observer=observer,
                    stop=stop,
                    ssl_context=context,
                    warnings=warnings,
                )
            )


def open_tls(settings: Settings) -> tuple[ssl.SSLContext, list[str]]:
    """Load and check the client identity; build the run's SSL context. May ask a password."""
    from .tls import create_ssl_context, load_identity

    if settings.cert is None:
        raise UsageError("a client certificate is required: give --cert (or OMAR_CERT)")
    identity = load_identity(settings.cert, settings.key, password=settings.password)
    warnings = identity.validity_warnings() + identity.chain_warnings()
    return create_ssl_context(identity, ca_bundle=settings.ca_bundle), warnings


async def fetch_async(
    settings: Settings,
    *,
    observer: Observer | None = None,
    stop: StopSignal | None = None,
    ssl_context: ssl.SSLContext | None = None,
    warnings: list[str] | None = None,
) -> RunResult:
    """``fetch`` for callers inside an event loop (they handle signals themselves, and may
    stop the run with ``stop.request()``)."""
    from .engine import Engine

    observer = observer or NullObserver()
    stop = stop or StopSignal()
    started = time.monotonic()
    warnings = list(warnings or [])
    if ssl_context is None:
        ssl_context, more = open_tls(settings)
        warnings += more
    tally = Tally(planned=settings.plan.survey())
    warnings += settings.plan.notes
    observer.planned(tally.planned)
    archive = Archive.locate(settings.out_dir, settings.state_dir)
    warnings += archive.notes
    storage = Storage(settings.out_dir)
    with archive.run(storage, warnings) as journal:
        try:
            journal.begin_run()
            warnings += journal.settle_landings(storage.root)
            for message in warnings:
                observer.notice(message)
            report = ReportWriter(settings.report or archive.report)
            engine = Engine(
                settings,
                ssl_context=ssl_context,
                journal=journal,
                storage=storage,
                report=report,
                observer=observer,
                tally=tally,
                revisit_from=settings.revisit_from(),
            )
            stop.bind(asyncio.get_running_loop(), engine.interrupt)
            aborted: OmarBulkError | None = None
            if not stop.requested:
                try:
                    await engine.run(settings.plan)
                except OmarBulkError as fatal:
                    aborted = fatal
            stop.unbind()
            interrupted = stop.requested
            # Finishing must survive the very failure that may have ended the run (a full
            # disk): each step is tried, and what fails is reported, not raised.
            late: list[OmarBulkError] = []
            _attempt(late, lambda: archive.sweep(journal, storage))
            _attempt(late, engine.record_unrecorded)
            _attempt(late, journal.drop_settled_intents)
            summary = Summary.of(
                tally,
                time.monotonic() - started,
                interrupted=interrupted,
                concurrency=engine.gate.figures(),
            )
            _attempt(late, lambda: journal.end_run(summary.as_report(), interrupted=interrupted))
            report_path: Path | None = None
            try:
                report_path = report.write(summary)
            except OmarBulkError as exc:
                late.append(type(exc)(f"the report was not written: {exc}"))
            for problem in late:
                observer.notice(str(problem))
                warnings.append(str(problem))
            if aborted is None:
                aborted = next((p for p in late if isinstance(p, LocalWriteError)), None)
        finally:
            stop.unbind()
    if aborted is not None:
        code = aborted.exit_code
    elif interrupted:
        code = INTERRUPTED
    else:
        code = 1 if tally.failed else 0
    return RunResult(
        summary=summary,
        failures=tuple(engine.failures),
        more_failures=max(0, tally.failed - len(engine.failures)),
        report=report_path,
        aborted=str(aborted) if aborted else None,
        exit_code=code,
        warnings=tuple(warnings),
    )


def planned_urls(
    settings: Settings, *, notice: Callable[[str], None] | None = None
) -> Iterator[str]:
    """Every URL a real run with ``settings`` would request now, sending nothing.

    Reads the journal, if there is one, and decides with the run's own skip rule
    (``policy.decide``); needs no certificate and writes nothing of its own (SQLite may leave
    its shared-memory index, ``-shm``, beside a journal in WAL mode).
    """
    archive = Archive.locate(settings.out_dir, settings.state_dir)
    state, notes = archive.read_folder()
    if notice:
        for note in [*notes, *settings.plan.notes]:
            notice(note)
        try:
            archive.check()  # what the run checks before it writes or sends anything
        except OmarBulkError as exc:
            notice(f"a run would stop before sending anything: {exc}")
    with archive.reading() as journal:
        yield from _due(settings, journal, state, notice)


def _due(
    settings: Settings,
    journal: Journal | None,
    state: Path,
    notice: Callable[[str], None] | None,
) -> Iterator[str]:
    lookup: Callable[[str], Entry | None]
    if journal is not None:
        # Files a killed run renamed into place without committing: the run records them.
        landed = journal.landed_entries(settings.out_dir)
        get = journal.get
        lookup = (lambda key: landed.get(key) or get(key)) if landed else get
    else:  # missing or unreadable: the entries a real run would rebuild it with
        entries, lost = lost_journal_entries(state, settings.out_dir)
        lookup = entries.get
        if notice and lost:
            notice(lost)
    storage = Storage(settings.out_dir)
    cutoff = settings.revisit_from()
    for item in settings.plan:
        entry = lookup(relative_key(item))
        present = False
        if needs_disk_check(entry):
            assert entry is not None
            check = on_disk(entry, storage.final(entry.path), may_hash=True)
            present = bool(check.good)
            if notice and check.reason:
                notice(check.reason)
        due = decide(item, entry, present, overwrite=settings.overwrite, revisit_from=cutoff)
        if due.fetch:
            yield request_url(settings.base_url, item)


def _attempt(problems: list[OmarBulkError], step: Callable[[], object]) -> None:
    try:
        step()
    except OmarBulkError as exc:
        problems.append(exc)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The standard loop, unless OMAR_UVLOOP=1 asks for uvloop (the ``fast`` extra).

    Measured on Python 3.11 (benchmarks/RESULTS.md): uvloop made 2,000 small files no faster
    and a 1 GiB body over TLS 15-40% slower than the standard loop, whose TLS layer was
    rewritten in 3.11. So it is opt-in, for whoever measures otherwise on their machine.
    """
    if os.environ.get("OMAR_UVLOOP") != "1":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


__all__ = [
    "INTERRUPTED",
    "REPORT_NAME",
    "ROUTER",
    "SignalRouter",
    "StopSignal",
    "fetch",
    "fetch_async",
    "open_tls",
    "planned_urls",
]
