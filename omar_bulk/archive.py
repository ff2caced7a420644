"""An archive: the output folder OUT and its state folder (journal, lock, report, marks).

Every command that touches OUT's state goes through one ``Archive``::

    locate (reads only; notes) ─▶ a run:     check ─▶ refusals ─▶ lock ─▶ take over, marks,
                                                                           journal, sweep
                               └▶ a reader:  the journal, read without write access

The state folder is ``OUT/.omar-bulk``, or a folder outside OUT (``--state-dir``,
``OMAR_STATE_DIR``, or by default for an OUT on a network share a folder of this machine's
own). Two marks tie the two together: the separate folder names the OUT it serves
(``output-folder``), and ``OUT/.omar-bulk`` names the separate folder in use (``state-folder``).
A run takes the lock in ``OUT/.omar-bulk`` whatever state folder it names, so two runs of one
OUT exclude each other; a separate state folder is locked as well, so two OUTs cannot claim
one new folder at once. Everything a run writes comes after the lock and after every refusal:
a refused run leaves no trace.

Whatever folder a run keeps its state in must be a real folder (not a link) of this user,
writable by nobody else: whoever could write there could plant a link in place of the journal,
or a ``folders`` row that sends the sweep for ``.part`` files elsewhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import LocalWriteError, UsageError
from .journal import Journal, _check_version, readonly_uri
from .report import REPORT_NAME
from .storage import (
    JOURNAL_NAME,
    STATE_DIR,
    Storage,
    make_private_dirs,
    translate_os_error,
)
from .text import printable
from .userfiles import replace_by_name, write_output

__all__ = [
    "DATA_FOLDERS",
    "LOCK_NAME",
    "NETWORK_FILESYSTEMS",
    "POINTER_NAME",
    "SERVES_NAME",
    "STATE_HOME_NAME",
    "Archive",
    "copy_journal",
    "default_state_home",
    "judge_state_folder",
    "network_filesystem",
    "read_mark",
    "state_folder",
    "write_private",
]

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
#: In a state folder outside OUT: the real path of the output folder it serves. The journal's
#: keys are relative to OUT, so one folder given for two OUTs would mix their files.
SERVES_NAME = "output-folder"
#: In ``OUT/.omar-bulk``: the real path of the state folder outside OUT that runs use, so that
#: a command given no ``--state-dir`` says where the journal is instead of starting afresh.
POINTER_NAME = "state-folder"
#: The lock file, in ``OUT/.omar-bulk`` for every run, and in a separate state folder too.
LOCK_NAME = "lock"
#: The folders under OUT that hold data files (and so ``.part`` files): the only ones swept.
DATA_FOLDERS = ("meter", "group")
_MARK_MAX = 1 << 16


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


def read_mark(path: Path) -> str | None:
    """The path a mark file holds, or None where there is none (or none readable). The text
    is as found: escape it (``text.printable``) before it is shown."""
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


def write_private(path: Path, fill: Callable[[Path], object]) -> None:
    """Write the archive's own file ``path`` whole (0600): ``fill`` writes a new temporary
    file beside it, renamed over ``path`` when done; a write cut short never leaves a partial
    ``path``. The one way the archive writes its files (marks, the copied report and journal),
    through the one helper every whole-file write of omar-bulk goes through."""
    replace_by_name(path, fill, mode=0o600)


def _write_mark(path: Path, value: str) -> None:
    with write_output(path, mode=0o600, own=True) as handle:
        handle.write(os.fsencode(value) + b"\n")


def copy_journal(source: Path, target: Path) -> None:
    """Copy the journal ``source`` to ``target`` (a new file, 0600) with SQLite's backup API,
    which reads a consistent state even of a journal in WAL mode with its ``-wal`` beside it.
    ``source`` is only read; it keeps its format (the first ``Journal.open`` of ``target``
    migrates that, after its own backup).

    A ``source`` SQLite cannot read as a database (damaged) is copied byte for byte instead,
    with its ``-wal``: the first ``Journal.open`` of ``target`` then sets it aside and
    rebuilds it, exactly as it does for a damaged journal in ``OUT/.omar-bulk``.
    """

    def backup(temporary: Path) -> None:
        reader = sqlite3.connect(readonly_uri(source), uri=True)
        try:
            writer = sqlite3.connect(temporary)
            try:
                reader.backup(writer)
            finally:
                writer.close()
        finally:
            reader.close()

    def raw(temporary: Path) -> None:
        shutil.copyfile(source, temporary)

    try:
        try:
            write_private(target, backup)
        except sqlite3.DatabaseError as exc:
            if _access_refused(exc):
                raise
            wal = Path(f"{source}-wal")
            if wal.is_file():  # first: the journal's presence says the copy is complete
                write_private(Path(f"{target}-wal"), lambda t: shutil.copyfile(wal, t))
            write_private(target, raw)
    except OSError as exc:
        raise translate_os_error(exc, target) from exc
    except sqlite3.Error as exc:
        raise LocalWriteError(
            f"cannot copy the journal {source} to {target}: {exc}; {source} was left untouched"
        ) from exc


#: SQLite's primary result codes that speak of access, not of a damaged file.
_ACCESS_CODES = {3, 5, 6, 8, 10, 13, 14}


def _access_refused(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _ACCESS_CODES


def _cannot_open_in_place(path: Path) -> bool:
    """SQLite cannot read ``path`` where it lies without writing beside it: a journal in WAL
    mode on a read-only file system or snapshot, with no ``-shm`` index (SQLITE_CANTOPEN)."""
    try:
        db = sqlite3.connect(readonly_uri(path), uri=True)
    except sqlite3.Error as exc:
        return getattr(exc, "sqlite_errorcode", 0) & 0xFF == 14
    try:
        db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        return getattr(exc, "sqlite_errorcode", 0) & 0xFF == 14
    finally:
        db.close()
    return False


def _check_folder(path: Path) -> None:
    """A folder that holds omar-bulk's state: a real folder (not a link) of this user, that no
    other user can write. Missing is fine (a run makes it, 0700)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise translate_os_error(exc, path) from exc
    shown = printable(str(path))
    if stat.S_ISLNK(info.st_mode):
        raise LocalWriteError(
            f"{shown} is a symbolic link; omar-bulk keeps its journal only in a real folder:"
            f" give the folder it points to (--state-dir) or replace the link by a folder"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"the state folder {shown} exists and is not a folder")
    judge_state_folder(info, shown)


def judge_state_folder(info: os.stat_result, shown: str) -> None:
    """The one rule for a folder holding omar-bulk's state: this user's, and writable by no
    other (whoever could write there could plant a link in place of the journal)."""
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise LocalWriteError(
            f"{shown} belongs to another user (uid {info.st_uid}); omar-bulk keeps its journal"
            " only in a folder of its own user: give a folder of yours (--state-dir)"
        )
    if info.st_mode & 0o022:
        raise LocalWriteError(
            f"{shown} can be written by other users; run `chmod 700 {shown}`"
            " (omar-bulk makes it 0700) and run again"
        )


def _confined(folder: str) -> bool:
    """Is a ``folders`` row a data folder under OUT? Anything else (``../victim``, an absolute
    path, the state folder) was not written by a run and is never swept."""
    parts = folder.strip("/").split("/")
    if folder.startswith("/") or parts[0] not in DATA_FOLDERS:
        return False
    return all(part not in ("", ".", "..") for part in parts)


@contextlib.contextmanager
def _lock(path: Path, out: Path, *, required: bool = True) -> Iterator[None]:
    """Hold ``path`` locked (flock) for the block; another holder means another run of
    ``out``: a UsageError. Without ``required``, a file system that cannot lock is let pass
    (the state folder's own lock still holds)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows has no fcntl; runs are not guarded there
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise translate_os_error(exc, path) from exc
    handle: IO[bytes] = os.fdopen(fd, "r+b")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"another omar-bulk run is using {printable(str(out))}; wait for it to finish"
            ) from None
        except OSError:
            if required:
                raise
        yield
    finally:
        handle.close()


@contextlib.contextmanager
def _shared_lock(path: Path, out: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no fcntl on Windows: no run locks there either
        yield
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        yield  # no lock file (no run yet), or one that cannot be read: nothing to wait for
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"a run of {printable(str(out))} is in progress: verify it once the run has"
                " ended (what a run is moving would be reported as problems)"
            ) from None
        except OSError:
            pass  # a file system without locks: runs are not guarded there either
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Archive:
    """OUT and its state folder, located and checked against what earlier runs left
    (``locate``); opened for a run (``run``) or for reading (``reading``)."""

    out: Path
    #: The state folder: ``OUT/.omar-bulk`` or a folder outside OUT.
    folder: Path
    #: ``folder`` is not ``OUT/.omar-bulk`` (``--state-dir``, or the default for a share).
    separate: bool
    #: What the user should be told (a share's warning, a pointer to a vanished folder).
    notes: tuple[str, ...]
    #: The state folder as the user gave it (``--state-dir``), if they did.
    given: Path | None = None

    @property
    def inside(self) -> Path:
        """``OUT/.omar-bulk``: the lock of every run, history, error pages, the pointer."""
        return self.out / STATE_DIR

    @property
    def pointer(self) -> Path:
        return self.inside / POINTER_NAME

    @property
    def journal_path(self) -> Path:
        return self.folder / JOURNAL_NAME

    @property
    def report(self) -> Path:
        """Where the report goes without ``--report``."""
        return self.folder / REPORT_NAME

    @classmethod
    def locate(cls, out: Path, given: Path | None) -> Archive:
        """``state_folder`` for ``out`` and ``given``, checked against the marks; writes
        nothing (the dry run, ``status`` and ``verify`` use it as they are).

        Raises ``UsageError`` when the folder is not a folder, when it serves another output
        folder, when OUT's pointer names another state folder that still exists (the journal
        is there, and a run without it would fetch the whole archive again), and when the
        journal that would be used is the one in ``OUT/.omar-bulk`` that a separate folder,
        gone since, took over (it is out of date). A pointer to a folder that is gone is
        otherwise a note.
        """
        folder, warning = state_folder(out, given)
        notes = [warning] if warning else []
        if os.path.lexists(folder) and not os.path.isdir(folder):
            raise UsageError(
                f"the state folder {printable(str(folder))} (--state-dir or OMAR_STATE_DIR)"
                " exists and is not a folder: give a folder"
            )
        real = os.path.realpath(folder)
        separate = real != os.path.realpath(out / STATE_DIR)
        own = os.path.realpath(out)
        if separate and (real == own or real.startswith(own.rstrip("/") + "/")):
            raise UsageError(
                f"the state folder {printable(str(folder))} is inside the output folder"
                f" {printable(str(out))}: its journal, lock and marks would lie among the data"
                " files. Give a folder outside it, or leave --state-dir (and OMAR_STATE_DIR)"
                f" out to keep them in {printable(str(out / STATE_DIR))}"
            )
        place = cls(out, folder, separate, (), given)
        if separate:
            serves = read_mark(folder / SERVES_NAME)
            if serves is None and os.path.basename(real) == STATE_DIR:
                serves = os.path.dirname(real)  # another OUT's own state folder
            if serves is not None and serves != own:
                shown, mark = printable(serves), printable(str(folder / SERVES_NAME))
                raise UsageError(
                    f"the state folder {printable(str(folder))} keeps the journal of the output"
                    f" folder {shown}, not of {printable(str(out))}: give each output folder"
                    f" its own --state-dir (or OMAR_STATE_DIR). If {shown} was moved to"
                    f" {printable(str(out))}, remove {mark} and run again"
                )
        named = read_mark(place.pointer)
        if named is not None and named != real:
            shown = printable(named)
            if os.path.isdir(named):
                raise UsageError(
                    f"the journal of {printable(str(out))} is kept in {shown}"
                    f" ({printable(str(place.pointer))} says so), not in"
                    f" {printable(str(folder))}: give --state-dir {shown} or set"
                    f" OMAR_STATE_DIR={shown}, the same for every fetch, dry run and status of"
                    f" {printable(str(out))}. To start over in {printable(str(folder))}"
                    f" instead, remove {printable(str(place.pointer))}"
                )
            old = place.inside / JOURNAL_NAME
            if os.path.lexists(old) and (not separate or not place.journal_path.exists()):
                raise UsageError(
                    f"the journal {printable(str(old))} is out of date: later runs kept the"
                    f" journal of {printable(str(out))} in {shown}"
                    f" ({printable(str(place.pointer))} says so), which no longer exists."
                    f" If that folder was moved, give its new place with --state-dir (or"
                    f" OMAR_STATE_DIR). To start again from the files, move {printable(str(old))}"
                    " aside and run again: the files the last report vouches for are kept,"
                    " the rest is fetched again (`omar-bulk verify` then names any file no"
                    " journal row stands for)"
                )
            notes.append(
                f"{printable(str(place.pointer))} says the journal of {printable(str(out))} was"
                f" kept in {shown}, which no longer exists: going on with"
                f" {printable(str(folder))}"
            )
        return cls(out, folder, separate, tuple(notes), given)

    # -- reading ---------------------------------------------------------------------------

    def read_folder(self) -> tuple[Path, tuple[str, ...]]:
        """Where a reader (the dry run, ``status``, ``verify``) finds the journal, and the
        notes for the user. A separate state folder that has no journal yet while
        ``OUT/.omar-bulk`` has one (an archive of an earlier release on a share, a first
        ``--state-dir``): that one, which the next run takes over."""
        separate_but_empty = self.separate and not self.journal_path.exists()
        if separate_but_empty and (self.inside / JOURNAL_NAME).is_file():
            return self.inside, (
                *self.notes,
                f"reading the journal in {self.inside}: the next run copies it to"
                f" {self.folder}, where it is kept from then on",
            )
        return self.folder, self.notes

    @contextlib.contextmanager
    def reading(self, *, strict: bool = False) -> Iterator[Journal | None]:
        """The journal, read-only (None where there is none, or a damaged one unless
        ``strict``: see ``Journal.open_readonly``). Needs no write access: a journal SQLite
        cannot read in place (WAL mode, no ``-shm``, a read-only file system) is read from a
        private copy, removed afterwards."""
        folder, _ = self.read_folder()
        path = folder / JOURNAL_NAME
        if not (path.is_file() and _cannot_open_in_place(path)):
            journal = Journal.open_readonly(folder, strict=strict)
            try:
                yield journal
            finally:
                if journal is not None:
                    journal.close()
            return
        with tempfile.TemporaryDirectory(prefix="omar-bulk-read-") as copy:
            for suffix in ("", "-wal"):
                source = Path(f"{path}{suffix}")
                if source.is_file():
                    shutil.copyfile(source, Path(copy) / f"{JOURNAL_NAME}{suffix}")
            journal = Journal.open_readonly(Path(copy), strict=strict)
            if journal is not None:
                journal.path = path  # messages name the journal the user knows
            try:
                yield journal
            finally:
                if journal is not None:
                    journal.close()

    @contextlib.contextmanager
    def idle(self) -> Iterator[None]:
        """Hold the archive's locks shared for the block (``verify``): no run of OUT is in
        progress meanwhile, so nothing is found half-moved. A run holding them is a
        UsageError; a run started meanwhile is refused as a second run is. Needs no write
        access: a lock file no run has made yet is no lock to take."""
        with contextlib.ExitStack() as held:
            folders = [self.inside, self.folder] if self.separate else [self.inside]
            for folder in folders:
                held.enter_context(_shared_lock(folder / LOCK_NAME, self.out))
            yield

    # -- a run -----------------------------------------------------------------------------

    def check(self) -> None:
        """The folders a run keeps state in, as they are now: real folders of this user that
        no other user can write (``OUT/.omar-bulk``, and the separate state folder)."""
        _check_folder(self.inside)
        if self.separate:
            _check_folder(self.folder)

    @contextlib.contextmanager
    def run(self, storage: Storage, warnings: list[str]) -> Iterator[Journal]:
        """Open the archive for a run: checks and refusals first (nothing written), then the
        folders, the lock, the takeover of a journal left in ``OUT/.omar-bulk``, the marks,
        the journal (migrated or rebuilt as needed) and the sweep of ``.part`` files left by
        unfinished runs. Notes for the user are appended to ``warnings``."""
        self.check()
        self._refuse_newer_journal()
        judge_state_folder(storage.prepare(), printable(str(self.inside)))
        if self.separate:
            make_private_dirs(self.folder)
            _check_folder(self.folder)
        with contextlib.ExitStack() as held:
            held.enter_context(_lock(self.inside / LOCK_NAME, self.out, required=not self.separate))
            if self.separate:
                held.enter_context(_lock(self.folder / LOCK_NAME, self.out))
            # What another run may have written before this one got the lock: checked again.
            Archive.locate(self.out, self.given)
            self._refuse_newer_journal()
            moved = self._take_over()
            if moved:
                warnings.append(moved)
            self._settle()
            journal = Journal.open(self.folder, warn=warnings, data_root=storage.root)
            try:
                self.sweep(journal, storage)
                yield journal
            finally:
                journal.close()

    def sweep(self, journal: Journal, storage: Storage) -> None:
        """Remove the ``.part`` files unfinished runs (a killed one, this one) left behind, in
        the data folders the journal lists; a row naming anything else is dropped unswept."""
        for folder in journal.unfinished_folders():
            if _confined(folder):
                storage.sweep_parts(folder)
        journal.forget_folders()

    def _refuse_newer_journal(self) -> None:
        """The journal a run would open, if a newer release wrote it: refused now, before
        anything is copied, marked or locked (``Journal.open`` would refuse it later)."""
        path = self.journal_path
        if self.separate and not path.exists():
            path = self.inside / JOURNAL_NAME  # the one a takeover would copy
        if not path.is_file():
            return
        try:
            db = sqlite3.connect(readonly_uri(path), uri=True)
        except sqlite3.Error:
            return
        try:
            _check_version(db, path)
        except sqlite3.Error:
            return  # damaged or unreadable: the run sets it aside, or says why not
        finally:
            db.close()

    def _take_over(self) -> str | None:
        """Copy the journal (and the last report) in ``OUT/.omar-bulk`` into a separate state
        folder that has none yet, and say so; None when there is nothing to take over.

        An archive of an earlier release on a share, or a first ``--state-dir``: without this
        the new folder would start empty and the whole archive would be fetched again. The
        original is left as it was."""
        if not self.separate:
            return None
        source, target = self.inside / JOURNAL_NAME, self.journal_path
        if target.exists() or not source.is_file():
            return None
        # The report first: the journal's presence is what says the takeover is done.
        report, copied = self.inside / REPORT_NAME, self.report
        if report.is_file() and not copied.exists():
            try:
                write_private(copied, lambda t: shutil.copyfile(report, t))
            except OSError as exc:
                raise translate_os_error(exc, copied) from exc
        copy_journal(source, target)
        return (
            f"the journal of {self.out} now lives in {target}: it was copied there from"
            f" {source}, which is no longer used (keep it as a backup or remove it)"
        )

    def _settle(self) -> None:
        """Record which OUT a separate state folder serves, and leave in ``OUT/.omar-bulk`` a
        pointer to it; with the state in ``OUT/.omar-bulk``, remove a pointer left by earlier
        runs (``locate`` let it pass: its folder is gone)."""
        try:
            if self.separate:
                own = os.path.realpath(self.out)
                if read_mark(self.folder / SERVES_NAME) != own:
                    _write_mark(self.folder / SERVES_NAME, own)
                real = os.path.realpath(self.folder)
                if read_mark(self.pointer) != real:
                    _write_mark(self.pointer, real)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.pointer)
        except OSError as exc:
            raise translate_os_error(exc, self.pointer) from exc
