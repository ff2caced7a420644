"""Runs the output folder's system calls for the event loop: inline while the disk is quick,
on threads of its own once a call is slow (an event-loop primitive, apart from where files go,
which is ``storage.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from time import thread_time as _thread_time
from typing import Any, TypeVar

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

__all__ = ["PROBE_AFTER", "PROBE_MAX", "QUICK_PROBES", "SLOW_CALL", "Offload"]


#: A file system call that keeps the event loop this long sends the calls after it to the
#: ``Offload`` threads. Measured on 2 cores (benchmarks/RESULTS.md, workload 1): a new small
#: file costs 20-60 us on tmpfs and 30-400 us on this machine's ext4, while the hop to a thread
#: and back costs the loop about as much as the fast case; a call of milliseconds is a disk
#: (or a network share) that would hold every download back.
SLOW_CALL = 0.002
#: How long calls stay on threads after a slow one before one is tried on the loop again;
#: doubled each time the disk is still slow, up to ``PROBE_MAX``.
PROBE_AFTER = 1.0
PROBE_MAX = 60.0
#: Quick calls on the loop, one per probe interval, before a disk that stalled is trusted
#: again; and the quiet time after which its record is forgotten altogether. A disk (or share)
#: that stalls now and then must not get the event loop back after one lucky call.
QUICK_PROBES = 3


_T = TypeVar("_T")
#: getrusage(2) for the calling thread alone (Linux); elsewhere every slow call counts.
_RUSAGE_THREAD: int | None = getattr(resource, "RUSAGE_THREAD", None) if resource else None
_Job = tuple["asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


class Offload:
    """Runs the output folder's system calls for the event loop, so that it never waits on a
    slow disk, without paying a thread hop per file on a fast one.

    Calls run inline while they are quick. The first one that takes longer than ``SLOW_CALL``
    sends every later call to ``threads`` threads of its own (started as needed, so as many
    calls overlap as downloads are in flight); after ``PROBE_AFTER`` one call is tried inline
    again. The threads hand results back in batches: one wake-up of the loop for all calls
    finished since the last. ``mode`` "thread" or "inline" pins one way (for measuring; the
    environment variable OMAR_OFFLOAD sets it for a whole run).

    A task cancelled while its call runs on a thread waits for the call to end before it
    unwinds: whatever the call made (a renamed file, an open descriptor) is known to the
    code that cleans up, never left behind by it.
    """

    def __init__(self, threads: int, *, mode: str | None = None) -> None:
        self._size = max(1, threads)
        mode = mode or os.environ.get("OMAR_OFFLOAD", "auto")
        self._mode = mode if mode in ("auto", "thread", "inline") else "auto"
        #: Calls run inline from this time on (time.monotonic); infinite: always on threads.
        self._inline_from = float("inf") if self._mode == "thread" else 0.0
        self._probe = PROBE_AFTER
        self._last_slow = float("-inf")
        self._owed: set[asyncio.Task[Any]] = set()
        self._quick_probes = QUICK_PROBES  # nothing slow seen: calls run on the loop
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._pending = 0
        self._done: list[tuple[asyncio.Future[Any], bool, Any]] = []
        self._done_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Calls that went to a thread, and slow calls seen inline (for tests and metrics).
        self.hops = 0
        self.slow_calls = 0

    @property
    def threads_started(self) -> int:
        return len(self._threads)

    async def call(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)``, inline or on a thread (see the class)."""
        return await self._run(function, args, settles=False)

    async def settle(self, function: Callable[..., _T], *args: Any) -> _T:
        """``call`` for the step that puts a finished file in place. If the task is
        cancelled while it runs on a thread and it succeeds, its result is handed back
        anyway, so that what is now on disk gets recorded, and the cancellation is held
        until the caller has done so (``pay_cancellation``)."""
        return await self._run(function, args, settles=True)

    async def _run(
        self, function: Callable[..., _T], args: tuple[Any, ...], *, settles: bool
    ) -> _T:
        now = time.monotonic()
        if now >= self._inline_from:
            before = _thread_usage()
            try:
                return function(*args)
            finally:
                spent = time.monotonic() - now
                if self._mode == "auto":
                    # Slow only if the thread waited or worked: a call merely preempted by
                    # another process says nothing about the disk.
                    self._judge(now, spent, slow=spent > SLOW_CALL and not _preempted(before))
        return await self._hop(function, args, settles)

    def _judge(self, started: float, spent: float, *, slow: bool) -> None:
        """After a call on the loop: a slow one sends the next calls to threads for a while
        (longer each time); while the disk is on probation, each quick call is one probe,
        and calls go back to threads until the next probe is due."""
        now = started + spent
        if slow:
            self.slow_calls += 1
            self._last_slow = now
            self._quick_probes = 0
            self._inline_from = now + self._probe
            self._probe = min(self._probe * 2, PROBE_MAX)
            return
        if now - self._last_slow > PROBE_MAX:
            self._probe = PROBE_AFTER  # quiet for long enough: forget the stalls
            self._quick_probes = QUICK_PROBES
        if self._quick_probes < QUICK_PROBES:
            # Probes grow rarer too: a disk that stalls one call in a few is caught by a
            # probe now and then, never by every call.
            self._quick_probes += 1
            if self._quick_probes < QUICK_PROBES:  # the last one hands the loop back
                self._inline_from = now + self._probe
                self._probe = min(self._probe * 2, PROBE_MAX)

    async def _hop(self, function: Callable[..., _T], args: tuple[Any, ...], settles: bool) -> _T:
        loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self.hops += 1
        self._pending += 1
        if self._pending > len(self._threads) < self._size:
            worker = threading.Thread(target=self._serve, name="omar-bulk-disk", daemon=True)
            worker.start()
            self._threads.append(worker)
        self._jobs.put((future, function, args))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            while not future.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait((future,))
            if not settles or future.cancelled() or future.exception() is not None:
                raise
            # The call did what it was asked (a file renamed into place): hand its result
            # back so that it is recorded, and owe the task its cancellation, which the
            # caller pays once the bookkeeping is done (``pay_cancellation``).
            task = asyncio.current_task()
            if task is None:
                raise
            task.uncancel()
            self._owed.add(task)
            return future.result()
        finally:
            self._pending -= 1

    def pay_cancellation(self) -> None:
        """Raise the CancelledError that a finished call held back for the current task."""
        task = asyncio.current_task()
        if task is not None and task in self._owed:
            self._owed.discard(task)
            raise asyncio.CancelledError

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, function, args = job
            try:
                outcome: tuple[asyncio.Future[Any], bool, Any] = (future, True, function(*args))
            except BaseException as exc:  # handed to the awaiting task, raised there
                outcome = (future, False, exc)
            with self._done_lock:
                self._done.append(outcome)
                first = len(self._done) == 1
            if first:
                loop = self._loop
                if loop is not None and not loop.is_closed():
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                        loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._done_lock:
            done, self._done = self._done, []
        for future, ok, value in done:
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def close(self) -> None:
        """Let the threads go once the calls queued before have run (idle threads at the end
        of a run: nothing waits)."""
        for _ in self._threads:
            self._jobs.put(None)
        self._threads.clear()


def _thread_usage() -> tuple[int, int, float] | None:
    """This thread's voluntary and involuntary context switches and processor time."""
    if _RUSAGE_THREAD is None or resource is None:
        return None
    usage = resource.getrusage(_RUSAGE_THREAD)
    # Not ru_utime + ru_stime: for one thread they advance by whole scheduler ticks (4 ms).
    return usage.ru_nvcsw, usage.ru_nivcsw, _thread_time()


def _preempted(before: tuple[int, int, float] | None) -> bool:
    """A call was slow only because the scheduler gave the processor to someone else: it
    never waited (no voluntary switch: no disk, lock or network share held it), and it spent
    little processor time itself. A thread would not have run it sooner, so it says nothing
    about the disk. On a busy machine (2 cores, other jobs) this happened in about one run
    in three of workload 1, and sent a whole run on tmpfs to threads."""
    after = _thread_usage()
    if before is None or after is None:
        return False
    voluntary, involuntary, cpu = (a - b for a, b in zip(after, before, strict=True))
    return voluntary == 0 and involuntary > 0 and cpu < SLOW_CALL
