"""A whole run, start to finish: the library's entry point behind ``omar-bulk fetch``.

    identity check ─▶ lock OUT ─▶ journal (clean up after a killed run) ─▶ engine ─▶ report

``fetch`` blocks and returns a ``RunResult``; ``fetch_async`` is the same for callers that
already run an event loop. ``planned_urls`` is the dry run: what a real run would request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import LocalWriteError, OmarBulkError, UsageError
from .journal import Journal, hash_matches, vouches
from .protocol import relative_path, request_url
from .report import ReportWriter
from .results import NullObserver, Observer, RunResult, Summary, Tally
from .settings import Settings
from .storage import STATE_DIR, Storage

REPORT_NAME = "last-run.json"
INTERRUPTED = 130


def fetch(settings: Settings, *, observer: Observer | None = None) -> RunResult:
    """Run ``settings`` to the end and return its result. Blocking; installs signal handlers
    for Ctrl-C and SIGTERM when called from the main thread."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(fetch_async(settings, observer=observer))


async def fetch_async(settings: Settings, *, observer: Observer | None = None) -> RunResult:
    """``fetch`` for callers inside an event loop."""
    from .fetch import Engine
    from .tls import create_ssl_context, load_identity

    observer = observer or NullObserver()
    started = time.monotonic()
    stop = _Stopper()
    tally = Tally(planned=settings.plan.survey())
    observer.planned(tally.planned)
    warnings: list[str] = []
    with _signals(stop):
        assert settings.cert is not None  # Settings insists on it for real runs
        identity = load_identity(settings.cert, settings.key, password=settings.password)
        warnings += identity.validity_warnings()
        context = create_ssl_context(identity, ca_bundle=settings.ca_bundle)
        storage = Storage(settings.out_dir)
        storage.prepare()
        with _lock(storage.state / "lock"):
            journal = Journal.open(storage.state, warn=warnings)
            try:
                _remove_leftovers(journal, storage)
                journal.begin_run()
                for message in warnings:
                    observer.notice(message)
                report = ReportWriter(settings.report or storage.state / REPORT_NAME)
                engine = Engine(
                    settings,
                    ssl_context=context,
                    journal=journal,
                    storage=storage,
                    report=report,
                    observer=observer,
                    tally=tally,
                )
                stop.engine = engine
                aborted: OmarBulkError | None = None
                if not stop.requested:
                    try:
                        await engine.run(settings.plan)
                    except OmarBulkError as fatal:
                        aborted = fatal
                interrupted = stop.requested
                _remove_leftovers(journal, storage)
                summary = Summary.of(tally, time.monotonic() - started, interrupted=interrupted)
                journal.end_run(summary.as_report(), interrupted=interrupted)
                report_path = report.write(summary)
            finally:
                journal.close()
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


def planned_urls(settings: Settings, *, notice: Callable[[str], None] | None = None) -> Iterator[str]:
    """Every URL a real run with ``settings`` would request now, sending nothing.

    Reads the journal, if there is one, exactly as a real run would, and creates nothing.
    """
    journal = None if settings.overwrite else Journal.open_readonly(settings.out_dir / STATE_DIR)
    storage = Storage(settings.out_dir)
    try:
        for item in settings.plan:
            rel = relative_path(item)
            if journal is not None:
                entry = journal.get(rel.as_posix())
                if entry is not None:
                    final = storage.final(rel)
                    good, reason = vouches(entry, final)
                    if good is None:
                        good, reason = hash_matches(entry, final)
                    if good:
                        continue
                    if notice and reason:
                        notice(reason)
            yield request_url(settings.base_url, item)
    finally:
        if journal is not None:
            journal.close()


def _remove_leftovers(journal: Journal, storage: Storage) -> None:
    """Remove the ``.part`` files of items that were in flight when a run stopped."""
    leftovers = journal.inflight()
    for key in leftovers:
        storage.discard(key)
    if leftovers:
        journal.clear_inflight(leftovers)


class _Stopper:
    """Signal target that exists before the engine does, so Ctrl-C works during start-up."""

    def __init__(self) -> None:
        self.requested = False
        self.engine: Any = None

    def __call__(self) -> None:
        self.requested = True
        if self.engine is not None:
            self.engine.interrupt()


@contextlib.contextmanager
def _signals(stop: _Stopper) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    installed = []
    for number in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(number, stop)
            installed.append(number)
        except (NotImplementedError, RuntimeError):  # not on this platform or loop
            pass
    try:
        yield
    finally:
        for number in installed:
            loop.remove_signal_handler(number)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """One run per output folder at a time: two would fetch the same files twice."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows has no fcntl; runs are not guarded there
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        from .storage import translate_os_error

        raise translate_os_error(exc, path) from exc
    handle: IO[bytes] = os.fdopen(fd, "r+b")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"another omar-bulk run is using {path.parent.parent}; wait for it to finish"
            ) from None
        yield
    finally:
        handle.close()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (the ``fast`` extra), else the standard loop."""
    if os.environ.get("OMAR_NO_UVLOOP"):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


__all__ = ["INTERRUPTED", "LocalWriteError", "fetch", "fetch_async", "planned_urls"]
