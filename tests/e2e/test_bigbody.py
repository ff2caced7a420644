"""A large body's way to disk (download._BlockSink) and the slow-call test that decides
whether file system calls leave the event loop (offload.Offload)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import pytest

from omar_bulk import download
from omar_bulk import offload as offload_module
from omar_bulk.download import _BlockSink
from omar_bulk.errors import LocalWriteError
from omar_bulk.offload import SLOW_CALL, Offload
from omar_bulk.standin.certs import TestPKI
from omar_bulk.standin.server import Faults, ServerThread, serve_in_thread

from ..conftest import Cli, expected_body, journal_rows

#: Uneven pieces, as TLS records and a decoder hand them over; more pieces than one
#: ``writev`` takes, so the batching is exercised too.
PIECES = [bytes([n % 251]) * (1 + (n * 7919) % 3000) for n in range(1500)]


def _open(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def _stream(path: Path, disk: Offload, blocks: list[list[bytes]]) -> str:
    hasher = hashlib.sha256()

    async def main() -> None:
        sink = _BlockSink(_open(path), hasher, path, disk)
        for block in blocks:
            await sink.put(block)
        await sink.close()

    asyncio.run(main())
    return hasher.hexdigest()


@pytest.mark.parametrize("mode", ["inline", "thread"])
def test_blocks_land_in_order_and_are_hashed_once(tmp_path: Path, mode: str) -> None:
    """Inline (a quick disk) or on threads (a slow one), the file and the hash are the body's,
    byte for byte; on a slow disk every block's write is an ``Offload`` call of its own."""
    blocks = [PIECES[:700], PIECES[700:701], PIECES[701:]]
    disk = Offload(4, mode=mode)
    digest = _stream(tmp_path / "big.part", disk, blocks)
    disk.close()
    body = b"".join(PIECES)
    assert (tmp_path / "big.part").read_bytes() == body
    assert digest == hashlib.sha256(body).hexdigest()
    # The write of each block, and the close, went through ``disk``: never on the loop when
    # the disk is slow (before, aiofiles wrote past it).
    assert disk.hops == (len(blocks) + 1 if mode == "thread" else 0)


def test_a_short_writev_is_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``writev`` may write less than asked (a signal, a nearly full disk): the rest follows."""
    real = os.writev

    def short(fd: int, buffers: list[bytes]) -> int:
        return real(fd, [buffers[0][: len(buffers[0]) // 2 + 1]])

    monkeypatch.setattr(os, "writev", short)
    disk = Offload(1, mode="inline")
    digest = _stream(tmp_path / "big.part", disk, [PIECES[:40], PIECES[40:90]])
    body = b"".join(PIECES[:90])
    assert (tmp_path / "big.part").read_bytes() == body
    assert digest == hashlib.sha256(body).hexdigest()


def test_a_full_disk_is_a_local_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, buffers: list[bytes]) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "writev", full)
    disk = Offload(2, mode="thread")
    with pytest.raises(LocalWriteError, match="the disk is full"):
        _stream(tmp_path / "big.part", disk, [PIECES[:10], PIECES[10:20]])
    disk.close()


def test_a_cancelled_download_never_closes_the_file_under_a_running_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while a block is being written on a thread, the download's clean-up waits
    for that write before it closes the descriptor (which the process could otherwise hand
    to another file while the write still targets it)."""
    started = threading.Event()
    seen: list[bool] = []
    real = download._write_all

    def slow_write(fd: int, chunks: list[bytes]) -> None:
        started.set()
        time.sleep(0.2)
        try:
            os.fstat(fd)
            seen.append(True)
        except OSError:
            seen.append(False)
        real(fd, chunks)

    monkeypatch.setattr(download, "_write_all", slow_write)
    path = tmp_path / "big.part"
    fd = _open(path)

    async def main() -> None:
        disk = Offload(2, mode="thread")
        sink = _BlockSink(fd, hashlib.sha256(), path, disk)

        async def receive() -> None:
            try:
                await sink.put([b"a" * 10])
                await sink.put([b"b" * 10])  # waits for the first block: cancelled here
            except asyncio.CancelledError:
                await sink.abort()
                raise

        task = asyncio.create_task(receive())
        deadline = time.monotonic() + 5
        while not started.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        disk.close()

    asyncio.run(main())
    assert seen == [True]
    with pytest.raises(OSError):
        os.fstat(fd)  # closed by the clean-up, after the write
    assert path.read_bytes() == b"a" * 10


def _flips(monkeypatch: pytest.MonkeyPatch, usage: list[tuple[int, int, float]]) -> int:
    """Hops after one inline call that took 2 x SLOW_CALL, with ``usage`` as the thread's
    (voluntary switches, involuntary switches, processor time) before and after it."""
    now = [100.0]
    monkeypatch.setattr(offload_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    readings = iter(usage)
    monkeypatch.setattr(offload_module, "_thread_usage", lambda: next(readings))

    def call() -> None:
        now[0] += SLOW_CALL * 2

    async def main() -> int:
        disk = Offload(2, mode="auto")
        await disk.call(call)
        monkeypatch.setattr(offload_module, "_thread_usage", lambda: None)
        await disk.call(lambda: None)
        disk.close()
        return disk.hops

    return asyncio.run(main())


def test_a_call_that_was_only_preempted_does_not_send_calls_to_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a busy machine the scheduler may take the processor away in the middle of a quick
    call: it never waited and used little time itself, so it says nothing about the disk."""
    assert _flips(monkeypatch, [(5, 7, 1.0), (5, 8, 1.0002)]) == 0


@pytest.mark.parametrize(
    "after",
    [(6, 7, 1.0002), (5, 8, 1.0 + SLOW_CALL * 1.5), (5, 7, 1.0002)],
    ids=["waited", "busy in the kernel", "no switch at all"],
)
def test_a_call_that_waited_or_worked_is_slow(
    monkeypatch: pytest.MonkeyPatch, after: tuple[int, int, float]
) -> None:
    """A call that waited (a disk, a network share), or spent the time itself, is slow: the
    next call goes to a thread."""
    assert _flips(monkeypatch, [(5, 7, 1.0), after]) == 1


def test_thread_usage_reads_this_threads_switches() -> None:
    before = offload_module._thread_usage()
    if before is None:
        pytest.skip("getrusage(RUSAGE_THREAD) is Linux only")
    time.sleep(0.01)  # sleeping is a voluntary switch
    after = offload_module._thread_usage()
    assert after is not None
    assert after[0] > before[0]
    assert offload_module._preempted(before) is False


# --- the streamed path end to end: bodies over WHOLE_BODY_LIMIT ----------------------------

#: Filler that takes every body past ``WHOLE_BODY_LIMIT``, so it is streamed to a ``.part``.
BIG = 2 * download.WHOLE_BODY_LIMIT + 12_345
M1_FEB = ["--meter", "M1", "--start", "2024-02-01", "--end", "2024-02-29"]
FEB_FILE = "meter/M1/M1_20240201_20240229_PST.mdef"


@pytest.fixture
def big_faults() -> Faults:
    return Faults(retry_after=0, padding=BIG)


@pytest.fixture
def big_server(pki: TestPKI, big_faults: Faults) -> Iterator[ServerThread]:
    with serve_in_thread(pki, big_faults) as running:
        yield running


def _summary(report: Path) -> dict[str, object]:
    return dict(json.loads(report.read_text())["summary"])


def test_a_large_body_fetched_again_is_unchanged_revised_or_cut_like_a_small_one(
    pki: TestPKI, tmp_path: Path, big_server: ServerThread, big_faults: Faults
) -> None:
    """The streamed path settles a file as the whole-body path does: the same bytes again are
    unchanged (the file and its time stamp untouched, no ``.part``, nothing in history); new
    bytes replace the file and the old ones go to history, the journal holding the new hash;
    a body cut short leaves the last good file and no ``.part``."""
    cli = Cli(pki, tmp_path / "out", big_server)
    path = cli.out / FEB_FILE
    first = cli("fetch", *M1_FEB)
    assert first.exit_code == 0, first.stderr
    original = path.read_bytes()
    assert len(original) > download.WHOLE_BODY_LIMIT
    assert original == expected_body(
        "meter", "M1", date(2024, 2, 1), date(2024, 2, 29), faults=big_faults
    )
    stamp = path.stat().st_mtime_ns

    report = tmp_path / "same.json"
    same = cli("fetch", *M1_FEB, "--overwrite", "--report", str(report))
    assert same.exit_code == 0, same.stderr
    assert (_summary(report)["unchanged"], _summary(report)["revised"]) == (1, 0)
    assert path.stat().st_mtime_ns == stamp and path.read_bytes() == original
    assert not list(cli.out.rglob("*.part"))
    assert not (cli.out / ".omar-bulk" / "history").exists()

    big_faults.revision = 1
    report = tmp_path / "revised.json"
    revised = cli("fetch", *M1_FEB, "--overwrite", "--report", str(report))
    assert revised.exit_code == 0, revised.stderr
    assert (_summary(report)["revised"], _summary(report)["unchanged"]) == (1, 0)
    new = path.read_bytes()
    assert new == expected_body(
        "meter", "M1", date(2024, 2, 1), date(2024, 2, 29), faults=big_faults
    )
    kept = list((cli.out / ".omar-bulk" / "history").rglob("*.mdef.*"))
    assert [k.read_bytes() == original for k in kept] == [True]
    assert journal_rows(cli.out)[FEB_FILE] == (
        "downloaded",
        len(new),
        hashlib.sha256(new).hexdigest(),
    )
    assert not list(cli.out.rglob("*.part"))

    big_faults.revision = 2
    big_faults.script = {"M1": ["cut*"]}
    cut = cli("fetch", *M1_FEB, "--overwrite", "--retries", "1")
    assert cut.exit_code == 1, cut.stderr
    assert path.read_bytes() == new
    assert not list(cli.out.rglob("*.part"))
    assert journal_rows(cli.out)[FEB_FILE][2] == hashlib.sha256(new).hexdigest()
