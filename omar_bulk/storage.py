"""The output folder: where files land, how they get there whole, and nothing else.

A body is written to ``NAME.part`` beside its destination and renamed over ``NAME`` only once
it has passed every check, so a reader never sees a partial file under a data file's name.
Folders the tool creates are 0700 and files 0600: meter data is sensitive. Inside the
output folder nothing is reached through a symbolic link (see ``_FOLDER`` below).

Every OS error on the way is translated into ``LocalWriteError`` here, in ``translate_os_error``,
with a message that says what is wrong and where.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from .errors import LocalWriteError, UnsafePathError

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

    def prepare(self) -> os.stat_result:
        """Create the output and state folders (0700) if they are missing; return what the
        state folder is, read through its own descriptor (never through a link), for the
        archive to judge (``archive.judge_state_folder``: one rule for every state folder)."""
        self._make_outside(self._root)
        try:
            fd = self._pin(STATE_DIR)
        except UnsafePathError as exc:
            raise LocalWriteError(str(exc)) from None
        try:
            return os.fstat(fd)
        finally:
            self._unpin(fd)

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
        if name in (".", ".."):
            # ".." is no link, so O_NOFOLLOW lets it pass: it would lead out of the root.
            raise UnsafePathError(
                f"{where} names a folder outside the output folder; omar-bulk left it alone"
            )
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
        return the file's ``st_mtime_ns``. The rename is the last step, as in
        ``write_whole``: an error means it did not happen."""
        folder_name, _, name = key.rpartition("/")
        final = self.path_of(key)
        try:
            folder = self._pin(folder_name)
        except OSError as exc:
            raise translate_os_error(exc, final) from exc
        try:
            part = name + PART_SUFFIX
            # A rename leaves the time stamp as it is: read it first.
            mtime = os.stat(part, dir_fd=folder, follow_symlinks=False).st_mtime_ns
            if archive is not None:
                self.keep(final, archive)
            os.replace(part, name, src_dir_fd=folder, dst_dir_fd=folder)
            return mtime
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
        """Copy an open file into a new one (where hard links are not possible). A copy cut
        short (a full disk) is removed: half a version in history would stand for nothing."""
        target = self._create(folder, name, where)
        try:
            try:
                os.lseek(source, 0, os.SEEK_SET)
                while block := os.read(source, 1 << 20):
                    view = memoryview(block)
                    while view:
                        view = view[os.write(target, view) :]
                os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
            finally:
                os.close(target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=folder)
            raise

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


__all__ = [
    "JOURNAL_NAME",
    "OWNED",
    "PART_SUFFIX",
    "STATE_DIR",
    "Storage",
    "claimed",
    "make_private_dirs",
    "translate_os_error",
]
