"""Files the user names on the command line: where output goes, and inputs read whole.

Output (the report, the metrics) goes where the user points it, and what that is decides how:

    "-"                     standard output, written through; never closed
    missing, regular file   a new file beside it (unpredictable name, O_EXCL, never through a
                            planted link), renamed over it when whole: no reader ever sees half
                            a file. A link to a regular file is followed: the file it names is
                            replaced, the link kept.
    character device, FIFO  written in place (``/dev/null``, a terminal, ``mkfifo``): renaming
                            over one would replace the node itself, /dev/null included when run
                            as root. Opened non-blocking, so a FIFO with no reader is refused at
                            once instead of hanging the process in ``open()``; a reader that stops
                            reading for ``STALL_SECONDS`` ends the write with an error.
    folder, socket, block   refused before the run (``check_output``): exit 2.

Only a regular file is ever read back (``read_back``): reading a FIFO would wait for a writer,
a device would answer with whatever it holds.

Inputs (certificates, keys, CA bundles, manifests) are read through ``read_whole``, which stops
one byte past a limit: a huge file, or one that never ends (``/dev/zero``), is refused without
being read to its end. A regular file is judged by its size before a byte is read. Pipes,
FIFOs and process substitution (``<(...)``) are read like files; ``-`` is standard input.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import select
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from .errors import LocalWriteError, OmarBulkError, UsageError

#: How a user names standard input or output.
STDIO = "-"
#: A FIFO or device that accepts nothing for this long ends the write: the run must end.
STALL_SECONDS = 30.0
_CHUNK = 1 << 16


def is_stdio(path: Path | str) -> bool:
    """Does ``path`` name standard input or output (``-``)?"""
    return os.fspath(path) == STDIO


def describe(path: Path | str) -> str:
    """What ``path`` is, in words, for messages ("a FIFO", "a folder", "missing")."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "missing"
    for test, name in _KINDS:
        if test(mode):
            return name
    return "something that is not a file"


_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISREG, "a file"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISBLK, "a block device (a disk)"),
)


# -- output ---------------------------------------------------------------------------------


def check_output(path: Path, option: str) -> None:
    """Refuse, before anything is sent, an output target that cannot make sense (exit 2):
    a folder, a socket, a block device. A missing file, a regular one, a character device
    (``/dev/null``) and a FIFO are fine; so is ``-``."""
    if is_stdio(path):
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing (or unreadable): the write says what is wrong, with its reason
    if stat.S_ISDIR(mode):
        raise UsageError(f"{option} {path} is a folder: give a file name")
    if stat.S_ISSOCK(mode) or stat.S_ISBLK(mode):
        raise UsageError(
            f"{option} {path} is {describe(path)}: give a file, a FIFO, a character device"
            " such as /dev/null, or - for standard output"
        )


def writes_in_place(path: Path) -> bool:
    """Is ``path`` written where it is (standard output, a device, a FIFO), not replaced?"""
    if is_stdio(path):
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode)


@contextlib.contextmanager
def write_output(path: Path, *, mode: int = 0o600, own: bool = False) -> Iterator[IO[bytes]]:
    """A binary handle whose bytes end up at ``path``, as the module docstring says for each
    kind of target. A regular file is replaced only when the block ends without an error
    (mode ``mode``, whatever the umask); a new file left half-written is removed.

    ``own``: ``path`` is one of omar-bulk's own files (a mark in its state folder), not one the
    user named: whatever is there, a link or a FIFO included, is renamed over, never followed
    or written into.

    Raises ``OSError`` as the system reports it (callers translate it with what they were
    writing), and ``LocalWriteError`` for a FIFO without a reader or one that stopped reading.
    """
    if own:
        with _replace(os.fspath(path), mode) as handle:
            yield handle
        return
    if is_stdio(path):
        sys.stdout.flush()  # whatever was printed before comes first
        stdout = sys.stdout.buffer
        yield stdout
        stdout.flush()
        return
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        if stat.S_ISDIR(info.st_mode) or stat.S_ISSOCK(info.st_mode) or stat.S_ISBLK(info.st_mode):
            check_output(path, "output")  # raises
        with _in_place(path) as handle:
            yield handle
        return
    # A link to a regular file: replace the file it names, not the link (``/dev/stdout``
    # redirected to a file is such a link).
    target = os.path.realpath(path) if info is not None else os.fspath(path)
    with _replace(target, mode) as handle:
        yield handle


def replace_by_name(target: Path, fill: Callable[[Path], object], *, mode: int = 0o600) -> None:
    """Write ``target`` whole through its name: ``fill`` writes the new temporary file beside
    it (whose name it is given), which is renamed over ``target`` once ``fill`` returns; on any
    error it is removed and ``target`` is as it was. For writers that need a file name rather
    than a handle (SQLite's backup, ``shutil.copyfile``); ``write_output(own=True)`` is the same
    with a handle. The temporary file is created as ``write_output``'s is."""
    with _beside(os.fspath(target), mode) as (fd, temp):
        os.close(fd)
        fill(Path(temp))


@contextlib.contextmanager
def _replace(target: str, mode: int) -> Iterator[IO[bytes]]:
    with _beside(target, mode) as (fd, _temp), os.fdopen(fd, "wb") as handle:
        yield handle


@contextlib.contextmanager
def _beside(target: str, mode: int) -> Iterator[tuple[int, str]]:
    """A new file beside ``target`` (mkstemp: an unpredictable name, O_EXCL, so never through a
    link planted by whoever can write there), mode ``mode`` whatever the umask, renamed over
    ``target`` when the block ends without an error and removed when it does not. The one
    place omar-bulk writes a whole file before anyone may see it."""
    folder = os.path.dirname(target) or "."
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
    try:
        yield fd, temp  # the caller owns the descriptor from here on, and closes it
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


@contextlib.contextmanager
def _in_place(path: Path) -> Iterator[IO[bytes]]:
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO nobody has open for reading
            raise LocalWriteError(
                f"{path} is a FIFO with no reader: nothing was written (start its reader"
                " first, for instance `cat {path} &`)"
            ) from None
        raise
    raw = _PatientWriter(fd, str(path))
    with io.BufferedWriter(raw, _CHUNK) as handle:  # type: ignore[type-var]
        yield handle


class _PatientWriter(io.RawIOBase):
    """Writes to a non-blocking descriptor, waiting (at most ``STALL_SECONDS`` at a time)
    whenever the reader at the other end is behind."""

    def __init__(self, fd: int, name: str) -> None:
        super().__init__()
        self._fd = fd
        self._name = name

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        while True:
            try:
                return os.write(self._fd, view)
            except BlockingIOError:
                pass
            waiting = select.poll()
            waiting.register(self._fd, select.POLLOUT)
            if not waiting.poll(STALL_SECONDS * 1000):
                raise LocalWriteError(
                    f"{self._name} accepted nothing for {STALL_SECONDS:g} s: its reader"
                    " stopped reading; the rest was not written"
                )

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        super().close()


def read_back(path: Path, limit: int) -> bytes | None:
    """The content of the file at ``path`` if it is a regular file of at most ``limit`` bytes;
    None for anything else (missing, a FIFO, a device, too large, unreadable). A FIFO is never
    opened for reading: that would wait for a writer."""
    if is_stdio(path):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        return b"".join(_chunks(fd, limit, lambda _: None))
    except (OSError, _Over):
        return None
    finally:
        os.close(fd)


# -- input ----------------------------------------------------------------------------------


def read_whole(
    path: Path,
    limit: int,
    fail: Callable[[str], OmarBulkError],
    *,
    text: bool = False,
) -> bytes:
    """All of the file at ``path`` (``-``: standard input), which may be a pipe, a FIFO or a
    device, read only as far as ``limit`` bytes. Every problem is ``fail(reason)``: missing,
    a folder, unreadable, or larger than the limit (found without reading past it). With
    ``text``, a NUL byte stops the reading at once: ``/dev/zero`` is not read up to the limit.
    """
    if is_stdio(path):
        return b"".join(_chunks(sys.stdin.fileno(), limit, fail, text))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise fail("no such file") from None
    except OSError as exc:
        raise fail(f"cannot read ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise fail("is a folder")
        if stat.S_ISREG(info.st_mode) and info.st_size > limit:
            raise fail(f"{_size(info.st_size)}, larger than the {_size(limit)} accepted")
        return b"".join(_chunks(fd, limit, fail, text))
    except OSError as exc:
        raise fail(f"cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


class _Over(Exception):
    """More than the limit: raised only where the caller has no error of its own."""


def _chunks(
    fd: int, limit: int, fail: Callable[[str], OmarBulkError | None], text: bool = False
) -> Iterator[bytes]:
    got = 0
    while True:
        try:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - got))
        except BlockingIOError:  # an inherited non-blocking pipe: wait for the writer
            select.select([fd], [], [])
            continue
        if not chunk:
            return
        got += len(chunk)
        if got > limit:
            error = fail(
                f"larger than the {_size(limit)} accepted (or it never ends, like a device):"
                " stopped reading there"
            )
            raise error if error is not None else _Over()
        if text and b"\x00" in chunk:
            error = fail("not a text file (it holds NUL bytes)")
            raise error if error is not None else _Over()
        yield chunk


def _size(count: int) -> str:
    if count >= 1 << 20 and count % (1 << 20) == 0:
        return f"{count >> 20} MiB"
    if count >= 1 << 20:
        return f"{count / (1 << 20):.1f} MiB"
    return f"{count} bytes"


__all__ = [
    "STALL_SECONDS",
    "STDIO",
    "check_output",
    "describe",
    "is_stdio",
    "read_back",
    "read_whole",
    "replace_by_name",
    "write_output",
    "writes_in_place",
]
