"""The output folder: where files land, how they get there whole, and nothing else.

A body is written to ``NAME.part`` beside its destination and renamed over ``NAME`` only once
it has passed every check, so a reader never sees a partial file under a data file's name.
Folders the tool creates are 0700 and files 0600: meter data is sensitive.

Every OS error on the way is translated into ``LocalWriteError`` here, in ``translate_os_error``,
with a message that says what is wrong and where.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from .errors import LocalWriteError

STATE_DIR = ".omar-bulk"
PART_SUFFIX = ".part"


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


def _opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


class Storage:
    """Places files under ``root`` and keeps the tool's own state in ``root/.omar-bulk``.

    Files are named by their key, the posix path relative to ``root`` (as in the journal);
    paths are plain strings on the per-item path, where ``pathlib`` would cost more than the
    file system calls it prepares.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root = os.fspath(root)
        self.state = root / STATE_DIR
        self.errors = self.state / "errors"
        self.history = self.state / "history"
        self._made: set[str] = set()

    def prepare(self) -> None:
        """Create the output and state folders (0700) if they are missing."""
        self.make_dirs(self.state)

    def make_dirs(self, folder: Path | str) -> None:
        """Create ``folder`` and its missing parents, each 0700 whatever the umask."""
        name = os.fspath(folder)
        if name in self._made:
            return
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
        self._made.add(name)

    def path_of(self, key: str) -> str:
        return f"{self._root}/{key}"

    def final(self, key: str) -> Path:
        return Path(self.path_of(key))

    def part(self, key: str) -> Path:
        return Path(self.path_of(key) + PART_SUFFIX)

    def write_whole(self, key: str, data: bytes, archive: Path | None = None) -> int:
        """Write a small body in one go: ``.part``, then rename over the final name.

        With ``archive``, the file it replaces is kept there first. Returns the new file's
        ``st_mtime_ns`` for the journal (a rename leaves it unchanged).
        """
        final = self.path_of(key)
        part = final + PART_SUFFIX
        self.make_dirs(os.path.dirname(final))
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                mtime = os.fstat(fd).st_mtime_ns
            finally:
                os.close(fd)
            if archive is not None:
                self.keep(final, archive)
            os.replace(part, final)
            return mtime
        except OSError as exc:
            self.discard(key)
            raise translate_os_error(exc, part) from exc

    async def open_part(self, key: str) -> Any:
        """Open ``key``'s ``.part`` file for streaming through aiofiles."""
        import aiofiles  # only large bodies need it

        part = self.path_of(key) + PART_SUFFIX
        self.make_dirs(os.path.dirname(part))
        try:
            return await aiofiles.open(part, "wb", opener=_opener)
        except OSError as exc:
            raise translate_os_error(exc, part) from exc

    def commit(self, key: str, archive: Path | None = None) -> int:
        """Move a complete ``.part`` into place (keeping the file it replaces in ``archive``);
        return the file's ``st_mtime_ns``."""
        final = self.path_of(key)
        try:
            if archive is not None:
                self.keep(final, archive)
            os.replace(final + PART_SUFFIX, final)
            return os.stat(final).st_mtime_ns
        except OSError as exc:
            raise translate_os_error(exc, final) from exc

    def history_path(self, key: str, fetched_at: float) -> Path:
        """A free name for the version of ``key`` fetched at ``fetched_at``, once replaced."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(fetched_at))
        archive = self.history / f"{key}.{stamp}"
        target, counter = archive, 1
        while target.exists():
            target = archive.with_name(f"{archive.name}-{counter}")
            counter += 1
        return target

    def keep(self, final: Path | str, archive: Path) -> None:
        """Put the current ``final`` in ``archive``: a hard link, so ``final`` stays in place
        until the new version replaces it (a copy where links are not possible)."""
        self.make_dirs(archive.parent)
        try:
            os.link(final, archive)
        except FileNotFoundError:
            return  # nothing to keep
        except OSError:
            shutil.copy2(final, archive)
        os.chmod(archive, 0o600)

    def retire(self, key: str, archive: Path) -> None:
        """Move ``key`` out of the data folders into ``archive`` (its new version is empty)."""
        final = self.path_of(key)
        try:
            self.keep(final, archive)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(final)
        except OSError as exc:
            raise translate_os_error(exc, archive) from exc

    def discard(self, key: str) -> None:
        """Remove ``key``'s ``.part`` file if there is one. Never raises."""
        with contextlib.suppress(OSError):
            os.unlink(self.path_of(key) + PART_SUFFIX)

    def sweep_parts(self, folder: str) -> None:
        """Remove every ``.part`` file in ``folder`` (relative to the root). Never raises."""
        where = self.path_of(folder)
        try:
            with os.scandir(where) as entries:
                names = [e.name for e in entries if e.name.endswith(PART_SUFFIX)]
        except OSError:
            return
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(f"{where}/{name}")

    def save_error_page(self, key: str, body: bytes) -> Path:
        """Keep an HTML answer for diagnosis; return where it went."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.errors / f"{key}.{stamp}.html"
        self.make_dirs(target.parent)
        try:
            with open(target, "wb", opener=_opener) as handle:
                handle.write(body)
        except OSError as exc:
            raise translate_os_error(exc, target) from exc
        return target


_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(rb"<[^>]+>")
_SPACE = re.compile(r"\s+")


def looks_like_html(head: bytes, content_type: str | None) -> bool:
    """True for an HTML answer: a ``text/html`` type, or a body opening as an HTML page."""
    if content_type and "text/html" in content_type.lower():
        return True
    start = head[:64].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith((b"<!doctype", b"<html"))


def page_headline(body: bytes) -> str:
    """An HTML page's title, else its first line of text, for error messages."""
    match = _TITLE.search(body[:65536])
    text = match.group(1) if match else b""
    if not text.strip():
        for line in _TAG.sub(b"\n", body[:65536]).splitlines():
            if line.strip():
                text = line
                break
    headline = _SPACE.sub(" ", text.decode("utf-8", "replace")).strip()
    return (headline[:117] + "...") if len(headline) > 120 else headline or "(empty page)"
