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
from pathlib import Path, PurePosixPath
from typing import Any

import aiofiles

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
    """Places files under ``root`` and keeps the tool's own state in ``root/.omar-bulk``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / STATE_DIR
        self.errors = self.state / "errors"
        self.history = self.state / "history"
        self._made: set[Path] = set()

    def prepare(self) -> None:
        """Create the output and state folders (0700) if they are missing."""
        self.make_dirs(self.state)

    def make_dirs(self, folder: Path) -> None:
        if folder in self._made:
            return
        missing = []
        probe = folder
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        try:
            for path in reversed(missing):
                try:
                    path.mkdir(mode=0o700)
                except FileExistsError:
                    continue
                path.chmod(0o700)  # mkdir's mode is filtered by the umask
        except OSError as exc:
            raise translate_os_error(exc, folder) from exc
        self._made.add(folder)

    def final(self, rel: PurePosixPath) -> Path:
        return self.root.joinpath(*rel.parts)

    def part(self, rel: PurePosixPath) -> Path:
        final = self.final(rel)
        return final.with_name(final.name + PART_SUFFIX)

    def write_whole(self, rel: PurePosixPath, data: bytes, archive: Path | None = None) -> int:
        """Write a small body in one go (one thread hop when called via ``to_thread``).

        With ``archive``, the file it replaces is kept there first. Returns the new file's
        ``st_mtime_ns`` for the journal.
        """
        final = self.final(rel)
        part = self.part(rel)
        self.make_dirs(final.parent)
        try:
            with open(part, "wb", opener=_opener) as handle:
                handle.write(data)
            if archive is not None:
                self.keep(final, archive)
            os.replace(part, final)
            return os.stat(final).st_mtime_ns
        except OSError as exc:
            self.discard(rel)
            raise translate_os_error(exc, part) from exc

    async def open_part(self, rel: PurePosixPath) -> Any:
        """Open ``rel``'s ``.part`` file for streaming through aiofiles."""
        part = self.part(rel)
        self.make_dirs(part.parent)
        try:
            return await aiofiles.open(part, "wb", opener=_opener)
        except OSError as exc:
            raise translate_os_error(exc, part) from exc

    def commit(self, rel: PurePosixPath, archive: Path | None = None) -> int:
        """Move a complete ``.part`` into place (keeping the file it replaces in ``archive``);
        return the file's ``st_mtime_ns``."""
        final = self.final(rel)
        try:
            if archive is not None:
                self.keep(final, archive)
            os.replace(self.part(rel), final)
            return os.stat(final).st_mtime_ns
        except OSError as exc:
            raise translate_os_error(exc, final) from exc

    def history_path(self, rel: PurePosixPath, fetched_at: float) -> Path:
        """Where the version of ``rel`` fetched at ``fetched_at`` is kept once replaced."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(fetched_at))
        target = self.history.joinpath(*rel.parts)
        return target.with_name(f"{target.name}.{stamp}")

    def keep(self, final: Path, archive: Path) -> None:
        """Put the current ``final`` in ``archive``: a hard link, so ``final`` stays in place
        until the new version replaces it (a copy where links are not possible)."""
        self.make_dirs(archive.parent)
        target = archive
        counter = 1
        while target.exists():
            target = archive.with_name(f"{archive.name}-{counter}")
            counter += 1
        try:
            os.link(final, target)
        except FileNotFoundError:
            return  # nothing to keep
        except OSError:
            shutil.copy2(final, target)
        os.chmod(target, 0o600)

    def retire(self, rel: PurePosixPath, archive: Path) -> None:
        """Move ``rel`` out of the data folders into ``archive`` (its new version is empty)."""
        final = self.final(rel)
        try:
            self.keep(final, archive)
            final.unlink(missing_ok=True)
        except OSError as exc:
            raise translate_os_error(exc, archive) from exc

    def discard(self, rel: PurePosixPath | str) -> None:
        """Remove ``rel``'s ``.part`` file if there is one. Never raises."""
        rel = PurePosixPath(rel)
        with contextlib.suppress(OSError):
            os.unlink(self.part(rel))

    def sweep_parts(self, folder: str) -> None:
        """Remove every ``.part`` file in ``folder`` (relative to the root). Never raises."""
        try:
            with os.scandir(self.root.joinpath(*PurePosixPath(folder).parts)) as entries:
                names = [e.name for e in entries if e.name.endswith(PART_SUFFIX)]
        except OSError:
            return
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(self.root.joinpath(*PurePosixPath(folder).parts, name))

    def save_error_page(self, rel: PurePosixPath, body: bytes) -> Path:
        """Keep an HTML answer for diagnosis; return where it went."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.errors.joinpath(*rel.parts)
        target = target.with_name(f"{target.name}.{stamp}.html")
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
