"""The output folder: where files land, how they get there whole, and nothing else.

A body is written to ``NAME.part`` beside its destination and renamed over ``NAME`` only once
it has passed every check, so a reader never sees a partial file under a data file's name.
Folders the tool creates are 0700 and files 0600: meter data is sensitive. Inside the
output folder nothing is reached through a symbolic link (see ``_FOLDER`` below).

Every OS error on the way is translated into ``LocalWriteError`` here, in ``translate_os_error``,
with a message that says what is wrong and where.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import queue
import stat
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import thread_time as _thread_time
from typing import Any, TypeVar

from .errors import LocalWriteError, UnsafePathError, UsageError

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

STATE_DIR = ".omar-bulk"
PART_SUFFIX = ".part"
#: The journal's file in the state folder (``journal.py`` reads and writes it).
JOURNAL_NAME = "journal.sqlite3"


#: What omar-bulk keeps for itself under OUT: its state, and the data folders.
OWNED = (STATE_DIR, "meter", "group")


def claimed(root: Path, path: Path, state: Path | None = None) -> bool:
    """Is ``path`` (existing or not) among the files omar-bulk keeps for itself under
    ``root``, or inside ``state``, the state folder in use wherever it is? A report or metrics
    file written there would overwrite the journal or a data file. Links in every path are
    resolved, so no spelling of the path gets past."""
    target = os.path.realpath(path)
    if state is not None:
        folder = os.path.realpath(state)
        if os.path.commonpath([folder, target]) == folder:
            return True
    base = os.path.realpath(root)
    if os.path.commonpath([base, target]) != base:
        return False
    inside = os.path.relpath(target, base).split(os.sep)
    return inside[0] in OWNED


def translate_os_error(exc: OSError, path: Path | str) -> LocalWriteError:
    """The one place OS write errors become omar-bulk errors."""
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        what = "the disk is full" if code == errno.ENOSPC else "the disk quota is exhausted"
        message = f"{what}: cannot write {path}; free some space and run the same command again"
    elif code in (errno.EACCES, errno.EPERM):
        message = f"permission denied writing {path}"
    elif code == errno.EROFS:
        message = f"{path} is on a read-only file system"
    else:
        message = f"cannot write {path}: {exc.strerror or exc}"
    error = LocalWriteError(message)
    error.__cause__ = exc
    return error


# Every folder below the root is opened relative to its parent's descriptor without following
# a link, and every file is created there with O_EXCL|O_NOFOLLOW: a link planted anywhere inside
# OUT (by whoever else can write there) is never followed, so a job running as root over a
# shared OUT writes, truncates and chmods nothing outside it. The output folder itself may be
# a link: the user chose it.
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OLD_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Open folder descriptors kept for reuse: one per id folder in use and its parents. Items come
# in plan order, id by id, so a small cache serves nearly every call.
_OPEN_FOLDERS = 64


def _close_all(folders: dict[str, int], evicted: set[int]) -> None:
    for fd in [*folders.values(), *evicted]:
        with contextlib.suppress(OSError):
            os.close(fd)
    folders.clear()
    evicted.clear()


def make_private_dirs(name: Path | str) -> None:
    """Create a folder the user named and its missing parents, each 0700 whatever the umask
    (links followed: the user chose the path)."""
    name = os.fspath(name)
    missing = []
    probe = name
    while probe and not os.path.isdir(probe):
        missing.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    try:
        for path in reversed(missing):
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                continue
            os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    except OSError as exc:
        raise translate_os_error(exc, name) from exc


class Storage:
    """Places files under ``root`` and keeps the tool's own state in ``root/.omar-bulk``.

    Files are named by their key, the posix path relative to ``root`` (as in the journal);
    paths are plain strings on the per-item path, where ``pathlib`` would cost more than the
    file system calls it prepares.

    Links planted inside the root are never followed (see ``_FOLDER``). A link where a folder
    belongs, a ``.part`` name that is a link, or a data file that is a link when its version
    must go to history, fails that item with ``UnsafePathError`` and is left as it is; the link
    and whatever it points to are not touched. A link in place of the state folder stops the
    run (``LocalWriteError``): without its journal there is nothing to run.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root = os.fspath(root)
        self._prefix = self._root.rstrip("/") + "/"
        self.state = root / STATE_DIR
        self.errors = self.state / "errors"
        self.history = self.state / "history"
        self._folders: dict[str, int] = {}
        # The folder cache is shared by the event loop and the ``Offload`` threads: a lock
        # guards it, and a descriptor in use (pinned) is closed only once its last user is
        # done, so an eviction never closes, and the kernel never reuses, a number in use.
        self._cache_lock = threading.Lock()
        self._pins: dict[int, int] = {}
        self._evicted: set[int] = set()
        self._closer = weakref.finalize(self, _close_all, self._folders, self._evicted)

    def close(self) -> None:
        """Close the folder descriptors kept open (also done when the object is collected)."""
        self._closer()

    def prepare(self) -> None:
        """Create the output and state folders (0700) if they are missing.

        The state folder must be a real folder owned by this user and writable by nobody else:
        whoever could write there could plant a link in place of the journal.
        """
        self._make_outside(self._root)
        try:
            fd = self._pin(STATE_DIR)
        except UnsafePathError as exc:
            raise LocalWriteError(str(exc)) from None
        try:
            info = os.fstat(fd)
        finally:
            self._unpin(fd)
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            raise LocalWriteError(
                f"{self.state} belongs to another user (uid {info.st_uid}); omar-bulk keeps its"
                " journal only in a folder of its own user"
            )
        if info.st_mode & 0o022:
            raise LocalWriteError(
                f"{self.state} can be written by other users; run `chmod 700 {self.state}`"
                " (omar-bulk makes it 0700) and run again"
            )

    def make_dirs(self, folder: Path | str) -> None:
        """Create ``folder`` and its missing parents, each 0700 whatever the umask.

        Below the root no link is followed (``UnsafePathError``)."""
        name = os.fspath(folder)
        relative = self._relative(name)
        if relative is None:
            self._make_outside(name)
        else:
            self._unpin(self._pin(relative))

    def _make_outside(self, name: str) -> None:
        make_private_dirs(name)

    def _relative(self, name: str) -> str | None:
        """``name`` relative to the root ("" for the root), or None outside it."""
        if name.startswith(self._prefix):
            return name[len(self._prefix) :].strip("/")
        if name.rstrip("/") == self._root.rstrip("/"):
            return ""
        try:
            relative = Path(name).relative_to(self.root)
        except ValueError:
            return None
        return "" if relative == Path() else relative.as_posix()

    def _split(self, path: Path | str) -> tuple[str, str]:
        relative = self._relative(os.fspath(path))
        if not relative:
            raise ValueError(f"{path} is not a file inside {self.root}")
        folder, _, name = relative.rpartition("/")
        return folder, name

    def _pin(self, relative: str, *, create: bool = True) -> int:
        """A descriptor of the folder ``relative`` to the root, made 0700 where missing, kept
        open until ``_unpin``: safe from any thread.

        Raises ``UnsafePathError`` where a component is a link or not a folder, and
        ``FileNotFoundError`` for a missing one when ``create`` is off.
        """
        with self._cache_lock:
            fd = self._folder(relative, create=create)
            self._pins[fd] = self._pins.get(fd, 0) + 1
            return fd

    def _unpin(self, fd: int) -> None:
        with self._cache_lock:
            left = self._pins.pop(fd) - 1
            if left:
                self._pins[fd] = left
            elif fd in self._evicted:
                self._evicted.discard(fd)
                os.close(fd)

    def _folder(self, relative: str, *, create: bool = True) -> int:
        """``_pin`` without the pin, for callers that hold the cache lock."""
        folders = self._folders
        fd = folders.pop(relative, None)
        if fd is not None:
            folders[relative] = fd  # most recently used last
            return fd
        if not relative:
            try:
                fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                if not create:
                    raise
                self._make_outside(self._root)
                fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise translate_os_error(exc, self._root) from exc
        else:
            parent_name, _, name = relative.rpartition("/")
            parent = self._folder(parent_name, create=create)
            fd = self._open_child(parent, name, relative, create)
        folders[relative] = fd
        if len(folders) > _OPEN_FOLDERS:
            oldest = folders.pop(next(iter(folders)))
            if oldest in self._pins:
                self._evicted.add(oldest)  # closed by its last user
            else:
                os.close(oldest)
        return fd

    def _open_child(self, parent: int, name: str, relative: str, create: bool) -> int:
        where = self._prefix + relative
        try:
            try:
                return os.open(name, _FOLDER, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, _FOLDER, dir_fd=parent)
            try:
                os.fchmod(fd, 0o700)  # mkdir's mode is filtered by the umask
            except OSError:
                os.close(fd)
                raise
            return fd
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and not create:
                raise
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _unsafe(where, parent, name) from None
            raise translate_os_error(exc, where) from exc

    def path_of(self, key: str) -> str:
        return f"{self._root}/{key}"

    def final(self, key: str) -> Path:
        return Path(self.path_of(key))

    def part(self, key: str) -> Path:
        return Path(self.path_of(key) + PART_SUFFIX)

    def _create(self, folder: int, name: str, where: str) -> int:
        """Create ``name`` (0600) in ``folder``, never through a link. A stale regular file of
        that name (a ``.part`` left by a killed run) is replaced; anything else is refused."""
        try:
            return os.open(name, _NEW_FILE, 0o600, dir_fd=folder)
        except FileExistsError:
            info = os.stat(name, dir_fd=folder, follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                raise _unsafe(where, folder, name) from None
            os.unlink(name, dir_fd=folder)
            return os.open(name, _NEW_FILE, 0o600, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _unsafe(where, folder, name) from None
            raise

    def write_whole(self, key: str, data: bytes, archive: Path | None = None) -> int:
        """Write a small body in one go: ``.part``, then rename over the final name.

        With ``archive``, the file it replaces is kept there first. Returns the new file's
        ``st_mtime_ns`` for the journal (a rename leaves it unchanged).
        """
        folder_name, _, name = key.rpartition("/")
        part = name + PART_SUFFIX
        where = self.path_of(key) + PART_SUFFIX
        folder = self._pin(folder_name)
        try:
            try:
                fd = self._create(folder, part, where)
            except OSError as exc:
                raise translate_os_error(exc, where) from exc
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    mtime = os.fstat(fd).st_mtime_ns
                finally:
                    os.close(fd)
                if archive is not None:
                    self.keep(self.path_of(key), archive)
                os.replace(part, name, src_dir_fd=folder, dst_dir_fd=folder)
                return mtime
            except UnsafePathError:
                self.discard(key)
                raise
            except OSError as exc:
                self.discard(key)
                raise translate_os_error(exc, where) from exc
        finally:
            self._unpin(folder)

    def create_part(self, key: str) -> int:
        """Create ``key``'s ``.part`` file (0600, never through a link); its descriptor."""
        folder_name, _, name = key.rpartition("/")
        where = self.path_of(key) + PART_SUFFIX
        folder = self._pin(folder_name)
        try:
            return self._create(folder, name + PART_SUFFIX, where)
        except OSError as exc:
            raise translate_os_error(exc, where) from exc
        finally:
            self._unpin(folder)

    async def open_part(self, key: str, fd: int | None = None) -> Any:
        """``key``'s ``.part`` file as an aiofiles handle for streaming, from ``fd`` if it was
        created already (``create_part``)."""
        import aiofiles  # only large bodies need it

        if fd is None:
            fd = self.create_part(key)
        try:
            return await aiofiles.open(fd, "wb")
        except BaseException:
            os.close(fd)
            raise

    def commit(self, key: str, archive: Path | None = None) -> int:
        """Move a complete ``.part`` into place (keeping the file it replaces in ``archive``);
        return the file's ``st_mtime_ns``."""
        folder_name, _, name = key.rpartition("/")
        final = self.path_of(key)
        try:
            folder = self._pin(folder_name)
        except OSError as exc:
            raise translate_os_error(exc, final) from exc
        try:
            if archive is not None:
                self.keep(final, archive)
            os.replace(name + PART_SUFFIX, name, src_dir_fd=folder, dst_dir_fd=folder)
            return os.stat(name, dir_fd=folder, follow_symlinks=False).st_mtime_ns
        except OSError as exc:
            raise translate_os_error(exc, final) from exc
        finally:
            self._unpin(folder)

    def history_path(self, key: str, fetched_at: float) -> Path:
        """A free name for the version of ``key`` fetched at ``fetched_at``, once replaced."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(fetched_at))
        archive = self.history / f"{key}.{stamp}"
        target, counter = archive, 1
        while os.path.lexists(target):
            target = archive.with_name(f"{archive.name}-{counter}")
            counter += 1
        return target

    def keep(self, final: Path | str, archive: Path) -> None:
        """Put the current ``final`` in ``archive``: a hard link, so ``final`` stays in place
        until the new version replaces it (a copy where links are not possible).

        ``final`` must be a regular file: a link there is refused (``UnsafePathError``), never
        followed, so its target is neither linked, copied nor chmodded."""
        source_folder, source_name = self._split(final)
        target_folder, target_name = self._split(archive)
        source_dir = self._pin(source_folder)
        try:
            self._keep(source_dir, source_name, target_folder, target_name, final, archive)
        finally:
            self._unpin(source_dir)

    def _keep(
        self,
        source_dir: int,
        source_name: str,
        target_folder: str,
        target_name: str,
        final: Path | str,
        archive: Path,
    ) -> None:
        try:
            fd = os.open(source_name, _OLD_FILE, dir_fd=source_dir)
        except FileNotFoundError:
            return  # nothing to keep
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _unsafe(os.fspath(final), source_dir, source_name) from None
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise _unsafe(os.fspath(final), source_dir, source_name)
            os.fchmod(fd, 0o600)  # the inode just checked: the archive shares it
            target_dir = self._pin(target_folder)
            try:
                # Without follow_symlinks, linkat links the name itself: should the file have
                # been swapped for a link since it was opened, history gets that link, inert.
                os.link(
                    source_name,
                    target_name,
                    src_dir_fd=source_dir,
                    dst_dir_fd=target_dir,
                    follow_symlinks=False,
                )
            except FileExistsError:
                raise
            except OSError:
                self._copy(fd, info, target_dir, target_name, os.fspath(archive))
            finally:
                self._unpin(target_dir)
        finally:
            os.close(fd)

    def _copy(self, source: int, info: os.stat_result, folder: int, name: str, where: str) -> None:
        """Copy an open file into a new one (where hard links are not possible)."""
        target = self._create(folder, name, where)
        try:
            os.lseek(source, 0, os.SEEK_SET)
            while block := os.read(source, 1 << 20):
                view = memoryview(block)
                while view:
                    view = view[os.write(target, view) :]
            os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
        finally:
            os.close(target)

    def retire(self, key: str, archive: Path) -> None:
        """Move ``key`` out of the data folders into ``archive`` (its new version is empty)."""
        folder_name, _, name = key.rpartition("/")
        try:
            self.keep(self.path_of(key), archive)
            folder = self._pin(folder_name)
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=folder)
            finally:
                self._unpin(folder)
        except OSError as exc:
            raise translate_os_error(exc, archive) from exc

    def discard(self, key: str) -> None:
        """Remove ``key``'s ``.part`` file if there is one (a link is removed, never followed).
        Never raises."""
        folder_name, _, name = key.rpartition("/")
        with contextlib.suppress(OSError, UnsafePathError):
            folder = self._pin(folder_name, create=False)
            try:
                os.unlink(name + PART_SUFFIX, dir_fd=folder)
            finally:
                self._unpin(folder)

    def sweep_parts(self, folder: str) -> None:
        """Remove every ``.part`` file in ``folder`` (relative to the root): files and links
        alike, since removing a link leaves its target alone. Never raises; a folder that is a
        link is not entered."""
        try:
            fd = self._pin(folder.strip("/"), create=False)
        except (OSError, UnsafePathError):
            return
        try:
            names = [name for name in os.listdir(fd) if name.endswith(PART_SUFFIX)]
            for name in names:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=fd)
        except OSError:
            return
        finally:
            self._unpin(fd)

    def save_error_page(self, key: str, body: bytes) -> Path:
        """Keep an HTML answer for diagnosis; return where it went."""
        folder = self._pin(f"{STATE_DIR}/errors/{key}".rpartition("/")[0])
        try:
            return self._save_page(folder, key, body)
        finally:
            self._unpin(folder)

    def _save_page(self, folder: int, key: str, body: bytes) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.errors / f"{key}.{stamp}.html"
        counter = 0
        while True:
            try:
                fd = os.open(target.name, _NEW_FILE, 0o600, dir_fd=folder)
                break
            except FileExistsError:
                counter += 1
                target = self.errors / f"{key}.{stamp}-{counter}.html"
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise _unsafe(os.fspath(target), folder, target.name) from None
                raise translate_os_error(exc, target) from exc
        try:
            with open(fd, "wb") as handle:
                handle.write(body)
        except OSError as exc:
            raise translate_os_error(exc, target) from exc
        return target


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


# --- where the journal and the lock live ------------------------------------------------------

#: statfs(2) ``f_type`` of the file systems on which SQLite's WAL mode and POSIX locks cannot
#: be trusted: WAL needs shared memory between processes on one host, and locks over NFS or
#: SMB are advisory, emulated, or lost on a reconnect (sqlite.org/wal.html, "WAL does not work
#: over a network filesystem"). Values from linux/magic.h.
NETWORK_FILESYSTEMS = {
    0x6969: "NFS",
    0x517B: "SMB",
    0xFF534D42: "CIFS",
    0xFE534D42: "SMB2",
    0x65735546: "FUSE",
    0x01021997: "9P",
    0x00C36400: "Ceph",
    0x5346414F: "AFS",
    0x73757245: "Coda",
    0x0BD00BD0: "Lustre",
}
#: Where the journal goes by default for an OUT on a network file system: a folder of this
#: machine's own, one per OUT (named by a hash of OUT's real path).
STATE_HOME_NAME = "omar-bulk"


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


def _statfs_type(path: str) -> int | None:
    """statfs(2)'s ``f_type`` for ``path`` (Linux), or None where it cannot be asked."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    # struct statfs opens with f_type, a C long; 256 bytes hold the whole struct with room.
    buffer = ctypes.create_string_buffer(256)
    if libc.statfs(os.fsencode(path), buffer) != 0:
        return None
    return ctypes.c_ulong.from_buffer(buffer).value & 0xFFFFFFFF


def network_filesystem(path: Path | str) -> str | None:
    """The name of the network file system ``path`` is on (its nearest existing folder), or
    None for a local one or where it cannot be told."""
    probe = os.path.abspath(os.fspath(path))
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return None
        probe = parent
    kind = _statfs_type(probe)
    return None if kind is None else NETWORK_FILESYSTEMS.get(kind)


def default_state_home() -> Path:
    """$XDG_STATE_HOME/omar-bulk, or ~/.local/state/omar-bulk."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / STATE_HOME_NAME


def state_folder(out: Path, given: Path | None) -> tuple[Path, str | None]:
    """Where ``out``'s journal, lock and report live, and a warning to show, if any.

    ``given`` (``--state-dir``) wins. Otherwise ``OUT/.omar-bulk``, unless OUT is on a network
    file system: then a folder of this machine's own, per OUT, and a warning that says so.
    """
    if given is not None:
        return given, None
    kind = network_filesystem(out)
    if kind is None:
        return out / STATE_DIR, None
    import hashlib

    # The real path: every spelling of OUT (a link to it, a relative path) maps to one folder.
    real = os.path.realpath(out)
    name = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    folder = default_state_home() / name
    return folder, (
        f"{out} is on a network file system ({kind}), where SQLite's journal and file locks"
        f" are not reliable: the journal, lock and report are kept in {folder} instead."
        " Give --state-dir (or OMAR_STATE_DIR) to choose the folder, the same for every"
        " fetch and status of this output folder"
    )


#: In a state folder outside OUT: the real path of the output folder it serves. The journal's
#: keys are relative to OUT, so one folder given for two OUTs would mix their files.
SERVES_NAME = "output-folder"
#: In ``OUT/.omar-bulk``: the real path of the state folder outside OUT that runs use, so that
#: a command given no ``--state-dir`` says where the journal is instead of starting afresh.
POINTER_NAME = "state-folder"


@dataclass(frozen=True, slots=True)
class StatePlace:
    """Where a command keeps (or reads) OUT's journal, lock and report: ``state_folder``'s
    answer, checked against what earlier runs left (``locate_state``)."""

    out: Path
    folder: Path
    #: ``folder`` is not ``OUT/.omar-bulk`` (``--state-dir``, or the default for a share).
    separate: bool
    #: What the user should be told (a share's warning, a pointer to a vanished folder).
    notes: tuple[str, ...]

    @property
    def pointer(self) -> Path:
        return self.out / STATE_DIR / POINTER_NAME


def locate_state(out: Path, given: Path | None) -> StatePlace:
    """``state_folder`` for ``out`` and ``given``, checked; writes nothing (the dry run and
    ``status`` use it as they are).

    Raises ``UsageError`` when the folder serves another output folder, or when OUT's pointer
    names another state folder that still exists: the journal is there, and a run without it
    would fetch the whole archive again. A pointer to a folder that is gone is a note.
    """
    folder, warning = state_folder(out, given)
    notes = [warning] if warning else []
    real = os.path.realpath(folder)
    separate = real != os.path.realpath(out / STATE_DIR)
    place = StatePlace(out, folder, separate, ())
    if separate:
        serves = _read_mark(folder / SERVES_NAME)
        if serves is not None and serves != os.path.realpath(out):
            raise UsageError(
                f"the state folder {folder} keeps the journal of the output folder {serves},"
                f" not of {out}: give each output folder its own --state-dir (or"
                f" OMAR_STATE_DIR). If {serves} was moved to {out}, remove"
                f" {folder / SERVES_NAME} and run again"
            )
    named = _read_mark(place.pointer)
    if named is not None and named != real:
        if os.path.isdir(named):
            raise UsageError(
                f"the journal of {out} is kept in {named} ({place.pointer} says so), not in"
                f" {folder}: give --state-dir {named} or set OMAR_STATE_DIR={named}, the same"
                f" for every fetch, dry run and status of {out}. To start over in {folder}"
                f" instead, remove {place.pointer}"
            )
        notes.append(
            f"{place.pointer} says the journal of {out} was kept in {named}, which no longer"
            f" exists: going on with {folder}"
        )
    return StatePlace(out, folder, separate, tuple(notes))


def journal_folder(out: Path, given: Path | None) -> tuple[Path, list[str]]:
    """Where a reader (the dry run, ``status``) finds ``out``'s journal, and notes for the
    user (see ``locate_state``, whose errors it raises). A state folder outside OUT that has no
    journal yet while ``OUT/.omar-bulk`` has one (an archive of an earlier release on a
    share): that one, which the next run takes over (``run.fetch``)."""
    place = locate_state(out, given)
    notes = list(place.notes)
    inside = out / STATE_DIR
    separate_but_empty = place.separate and not (place.folder / JOURNAL_NAME).exists()
    if separate_but_empty and (inside / JOURNAL_NAME).is_file():
        notes.append(
            f"reading the journal in {inside}: the next run copies it to {place.folder},"
            " where it is kept from then on"
        )
        return inside, notes
    return place.folder, notes


def settle_state(place: StatePlace) -> None:
    """For a run: record which OUT a separate state folder serves, and leave in
    ``OUT/.omar-bulk`` a pointer to it; with the state in ``OUT/.omar-bulk``, remove a
    pointer left by earlier runs (``locate_state`` let it pass: its folder is gone)."""
    try:
        if place.separate:
            own = os.path.realpath(place.out)
            if _read_mark(place.folder / SERVES_NAME) != own:
                _write_mark(place.folder / SERVES_NAME, own)
            real = os.path.realpath(place.folder)
            if _read_mark(place.pointer) != real:
                _write_mark(place.pointer, real)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(place.pointer)
    except OSError as exc:
        raise translate_os_error(exc, place.pointer) from exc


_MARK_MAX = 1 << 16


def _read_mark(path: Path) -> str | None:
    """The path a mark file holds, or None where there is none (or none readable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, _MARK_MAX)
    except OSError:
        return None
    finally:
        os.close(fd)
    data = data.removesuffix(b"\n")
    return os.fsdecode(data) if data else None


def _write_mark(path: Path, value: str) -> None:
    """Write a mark file whole: a temporary file (0600, never through a link), renamed."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    fd = os.open(temporary, _NEW_FILE, 0o600)
    try:
        try:
            os.write(fd, os.fsencode(value) + b"\n")
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _unsafe(where: str, folder: int, name: str) -> UnsafePathError:
    """The error for a stranger at ``name``: says what it is, and what becomes of it. A
    ``.part`` name is omar-bulk's own, so the end of the run removes whatever stands there (the
    link, never its target); anything else is left for the user to look at."""
    try:
        mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
    except OSError:
        mode = 0
    what = "a symbolic link" if stat.S_ISLNK(mode) else "not what omar-bulk put there"
    if name.endswith(PART_SUFFIX):
        return UnsafePathError(
            f"{where} is {what}; omar-bulk never writes through links inside the output folder:"
            " nothing was written, the run removes it at its end (not what it points to), and"
            " the next run fetches the file"
        )
    return UnsafePathError(
        f"{where} is {what}; omar-bulk never follows links inside the output folder and left"
        " it alone: remove it and run again"
    )
