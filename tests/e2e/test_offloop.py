"""The event loop never waits on the disk: a slow file system call delays its own download,
not every other one, and the folder cache stays sound when threads share it."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from omar_bulk import offload as offload_module
from omar_bulk.offload import PROBE_AFTER, QUICK_PROBES, SLOW_CALL, Offload
from omar_bulk.storage import Storage

from ..conftest import Cli, data_files, journal_rows

#: Every rename takes this much longer (os.replace patched): a disk that is slow to rename.
DELAY = 0.2
METERS = [f"M{n}" for n in range(1, 4)]
#: 3 meters x 8 months = 24 files, 12 at once.
PERIOD = ["--start", "2023-01-01", "--end", "2023-08-31", "--concurrency", "12"]


def test_slow_renames_overlap_instead_of_queueing_on_the_loop(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """24 files whose renames each take 0.2 s: one after another on the loop that is 4.8 s;
    overlapped 12 at a time, well under half of it. Every file still lands whole and is
    journaled, and no ``.part`` is left."""
    real_replace = os.replace

    def slow_replace(*args: object, **kwargs: object) -> None:
        time.sleep(DELAY)
        real_replace(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", slow_replace)
    meters = [word for meter in METERS for word in ("--meter", meter)]
    started = time.monotonic()
    outcome = cli("fetch", *meters, *PERIOD)
    spent = time.monotonic() - started
    assert outcome.exit_code == 0, outcome.stderr
    files = data_files(cli.out)
    assert len(files) == 24
    assert len(journal_rows(cli.out)) == 24
    assert not [p for p in cli.out.rglob("*.part")]
    serial = 24 * DELAY
    assert spent < serial / 2, f"{spent:.2f} s: the renames ran one after another ({serial} s)"


def test_a_slow_call_sends_the_next_ones_to_threads_while_the_loop_turns() -> None:
    """After one slow call, a call that can only finish once the loop has run something else
    does finish: it is on a thread, not blocking the loop."""

    async def main() -> tuple[bool, int]:
        disk = Offload(4, mode="auto")
        await disk.call(time.sleep, SLOW_CALL * 5)  # inline, and slow
        released = threading.Event()

        async def release() -> None:
            released.set()

        task = asyncio.create_task(release())
        done = await disk.call(released.wait, 10)
        await task
        disk.close()
        return done, disk.hops

    done, hops = asyncio.run(main())
    assert done, "the call blocked the loop: the task that releases it never ran"
    assert hops == 1


def test_calls_on_threads_overlap_up_to_the_thread_count() -> None:
    """Eight calls of 0.2 s on eight threads take about 0.2 s, not 1.6 s."""

    async def main() -> float:
        disk = Offload(8, mode="thread")
        started = time.monotonic()
        await asyncio.gather(*(disk.call(time.sleep, DELAY) for _ in range(8)))
        disk.close()
        return time.monotonic() - started

    assert asyncio.run(main()) < 8 * DELAY / 2


def test_quick_calls_stay_inline_and_probes_bring_them_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a fast disk nothing hops to a thread. After a slow call, calls hop until
    ``PROBE_AFTER`` has passed; then one call at a time is tried inline (a probe), at growing
    intervals, and after ``QUICK_PROBES`` quick probes every call runs inline again."""
    now = [100.0]
    monkeypatch.setattr(offload_module, "time", SimpleNamespace(monotonic=lambda: now[0]))

    def quick() -> int:
        return 1

    def slow() -> int:
        now[0] += SLOW_CALL * 2
        return 2

    async def main() -> list[int]:
        disk = Offload(2, mode="auto")
        hops = []
        for _ in range(50):
            await disk.call(quick)
        hops.append(disk.hops)  # 0: all inline
        await disk.call(slow)
        await disk.call(quick)
        hops.append(disk.hops)  # 1: the call after the slow one hopped
        interval = PROBE_AFTER * 2
        now[0] += PROBE_AFTER + 0.01
        for _ in range(QUICK_PROBES):
            await disk.call(quick)  # the probe, inline
            await disk.call(quick)  # back on a thread until the next probe is due
            now[0] += interval + 0.01
            interval *= 2
        hops.append(disk.hops)  # 1 + one hop after each probe
        for _ in range(5):
            await disk.call(quick)
        hops.append(disk.hops)  # trusted again: inline
        disk.close()
        return hops

    assert asyncio.run(main()) == [0, 1, 1 + QUICK_PROBES - 1, 1 + QUICK_PROBES - 1]


def test_a_cancelled_task_waits_for_its_call_to_end_and_records_it_first() -> None:
    """Cancelling a download whose rename is on a thread does not leave the rename running
    behind the clean-up: the task ends only after the call did. A call that succeeded hands
    its result back, so the caller records what is now on disk, and the cancellation takes
    effect when the caller pays it."""
    finished = threading.Event()
    recorded: list[str] = []

    def rename_like() -> str:
        time.sleep(DELAY)
        finished.set()
        return "renamed"

    async def main() -> bool:
        disk = Offload(2, mode="thread")

        async def download() -> None:
            recorded.append(await disk.settle(rename_like))
            disk.pay_cancellation()
            recorded.append("went on after the stop")  # never reached

        task = asyncio.create_task(download())
        await asyncio.sleep(DELAY / 4)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        seen = finished.is_set()
        disk.close()
        return seen

    assert asyncio.run(main())
    assert recorded == ["renamed"]


def test_a_cancelled_call_that_failed_still_raises_the_cancellation() -> None:
    def fails_slowly() -> None:
        time.sleep(DELAY)
        raise OSError(28, "No space left on device")

    async def main() -> None:
        disk = Offload(2, mode="thread")
        task = asyncio.create_task(disk.call(fails_slowly))
        await asyncio.sleep(DELAY / 4)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        disk.close()

    asyncio.run(main())


def test_an_error_on_a_thread_reaches_the_caller() -> None:
    """A call that fails on a thread raises in the awaiting task, as inline."""

    def fails() -> None:
        raise OSError(28, "No space left on device")

    async def main() -> None:
        disk = Offload(2, mode="thread")
        try:
            await disk.call(fails)
        finally:
            disk.close()

    with pytest.raises(OSError, match="No space left"):
        asyncio.run(main())


def fds_under(folder: Path) -> list[str]:
    """The descriptors of this process open on ``folder`` or anything in it.

    Only these belong to the test: counting every descriptor of the process also counts what
    earlier tests left for the garbage collector (sockets, event loops), which closes them at
    any moment, so a plain count went up or down by a few on a loaded machine."""
    inside = os.fspath(folder.resolve())
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # closed since the listing (or the listing's own descriptor)
            continue
        if target == inside or target.startswith(inside + os.sep):
            found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_threads_sharing_the_folder_cache_write_every_file_into_its_own_folder(
    tmp_path: Path,
) -> None:
    """Sixteen threads write 600 files across 150 folders, over twice the cache's size, so
    descriptors are evicted while others use them: every file lands in its own folder with
    its own bytes, and no descriptor is left open afterwards."""
    storage = Storage(tmp_path / "out")
    storage.prepare()
    keys = [f"meter/M{n % 150}/file{n}.mdef" for n in range(600)]

    def write(key: str) -> None:
        storage.write_whole(key, key.encode())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(write, keys))
    for key in keys:
        assert (storage.root / key).read_bytes() == key.encode()
    assert not list(storage.root.rglob("*.part"))
    assert fds_under(storage.root), "the cache keeps folders open between calls"
    storage.close()
    assert fds_under(tmp_path) == []


def test_a_cancelled_call_that_only_prepares_still_stops_the_task() -> None:
    """Only the step that puts a file in place holds a stop back: opening a ``.part`` that
    succeeds while the run is stopped must not let the download stream on."""

    def open_like() -> str:
        time.sleep(DELAY)
        return "opened"

    async def main() -> None:
        disk = Offload(2, mode="thread")
        task = asyncio.create_task(disk.call(open_like))
        await asyncio.sleep(DELAY / 4)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        disk.close()

    asyncio.run(main())


def test_a_disk_slow_only_sometimes_does_not_hold_the_loop_at_every_stall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A disk (or a share) that stalls one call in four for 50 ms, with calls 0.5 s apart.
    Offload sends calls to threads for ``PROBE_AFTER`` (1 s) after a stall, then tries one
    inline: it is quick, so the probe interval is reset to 1 s, and the next stall lands on
    the event loop again. The doubling of the probe interval never builds up, and every
    stall holds every download: 10 of 10 here. README: "A slow disk never holds the run
    back". Once a disk has shown it stalls, a quick probe should not forget it at once."""
    from types import SimpleNamespace

    from omar_bulk import offload as offload_module
    from omar_bulk.offload import Offload

    now = [100.0]
    monkeypatch.setattr(offload_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    count = [0]

    def sometimes_slow() -> None:
        count[0] += 1
        if count[0] % 4 == 0:
            now[0] += 0.05

    async def main() -> int:
        disk = Offload(2, mode="auto")
        for _ in range(40):
            await disk.call(sometimes_slow)
            now[0] += 0.5
        disk.close()
        return disk.slow_calls  # stalls that ran on the event loop

    on_the_loop = asyncio.run(main())
    assert on_the_loop <= 3, f"{on_the_loop} of 10 stalls held the event loop"
