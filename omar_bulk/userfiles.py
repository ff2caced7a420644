"""Files the user names on the command line: where output goes, and inputs read whole.

Output (the report, the metrics) goes where the user points it, and what that is decides how:

    "-"                     standard output, written through; never closed
    /dev/stdout, /dev/stderr, /dev/fd/N, /proc/self/fd/N
                            the process's own open streams: written through the descriptor
                            already open (appending where the shell's ``>>`` appends), as
                            "-" is, never reopened or replaced
    missing, regular file   a new file beside it (unpredictable name, O_EXCL, never through a
                            planted link), renamed over it when whole: no reader ever sees half
                            a file. A link to a regular file is followed, if it is safe (below):
                            the file it names is replaced, the link kept.
    character device, FIFO  written in place (``/dev/null``, a terminal, ``mkfifo``): renaming
                            over one would replace the node itself, /dev/null included when run
                            as root. Opened non-blocking, so a FIFO with no reader is refused at
                            once instead of hanging the process in ``open()``; a reader that stops
                            reading for ``STALL_SECONDS`` ends the write with an error.
    folder, socket, block   refused before the run (``check_output``): exit 2.

Links on the way to an output (the file itself or any folder above it) are followed only when
no other user could have made or changed them: the link and the folder holding it belong to the
running user or to root, and that folder is writable by no one else (in a sticky folder such as
/tmp, the link's owner is what counts). Otherwise the target is refused (exit 2 before the run),
as systemd refuses an "unsafe path transition" and the kernel's ``protected_symlinks`` a link in
/tmp: run as root, a link another user planted (in a node_exporter textfile folder it owns, say)
would otherwise make root replace, or write into, any file or device the link names. The path
is walked folder by folder through open descriptors, and the file is created and renamed
relative to the last one, so a link swapped in after the check is never followed either.

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
import re
import secrets
import select
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from .errors import LocalWriteError, OmarBulkError, UsageError
from .text import printable

#: How a user names standard input or output.
STDIO = "-"
#: A FIFO or device that accepts nothing for this long ends the write: the run must end.
STALL_SECONDS = 30.0
_CHUNK = 1 << 16
#: Links followed on the way to one output, at most (the kernel's own limit is 40).
_MAX_LINKS = 40
#: Folders are held open while the path is walked; O_PATH needs no read access to them.
_FOLDER = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC


def is_stdio(path: Path | str) -> bool:
    """Does ``path`` name standard input or output (``-``)?"""
    return os.fspath(path) == STDIO


def own_stream(path: Path | str) -> int | None:
    """The descriptor ``path`` names if it names one of the process's own open streams
    (``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``, ``/proc/self/fd/N``), else None."""
    text = os.fspath(path)
    if text == "/dev/stdout":
        return 1
    if text == "/dev/stderr":
        return 2
    match = re.fullmatch(rf"/dev/fd/(\d+)|/proc/(?:self|{os.getpid()})/fd/(\d+)", text)
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


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
    (``/dev/null``) and a FIFO are fine; so is ``-`` or another of the process's own open
    streams. A link another user could have made or changed is refused (module docstring)."""
    if is_stdio(path):
        return
    shown = printable(os.fspath(path))
    stream = own_stream(path)
    if stream is not None:
        try:
            os.fstat(stream)
        except OSError:
            raise UsageError(
                f"{option} {shown} names descriptor {stream}, which this process does not have open"
            ) from None
        return
    try:
        folder, name = _resolve(os.fspath(path), lambda why: UsageError(f"{option} {why}"))
    except OSError:
        return  # missing (or unreadable): the write says what is wrong, with its reason
    try:
        mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
    except FileNotFoundError:
        mode = None
    except OSError:
        os.close(folder)
        return
    try:
        if (mode is None or stat.S_ISREG(mode)) and not os.access(
            ".", os.W_OK | os.X_OK, dir_fd=folder
        ):
            # A file is written beside its name and renamed: the folder must take a new file.
            # Found now, not once the run is over.
            raise UsageError(
                f"{option} {shown}: its folder does not let omar-bulk create a file there"
                " (no write permission, read-only or immutable): give another place"
            )
    finally:
        os.close(folder)
    if mode is None:
        return
    if stat.S_ISDIR(mode):
        raise UsageError(f"{option} {shown} is a folder: give a file name")
    if stat.S_ISSOCK(mode) or stat.S_ISBLK(mode):
        raise UsageError(
            f"{option} {shown} is {describe(path)}: give a file, a FIFO, a character device"
            " such as /dev/null, or - for standard output"
        )


def writes_in_place(path: Path) -> bool:
    """Is ``path`` written where it is (standard output, a device, a FIFO), not replaced?"""
    if is_stdio(path) or own_stream(path) is not None:
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
    stream = 1 if is_stdio(path) else own_stream(path)
    if stream is not None:
        with _through(stream) as handle:
            yield handle
        return
    # A link that was safe before the run but is not now: exit 4, the run's work is done.
    folder, name = _resolve(os.fspath(path), LocalWriteError)
    try:
        try:
            info: os.stat_result | None = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            info = None
        if info is not None and not stat.S_ISREG(info.st_mode):
            if (
                stat.S_ISDIR(info.st_mode)
                or stat.S_ISSOCK(info.st_mode)
                or stat.S_ISBLK(info.st_mode)
            ):
                check_output(path, "output")  # raises
            with _in_place(folder, name, printable(os.fspath(path))) as handle:
                yield handle
            return
        # A link to a regular file: the file it names is replaced, in the folder the walk
        # ended in, not the link.
        with _replace_in(folder, name, mode) as handle:
            yield handle
    finally:
        os.close(folder)


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


def _resolve(path: str, refuse: Callable[[str], OmarBulkError]) -> tuple[int, str]:
    """Walk ``path`` folder by folder through open descriptors, following only safe links
    (module docstring; an unsafe one is ``refuse(reason)``): the descriptor of the folder the
    walk ends in, which the caller closes, and the name there, which is not a link (it may be
    missing). ``OSError`` for a missing folder on the way, a loop, or no access."""
    pending = _parts(path)
    folder = os.open("/" if path.startswith("/") else ".", _FOLDER)
    links = 0
    try:
        while pending:
            name = pending.pop()
            try:
                info = os.stat(name, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                if not pending:
                    return folder, name  # a new file there
                raise
            if stat.S_ISLNK(info.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                _check_link(os.fstat(folder), info, path, name, refuse)
                target = os.readlink(name, dir_fd=folder)
                if target.startswith("/"):
                    os.close(folder)
                    folder = os.open("/", _FOLDER)
                pending.extend(_parts(target))
                continue
            if not pending:
                return folder, name
            inner = os.open(name, _FOLDER | os.O_NOFOLLOW, dir_fd=folder)
            os.close(folder)
            folder = inner
        return folder, "."
    except BaseException:
        os.close(folder)
        raise


def _parts(path: str) -> list[str]:
    """The components of ``path``, last first (the walk pops them)."""
    return [part for part in reversed(path.split("/")) if part not in ("", ".")]


def _check_link(
    folder: os.stat_result,
    link: os.stat_result,
    path: str,
    name: str,
    refuse: Callable[[str], OmarBulkError],
) -> None:
    trusted = (0, os.geteuid())
    others_write = folder.st_mode & 0o022 and not folder.st_mode & stat.S_ISVTX
    if folder.st_uid in trusted and link.st_uid in trusted and not others_write:
        return
    raise refuse(
        f"{printable(path)} leads through the link {printable(name)}, which another user"
        " could have made or changed (it or its folder belongs to someone else, or others"
        " can write that folder): omar-bulk does not follow it; give the path it points to"
        " if you trust it"
    )


@contextlib.contextmanager
def _through(fd: int) -> Iterator[IO[bytes]]:
    """One of the process's own open streams, written through the descriptor already open
    (its offset and O_APPEND shared with whoever opened it); never closed."""
    if fd == 1:
        sys.stdout.flush()  # whatever was printed before comes first
        stdout = sys.stdout.buffer
        yield stdout
        stdout.flush()
        return
    if fd == 2:
        sys.stderr.flush()
    try:
        handle = open(fd, "wb", closefd=False)  # noqa: SIM115  (flushed below, never closed)
    except OSError as exc:
        raise LocalWriteError(f"descriptor {fd} is not open for writing ({exc.strerror})") from None
    yield handle
    handle.flush()


@contextlib.contextmanager
def _replace_in(folder: int, name: str, mode: int) -> Iterator[IO[bytes]]:
    """``_beside`` relative to an open folder: the new file is created (O_EXCL, never through
    a link) and renamed over ``name`` in that folder, whatever is done to the path meanwhile."""
    temp = f".{name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, 0o600, dir_fd=folder)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        os.unlink(temp, dir_fd=folder)
        raise
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=folder)
        raise


@contextlib.contextmanager
def _in_place(folder: int, name: str, shown: str) -> Iterator[IO[bytes]]:
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(name, flags, dir_fd=folder)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO nobody has open for reading
            raise LocalWriteError(
                f"{shown} is a FIFO with no reader: nothing was written (start its reader"
                f" first, for instance `cat {shown} &`)"
            ) from None
        raise
    if stat.S_ISREG(os.fstat(fd).st_mode):  # replaced by a file since it was looked at
        os.close(fd)
        raise LocalWriteError(f"{shown} became a regular file while being written: not written")
    raw = _PatientWriter(fd, shown)
    with io.BufferedWriter(raw, _CHUNK) as handle:  # type: ignore[type-var]
        yield handle


class _PatientWriter(io.RawIOBase):
    """Writes to a non-blocking descriptor, waiting (at most ``STALL_SECONDS`` at a time)
    whenever the reader at the other end is behind."""

    def __init__(self, fd: int, name: str) -> None:
        super().__init__()
        self._fd = fd
        self._name = name
        self._stalled = False

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        if self._stalled:  # the buffer's close flushes again: it must not wait a second time
            raise LocalWriteError(f"{self._name}: its reader stopped reading")
        while True:
            try:
                return os.write(self._fd, view)
            except BlockingIOError:
                pass
            waiting = select.poll()
            waiting.register(self._fd, select.POLLOUT)
            if not waiting.poll(STALL_SECONDS * 1000):
                self._stalled = True
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
    "own_stream",
    "read_back",
    "read_whole",
    "replace_by_name",
    "write_output",
    "writes_in_place",
]
