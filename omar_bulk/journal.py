"""The journal: what each planned file's last outcome was, so a rerun fetches only the rest.

SQLite in WAL mode under ``OUT/.omar-bulk/``. Each outcome is committed the moment it is known,
so a run killed at any instant loses at most the items in flight: one small commit per item.

``.part`` files can only be left behind by a run that did not finish. Before a run first writes
into an id's folder it commits that folder to ``folders``, once per folder and run; the next
run sweeps the folders of every unfinished run for ``.part`` files.

The journal outlives the release that wrote it: its format version is SQLite's
``PRAGMA user_version`` (0.1.0 wrote 0, before there was one). An older journal is brought up to
date in place, in one transaction, after a backup copy beside it; a journal from a newer
release stops this one (``UsageError``) and is left exactly as it is.
"""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from stat import S_ISREG
from urllib.parse import quote

from .errors import LocalWriteError, UsageError
from .plan import Item
from .report import REPORT_NAME
from .results import ItemResult, Status
from .storage import JOURNAL_NAME, STATE_DIR, translate_os_error

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    path TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    start TEXT NOT NULL,
    end TEXT NOT NULL,
    format TEXT NOT NULL,
    time_type TEXT NOT NULL,
    url TEXT NOT NULL,
    status TEXT NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    mtime_ns INTEGER,
    fetched_at REAL NOT NULL,
    run_id INTEGER NOT NULL,
    revisions INTEGER NOT NULL DEFAULT 0,
    checked_at REAL,
    superseded_by TEXT,
    chunk TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS versions (
    path TEXT NOT NULL,
    fetched_at REAL NOT NULL,
    sha256 TEXT,
    bytes INTEGER NOT NULL,
    archived_as TEXT,
    PRIMARY KEY (path, fetched_at)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS folders (
    run_id INTEGER NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (run_id, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS landing (
    path TEXT PRIMARY KEY NOT NULL,
    url TEXT NOT NULL,
    chunk TEXT,
    sha256 TEXT,
    bytes INTEGER NOT NULL,
    archived_as TEXT,
    replaced_by TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    finished REAL,
    planned INTEGER, downloaded INTEGER, skipped INTEGER, empty INTEGER, failed INTEGER,
    bytes INTEGER, interrupted INTEGER
);
"""


def _to_v1(db: sqlite3.Connection) -> None:
    """0.1.0 (no version) to 1: the same tables. Journals from before 0.1.0 lack
    ``versions.archived_as``."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(versions)")}
    if "archived_as" not in columns:
        db.execute("ALTER TABLE versions ADD COLUMN archived_as TEXT")


def _to_v2(db: sqlite3.Connection) -> None:
    """1 to 2: ``items.superseded_by``, the key of the longer file of the same chunk that
    replaced this one (a partial month that grew). Archives whose partial months piled up
    before it are cleaned up by the next run (``policy.superseded``)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(items)")}
    if "superseded_by" not in columns:
        db.execute("ALTER TABLE items ADD COLUMN superseded_by TEXT")


def _to_v3(db: sqlite3.Connection) -> None:
    """2 to 3: ``items.chunk``, the chunking an item was cut by (``month``, ``7d``, ...), so
    only a chunk of the same chunking supersedes another. Rows written before it have none
    (NULL): ``policy.superseded`` treats those conservatively."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(items)")}
    if "chunk" not in columns:
        db.execute("ALTER TABLE items ADD COLUMN chunk TEXT")


def _to_v4(db: sqlite3.Connection) -> None:
    """3 to 4: ``landing``, the files about to be renamed (``Journal.intend``), so that a
    run killed between a rename and its journal commit is settled by the next one."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS landing (path TEXT PRIMARY KEY NOT NULL, url TEXT NOT NULL,"
        " chunk TEXT, sha256 TEXT, bytes INTEGER NOT NULL, archived_as TEXT, replaced_by TEXT)"
        " WITHOUT ROWID"
    )


#: Step ``n`` brings a journal of format ``n`` to ``n + 1``, inside the one transaction that
#: runs every step a journal needs. To change the format: change ``_SCHEMA`` (what a new journal
#: gets) and append the step that does the same to an existing one.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_to_v1, _to_v2, _to_v3, _to_v4]


def format_version() -> int:
    """The journal format this release reads and writes."""
    return len(MIGRATIONS)


_UPSERT = (
    "INSERT INTO items (path, kind, id, start, end, format, time_type, url, status, bytes,"
    " sha256, attempts, error, mtime_ns, fetched_at, run_id, revisions, checked_at,"
    " superseded_by, chunk) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,NULL,?)"
    " ON CONFLICT(path) DO UPDATE SET url=excluded.url, status=excluded.status,"
    " bytes=excluded.bytes, sha256=excluded.sha256, attempts=excluded.attempts,"
    " error=excluded.error, mtime_ns=excluded.mtime_ns, fetched_at=excluded.fetched_at,"
    " run_id=excluded.run_id, revisions=items.revisions + excluded.revisions,"
    " checked_at=excluded.checked_at, superseded_by=NULL,"
    " chunk=COALESCE(excluded.chunk, items.chunk)"
)


def _row(
    key: str,
    item: Item,
    *,
    url: str,
    status: str,
    size: int,
    sha256: str | None,
    attempts: int,
    error: str | None,
    mtime_ns: int | None,
    now: float,
    run_id: int,
    revised: bool = False,
) -> tuple[object, ...]:
    """The values of ``_UPSERT``, in its order: the one place an item's row is built."""
    s, e = item.start, item.end
    return (
        key,
        item.kind,
        item.id,
        s.isoformat(),
        e.isoformat(),
        item.format,
        item.time_type,
        url,
        str(status),
        size,
        sha256,
        attempts,
        error,
        mtime_ns,
        now,
        run_id,
        1 if revised else 0,
        now,
        item.chunk or None,
    )


_ENTRY = (
    "SELECT path, status, bytes, sha256, mtime_ns, fetched_at, error, superseded_by, chunk"
    " FROM items"
)


@dataclass(frozen=True, slots=True)
class Entry:
    """The journal's word on one file."""

    path: str
    status: str
    bytes: int
    sha256: str | None
    mtime_ns: int | None
    fetched_at: float = 0.0
    #: Why the latest attempt at a file that is still on disk failed (a failed revisit):
    #: the next run tries again (``policy.decide``).
    error: str | None = None
    #: The key of the longer file of the same chunk that replaced this one, if any.
    superseded_by: str | None = None
    #: The chunking the file was cut by (``str(Chunking)``); None in rows of format 2 and
    #: before, and in rows rebuilt from a report.
    chunk: str | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """One item as the journal keeps it, for the coverage view."""

    path: str
    kind: str
    id: str
    start: str
    end: str
    format: str
    time_type: str
    status: str
    error: str | None
    revisions: int
    fetched_at: float
    #: The chunking the file was cut by; None in rows older than journal format 3.
    chunk: str | None = None


def _write_error(exc: sqlite3.Error, path: Path) -> LocalWriteError:
    refused = _access_error(exc, path)
    if refused is not None:
        return refused
    text = str(exc)
    if "full" in text:
        return LocalWriteError(f"the disk is full: cannot write the journal {path}")
    return LocalWriteError(f"cannot write the journal {path}: {text}")


# SQLite's primary result codes that speak of the file system, not of the journal's content:
# a journal that cannot be written is not a damaged one (and must not be renamed aside).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 13, 14
_NOT_DAMAGE = {
    _SQLITE_PERM,
    _SQLITE_BUSY,
    _SQLITE_LOCKED,
    _SQLITE_READONLY,
    _SQLITE_IOERR,
    _SQLITE_FULL,
    _SQLITE_CANTOPEN,
}


def _access_error(exc: sqlite3.Error, path: Path) -> LocalWriteError | None:
    """The error for a journal the file system will not let us use, or None for damage."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in _NOT_DAMAGE:
        return None
    primary = code & 0xFF
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return LocalWriteError(f"the journal {path} is locked by another process")
    folder = path.parent
    if primary == _SQLITE_FULL or (primary == _SQLITE_IOERR and _no_space(folder)):
        # SQLite says "disk I/O error" where a full disk fails a write it does not check
        # itself (growing the -shm index): the free space tells it.
        return LocalWriteError(f"the disk is full: cannot write the journal {path}")
    try:
        read_only = bool(os.statvfs(path if path.exists() else folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        read_only = False
    if read_only:
        why = "it is on a read-only file system"
    elif not os.access(folder, os.W_OK) or not os.access(path, os.W_OK):
        why = f"no permission to write in {folder} (read-only, immutable or another user's)"
    else:
        why = str(exc)
    return LocalWriteError(
        f"cannot write the journal {path}: {why}; it was left untouched. omar-bulk must be able"
        " to write there: fix that and run the same command again"
    )


def _no_space(folder: Path) -> bool:
    try:
        return os.statvfs(folder).f_bavail == 0
    except (OSError, AttributeError):
        return False


def readonly_uri(path: Path) -> str:
    """An SQLite URI opening ``path`` read-only, for any path: relative, or holding ``?``,
    ``#`` or ``%`` (``Path.as_uri`` refuses relative paths)."""
    return f"file:{quote(os.path.abspath(path))}?mode=ro"


def _check_version(db: sqlite3.Connection, path: Path) -> int:
    """The journal's format version; a newer one than this release's stops the run."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > format_version():
        from . import __version__

        raise UsageError(
            f"the journal {path} was written by a newer omar-bulk (journal format {version};"
            f" omar-bulk {__version__} reads up to {format_version()}); it was left untouched:"
            " upgrade omar-bulk, or use another --out"
        )
    return version


class Journal:
    """One run's connection to the journal."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self.run_id = 0

    @classmethod
    def open(
        cls, folder: Path, *, warn: list[str] | None = None, data_root: Path | None = None
    ) -> Journal:
        """Open (or create) the journal in ``folder``.

        A damaged journal is set aside, and a new one is rebuilt from what can still be read
        of it and of the last report, keeping only entries whose file under ``data_root``
        still has the recorded size and SHA-256. Nothing else is trusted: the rest is fetched
        again. A missing journal beside existing data files gets a warning for the same reason.
        """
        path = folder / JOURNAL_NAME
        notes = warn if warn is not None else []
        fresh = not path.exists() or _blank(path)
        try:
            return cls._opened(path, fresh, notes, data_root)
        except sqlite3.DatabaseError as exc:
            refused = _access_error(exc, path)
            if refused is not None:
                raise refused from exc
            damage = str(exc)
        except OSError as exc:
            raise translate_os_error(exc, path) from exc
        candidates = _salvage_journal(path)
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            for suffix in ("", "-wal", "-shm"):
                source = Path(str(path) + suffix)
                if source.exists():
                    os.replace(source, Path(str(aside) + suffix))
            journal = cls(path, cls._connect(path))
        except OSError as exc:
            raise translate_os_error(exc, path) from exc
        except sqlite3.Error as exc:
            raise _write_error(exc, path) from exc
        kept, total = journal._rebuild(candidates, folder, data_root)
        notes.append(
            f"the journal was damaged ({damage}); it was moved to {aside.name} and a new one"
            f" rebuilt: {kept} of {total} recorded files still match their size and SHA-256 and"
            " are kept, everything else will be fetched again"
        )
        return journal

    @classmethod
    def _opened(cls, path: Path, fresh: bool, notes: list[str], data_root: Path | None) -> Journal:
        journal = cls(path, cls._connect(path))
        if fresh and data_root is not None and _has_data(data_root):
            kept, _ = journal._rebuild([], path.parent, data_root)
            notes.append(
                f"there was no journal in {path.parent} but data files are present:"
                f" {kept} of them match the last report's size and SHA-256 and are kept;"
                " nothing vouches for the others, so they will be fetched again"
            )
        return journal

    def _rebuild(
        self, candidates: list[tuple[object, ...]], folder: Path, data_root: Path | None
    ) -> tuple[int, int]:
        """Adopt candidates (and the last report's entries) whose files still verify, and
        the history files of the chunks adopted (``_history_versions``)."""
        found, total = recoverable(candidates, folder, data_root)
        now = time.time()
        kept = [entry.path for entry, _ in found]
        earlier = _history_versions(data_root, kept) if data_root is not None else []
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO versions (path, fetched_at, sha256, bytes, archived_as)"
                " VALUES (?, ?, ?, ?, ?)",
                earlier,
            )
            for entry, item in found:
                self._db.execute(
                    _UPSERT,
                    _row(
                        entry.path,
                        item,
                        url="",
                        status=Status.DOWNLOADED,
                        size=entry.bytes,
                        sha256=entry.sha256,
                        attempts=0,
                        error=None,
                        mtime_ns=entry.mtime_ns,
                        now=now,
                        run_id=0,
                    ),
                )
        return len(found), total

    @classmethod
    def open_readonly(cls, folder: Path, *, strict: bool = False) -> Journal | None:
        """The journal for reading only (a dry run, ``status``), or None where there is none;
        nothing is created. A damaged journal is None too, unless ``strict``: then it is a
        UsageError that says so."""
        path = folder / JOURNAL_NAME
        if not path.exists() or _blank(path):
            return None
        try:
            db = sqlite3.connect(readonly_uri(path), uri=True)
        except sqlite3.DatabaseError as exc:
            if strict:
                raise UsageError(f"cannot read the journal {path}: {exc}") from None
            return None
        try:
            version = _check_version(db, path)
            if version < format_version():
                db = _migrated_in_memory(db, version)
            db.execute("SELECT 1 FROM items LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            db.close()
            if strict:
                raise UsageError(f"cannot read the journal {path}: {exc}") from None
            return None
        except BaseException:
            db.close()
            raise
        return cls(path, db)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        if not path.exists():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                os.close(fd)
            except FileExistsError:
                pass
        db = sqlite3.connect(path, isolation_level=None, timeout=5)
        try:
            # Read before anything is written: a newer release's journal is left as it is.
            version = _check_version(db, path)
            db.execute("PRAGMA journal_mode=WAL")
            # WAL with synchronous=NORMAL survives a killed process; it can lose the last
            # commits on power loss, and then the size check on the next run catches it.
            db.execute("PRAGMA synchronous=NORMAL")
            # Reads every page once: damage anywhere is found now, not by a write mid-run,
            # and never carried into a migration.
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {verdict}")
            if db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None:
                with db:
                    db.execute("BEGIN IMMEDIATE")
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version = {format_version()}")
            elif version < format_version():
                _migrate(db, path, version)
            else:
                # A journal that cannot be written must stop the run now, not at its first
                # outcome: take the write lock once and let it go.
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        self._db.close()

    # -- runs ------------------------------------------------------------------------------

    def begin_run(self) -> int:
        cursor = self._execute("INSERT INTO runs (started) VALUES (?)", (time.time(),))
        self.run_id = int(cursor.lastrowid or 0)
        return self.run_id

    def end_run(self, counts: dict[str, int], *, interrupted: bool) -> None:
        self._execute(
            "UPDATE runs SET finished=?, planned=?, downloaded=?, skipped=?, empty=?, failed=?,"
            " bytes=?, interrupted=? WHERE id=?",
            (
                time.time(),
                counts["planned"],
                counts["downloaded"],
                counts["skipped"],
                counts["empty"],
                counts["failed"],
                counts["bytes"],
                int(interrupted),
                self.run_id,
            ),
        )

    # -- items -----------------------------------------------------------------------------

    def get(self, path: str) -> Entry | None:
        row = self._db.execute(f"{_ENTRY} WHERE path=?", (path,)).fetchone()
        return Entry(*row) if row else None

    def same_start(self, key: str) -> list[Entry]:
        """Every entry whose key shares ``key``'s folder, id and first day (its own included):
        the files of the chunk that starts there, in any length, format and time type.

        One range read of the primary key, as cheap as ``get``: file names begin
        ``{ID}_{YYYYMMDD}_``, so they sort together.
        """
        stem = key.rpartition("/")[2]
        prefix = key[: len(key) - len(stem)] + stem[: _start_end(stem)]
        # "`" sorts right after "_": the range holds exactly the keys starting with the prefix.
        rows = self._db.execute(
            f"{_ENTRY} WHERE path >= ? AND path < ?", (prefix, prefix[:-1] + "`")
        )
        return [Entry(*row) for row in rows]

    def supersede(self, old: Entry, new_key: str, archived_as: str | None) -> None:
        """Record in one transaction that ``new_key`` replaced ``old`` (a shorter file of the
        same chunk): ``old``'s version goes to ``versions`` under ``new_key`` (with where its
        file was kept, if it had one), and so do the versions recorded under ``old``, so
        ``versions(new_key)`` is the chunk's whole history. ``old``'s row is marked
        superseded, not deleted: a later run that plans it again knows the longer file
        stands for it."""
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute(
                    "UPDATE OR REPLACE versions SET path=? WHERE path=?", (new_key, old.path)
                )
                if old.status == Status.DOWNLOADED:
                    self._db.execute(
                        "INSERT OR REPLACE INTO versions (path, fetched_at, sha256, bytes,"
                        " archived_as) VALUES (?, ?, ?, ?, ?)",
                        (new_key, old.fetched_at, old.sha256, old.bytes, archived_as),
                    )
                self._db.execute(
                    "UPDATE items SET status=?, superseded_by=?, checked_at=?, run_id=?"
                    " WHERE path=?",
                    (Status.SUPERSEDED, new_key, time.time(), self.run_id, old.path),
                )
                self._db.execute("DELETE FROM landing WHERE path=?", (old.path,))
        except sqlite3.Error as exc:
            raise _write_error(exc, self.path) from exc

    def records(self) -> Iterator[Record]:
        """Every item's record, for ``status``: read in one pass, in no particular order.
        Superseded files (a partial chunk replaced by a longer one) are left out: their
        chunk is counted once, through the file that replaced them."""
        try:
            for row in self._db.execute(
                "SELECT path, kind, id, start, end, format, time_type, status, error,"
                " revisions, fetched_at, chunk FROM items WHERE status != 'superseded'"
            ):
                yield Record(*row)
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"cannot read the journal {self.path}: {exc}") from None

    def is_empty(self) -> bool:
        """No item recorded yet (a first run needs no look-ups)."""
        return self._db.execute("SELECT 1 FROM items LIMIT 1").fetchone() is None

    def touch(self, path: str, mtime_ns: int) -> None:
        """Record a new modification time for a file whose content was re-verified."""
        self._execute("UPDATE items SET mtime_ns=? WHERE path=?", (mtime_ns, path))

    def use_folder(self, folder: str) -> None:
        """Record, before the first ``.part`` file goes there, that this run writes in
        ``folder`` (relative to the output root)."""
        self._execute(
            "INSERT OR IGNORE INTO folders (run_id, path) VALUES (?, ?)", (self.run_id, folder)
        )

    def unfinished_folders(self) -> list[str]:
        """Folders written by runs that never finished (killed), this run's included."""
        rows = self._db.execute(
            "SELECT DISTINCT f.path FROM folders f LEFT JOIN runs r ON r.id = f.run_id"
            " WHERE r.finished IS NULL OR f.run_id = ?",
            (self.run_id,),
        )
        return [row[0] for row in rows]

    def forget_folders(self) -> None:
        """Every folder recorded so far has been swept: drop the records."""
        self._execute("DELETE FROM folders", ())

    def record(
        self,
        key: str,
        result: ItemResult,
        mtime_ns: int | None,
        *,
        previous: Entry | None = None,
        archived_as: str | None = None,
    ) -> None:
        """Commit one item's outcome at once.

        An ordinary outcome is one autocommitted statement: this runs once per file, and a
        transaction around a single statement would only add two more. ``previous`` is the
        entry a refetch replaces: a failed refetch leaves it in place with the error (the
        journal keeps its word on the data it knew of, on disk or not: ``policy.compare``),
        an unchanged one only notes the check, and a revision moves the old version's hash,
        size and time to ``versions`` first.
        """
        item = result.item
        now = time.time()
        status = result.status
        try:
            if previous is not None and status in (Status.FAILED, Status.UNCHANGED):
                # A row of an older format learns its chunking here, as on any upsert.
                self._db.execute(
                    "UPDATE items SET attempts=?, error=?, checked_at=?, run_id=?,"
                    " chunk=COALESCE(?, chunk) WHERE path=?",
                    (result.attempts, result.error, now, self.run_id, item.chunk or None, key),
                )
                return
            values = _row(
                key,
                item,
                url=result.url,
                status=(Status.DOWNLOADED if result.sha256 else Status.EMPTY)
                if status == Status.REVISED
                else status,
                size=result.bytes,
                sha256=result.sha256,
                attempts=result.attempts,
                error=result.error,
                mtime_ns=mtime_ns,
                now=now,
                run_id=self.run_id,
                revised=status == Status.REVISED,
            )
            if status != Status.REVISED:
                self._db.execute(_UPSERT, values)
                return
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute(
                    "INSERT OR REPLACE INTO versions (path, fetched_at, sha256, bytes,"
                    " archived_as) SELECT path, fetched_at, sha256, bytes, ? FROM items"
                    " WHERE path=?",
                    (archived_as, key),
                )
                self._db.execute(_UPSERT, values)
        except sqlite3.Error as exc:
            raise _write_error(exc, self.path) from exc

    def versions(self, key: str) -> list[tuple[float, str | None, int, str | None]]:
        """Earlier versions of ``key``: (fetched_at, sha256, bytes, archived_as), oldest first."""
        return list(
            self._db.execute(
                "SELECT fetched_at, sha256, bytes, archived_as FROM versions WHERE path=?"
                " ORDER BY fetched_at",
                (key,),
            )
        )

    def inventory(
        self,
    ) -> tuple[list[tuple[str, str, int, str | None]], list[tuple[str, int, str | None, str]]]:
        """For ``verify``: every item's (path, status, bytes, sha256), and every kept version's
        (path, bytes, sha256, archived_as)."""
        try:
            items = list(self._db.execute("SELECT path, status, bytes, sha256 FROM items"))
            kept = list(
                self._db.execute(
                    "SELECT path, bytes, sha256, archived_as FROM versions"
                    " WHERE archived_as IS NOT NULL"
                )
            )
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"cannot read the journal {self.path}: {exc}") from None
        return items, kept

    # -- landing: a file renamed into place before its outcome is committed -----------------
    #
    # A rename and a journal commit cannot be one step. The intent is committed first
    # (``intend``), then the files are renamed, then the outcome is committed. A run killed
    # (or a journal that filled the disk) between the last two leaves an intent the outcome
    # does not match, and the next run settles it from what is on disk (``settle_landings``);
    # a journal that cannot take the intent stops the file before it lands, and a file that
    # cannot be put in place takes its intent back (``drop_intent``). The outcome's
    # commit leaves its intent behind (deleting it would cost every file a second page in
    # the write-ahead log); the end of the run drops the intents its rows match, in one
    # statement (``drop_settled_intents``), and the next run any that are left.

    def intend(
        self,
        key: str,
        *,
        url: str,
        chunk: str | None,
        sha256: str | None,
        size: int,
        archived_as: str | None,
        replaced_by: str | None = None,
    ) -> None:
        """Commit that ``key``'s file is about to be put in place with these bytes (keeping
        the version it replaces as ``archived_as``), or, with ``replaced_by``, that ``key``'s
        file is about to move to ``archived_as`` because ``replaced_by`` supersedes it."""
        self._execute(
            "INSERT OR REPLACE INTO landing (path, url, chunk, sha256, bytes, archived_as,"
            " replaced_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, url, chunk, sha256, size, archived_as, replaced_by),
        )

    def drop_settled_intents(self) -> None:
        """At the end of a run, one statement: forget the intents whose outcome was committed
        (the row holds the announced bytes) or that a superseded row settled."""
        self._execute(
            "DELETE FROM landing WHERE path IN (SELECT l.path FROM landing l JOIN items i"
            " ON i.path = l.path WHERE (l.replaced_by IS NULL AND i.sha256 IS l.sha256"
            " AND i.bytes = l.bytes) OR (l.replaced_by IS NOT NULL AND i.status = ?))",
            (Status.SUPERSEDED,),
        )

    def unsettled_intents(self, data_root: Path) -> list[Unsettled]:
        """For ``verify``: every intent whose outcome was never committed, and whether its
        move happened (as ``settle_landings`` tells it from the files under ``data_root``):
        files a stopped run moved, which the next run records. Read only; empty in a journal
        older than the intents."""
        try:
            rows = list(
                self._db.execute(
                    "SELECT l.path, l.sha256, l.bytes, l.archived_as, l.replaced_by FROM landing l"
                    " LEFT JOIN items i ON i.path = l.path WHERE i.path IS NULL"
                    " OR (l.replaced_by IS NULL AND (i.sha256 IS NOT l.sha256"
                    " OR i.bytes != l.bytes))"
                    " OR (l.replaced_by IS NOT NULL AND i.status != ?)",
                    (Status.SUPERSEDED,),
                )
            )
        except sqlite3.OperationalError:
            return []  # no landing table: a journal of format 3 or older, read as it is
        found = []
        for path, sha256, size, archived_as, replaced_by in rows:
            final = data_root.joinpath(*PurePosixPath(path).parts)
            archive = data_root.joinpath(*PurePosixPath(archived_as).parts) if archived_as else None
            moved = _moved(final, archive, size, sha256, replaced_by)
            found.append(Unsettled(path, archived_as, replaced_by, moved))
        return found

    def drop_intent(self, key: str) -> None:
        """The rename announced for ``key`` did not happen (the file was refused, or could
        not be put in place)."""
        self._execute("DELETE FROM landing WHERE path=?", (key,))

    def landed_entries(self, data_root: Path) -> dict[str, Entry]:
        """The entries ``settle_landings`` would record for files a killed run renamed into
        place, read only: the dry run decides with them as the run will."""
        found = {}
        for path, _, chunk, sha256, size, _, replaced_by in self._landings():
            entry = self.get(path)
            if replaced_by is not None or (
                entry is not None and entry.sha256 == sha256 and entry.bytes == size
            ):
                continue
            final = data_root.joinpath(*PurePosixPath(path).parts)
            if _holds(final, size, sha256):
                mtime = final.stat().st_mtime_ns
                found[path] = Entry(path, Status.DOWNLOADED, size, sha256, mtime, chunk=chunk)
        return found

    def _landings(
        self,
    ) -> list[tuple[str, str, str | None, str | None, int, str | None, str | None]]:
        try:
            return list(
                self._db.execute(
                    "SELECT path, url, chunk, sha256, bytes, archived_as, replaced_by FROM landing"
                )
            )
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"cannot read the journal {self.path}: {exc}") from None

    def settle_landings(self, data_root: Path) -> list[str]:
        """Settle the renames a killed run announced but never committed, from what is on
        disk; returns a note for each one that had happened. A file that landed with the
        announced bytes is recorded as the run would have recorded it (a revision, with its
        earlier version's history file, when it replaced a version: ``_revises``); a file
        moved to history for a longer one is recorded as superseded. A rename that never
        happened is forgotten, with the history file made for it, if any (``_stray``: a link
        to or a copy of the file still in place, or a copy cut short)."""
        rows = self._landings()
        notes = []
        settled = []
        for path, url, chunk, sha256, size, archived_as, replaced_by in rows:
            entry = self.get(path)
            if entry is None or entry.status == Status.SUPERSEDED:
                pass
            elif replaced_by is None and entry.sha256 == sha256 and entry.bytes == size:
                settled.append(path)  # its outcome was committed
                continue
            final = data_root.joinpath(*PurePosixPath(path).parts)
            archive = data_root.joinpath(*PurePosixPath(archived_as).parts) if archived_as else None
            moved = _moved(final, archive, size, sha256, replaced_by)
            if replaced_by is not None:
                if moved and entry is not None and entry.status == Status.DOWNLOADED:
                    self.supersede(entry, replaced_by, archived_as)
                    notes.append(
                        f"{path} had been moved to history for {replaced_by} by a run that"
                        " was stopped; recorded"
                    )
                    continue
            elif moved:
                revised = _revises(entry, archived_as)
                self._adopt(path, url, chunk, sha256, size, archived_as, final, revised)
                what = "a revision" if revised else "a download"
                notes.append(f"{final}: {what} landed as a run was stopped; recorded")
                continue
            if archive is not None and _stray(final, archive, entry):
                with contextlib.suppress(OSError):
                    os.unlink(archive)
            settled.append(path)
        if settled:
            try:
                with self._db:
                    self._db.execute("BEGIN")
                    self._db.executemany(
                        "DELETE FROM landing WHERE path=?", [(path,) for path in settled]
                    )
            except sqlite3.Error as exc:
                raise _write_error(exc, self.path) from exc
        return notes

    def _adopt(
        self,
        key: str,
        url: str,
        chunk: str | None,
        sha256: str | None,
        size: int,
        archived_as: str | None,
        final: Path,
        revised: bool,
    ) -> None:
        """Record a file found in place with the bytes its intent announced (``revised``:
        as a revision of the version its row records)."""
        from .protocol import parse_relative_path

        item = parse_relative_path(PurePosixPath(key))
        if item is None:
            self.drop_intent(key)
            return
        now = time.time()
        values = _row(
            key,
            item,
            url=url,
            status=Status.DOWNLOADED,
            size=size,
            sha256=sha256,
            attempts=0,
            error=None,
            mtime_ns=final.stat().st_mtime_ns,
            now=now,
            run_id=self.run_id,
            revised=revised,
        )
        values = (*values[:-1], chunk)
        try:
            with self._db:
                self._db.execute("BEGIN")
                if revised:
                    self._db.execute(
                        "INSERT OR REPLACE INTO versions (path, fetched_at, sha256, bytes,"
                        " archived_as) SELECT path, fetched_at, sha256, bytes, ? FROM items"
                        " WHERE path=?",
                        (archived_as, key),
                    )
                self._db.execute(_UPSERT, values)
                self._db.execute("DELETE FROM landing WHERE path=?", (key,))
        except sqlite3.Error as exc:
            raise _write_error(exc, self.path) from exc

    def _execute(self, sql: str, args: tuple[object, ...]) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise _write_error(exc, self.path) from exc


def _start_end(stem: str) -> int:
    """Length of ``{ID}_{YYYYMMDD}_`` in a data file's name (ids may hold ``_``)."""
    pieces = stem.rsplit("_", 3)
    return len(pieces[0]) + 10 if len(pieces) == 4 else len(stem)


#: A kept version's name under history/: ``{relative path}.{fetched at, UTC}[-N]``.
_HISTORY_NAME = re.compile(r"(?P<key>.+)\.(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?")


def _history_versions(data_root: Path, kept: list[str]) -> list[tuple[str, float, str, int, str]]:
    """``versions`` rows for the history files a rebuilt journal can attribute: a file named
    as omar-bulk names a kept version (``storage.history_path``) of a data file whose chunk
    (same folder, id and start) is one of the ``kept`` keys, and only of one. Its time is the
    one its name records (to the second; ``-N`` adds N ms so each keeps its own row), its size
    and SHA-256 are the file's as found: nothing else recorded them once the journal was lost.
    Files that cannot be attributed are left unlisted (``verify`` names them)."""
    chunks: dict[str, list[str]] = {}
    for key in kept:
        stem = key.rpartition("/")[2]
        chunks.setdefault(key[: len(key) - len(stem)] + stem[: _start_end(stem)], []).append(key)
    history = data_root / STATE_DIR / "history"
    rows: list[tuple[str, float, str, int, str]] = []
    for folder, _, names in os.walk(history):
        for name in names:
            path = Path(folder, name)
            match = _HISTORY_NAME.fullmatch(path.relative_to(history).as_posix())
            if match is None:
                continue
            old = match["key"]
            stem = old.rpartition("/")[2]
            owners = chunks.get(old[: len(old) - len(stem)] + stem[: _start_end(stem)], [])
            if len(owners) != 1:
                continue
            try:
                info = path.lstat()
                if not S_ISREG(info.st_mode):
                    continue
                with open(path, "rb") as handle:
                    sha = hashlib.file_digest(handle, "sha256").hexdigest()
            except OSError:
                continue
            stamp = time.strptime(match["stamp"], "%Y%m%dT%H%M%SZ")
            when = calendar.timegm(stamp) + int(match["n"] or 0) / 1000
            archived = f"{STATE_DIR}/history/{path.relative_to(history).as_posix()}"
            rows.append((owners[0], when, sha, info.st_size, archived))
    return rows


def _holds(final: Path, size: int, sha256: str | None) -> bool:
    """Is ``final`` a regular file (not a link) of ``size`` bytes with this SHA-256? Always
    hashed: what a rebuild or a killed run's intent adopts, nothing else vouches for (the
    skip rule's cheaper check is ``policy.on_disk``)."""
    try:
        info = final.lstat()
        if not S_ISREG(info.st_mode) or info.st_size != size or sha256 is None:
            return False
        with open(final, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest() == sha256
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class Unsettled:
    """An intent whose outcome was never committed (``Journal.unsettled_intents``)."""

    path: str
    archived_as: str | None
    replaced_by: str | None
    #: Did its move happen: the announced bytes in place, or the retired file in history?
    moved: bool


def _moved(
    final: Path, archive: Path | None, size: int, sha256: str | None, replaced_by: str | None
) -> bool:
    """Did an intent's move happen, by the files on disk? A retired file (``replaced_by``)
    is gone from its place and in history; a landing file holds the announced bytes."""
    if replaced_by is not None:
        return not os.path.lexists(final) and archive is not None and archive.is_file()
    return _holds(final, size, sha256)


def _revises(entry: Entry | None, archived_as: str | None) -> bool:
    """Would the run have recorded a landed file as a revision (``policy.compare``)? Only
    when it replaced a version: a file on disk, kept as ``archived_as``, or a recorded empty
    answer. The row of a failed attempt, of a superseded file or of a file lost from disk
    stands for no version there: the file is a download."""
    return archived_as is not None or (entry is not None and entry.status == Status.EMPTY)


def _stray(final: Path, archive: Path, entry: Entry | None) -> bool:
    """Is ``archive`` the history file made for a move that did not happen, to be removed?
    Its name was free when the intent was committed, so whatever is there was made for it:
    a link to the file still in place, a copy of it (where hard links are not possible), or
    a copy cut short (a full disk). Only a whole copy of the recorded version whose file in
    place is gone or changed since is left: it may be the last copy of that version."""
    try:
        if not S_ISREG(archive.lstat().st_mode):
            return False
    except OSError:
        return False
    if _same_file(final, archive):
        return True
    if entry is None or entry.sha256 is None:
        return False
    whole = _holds(archive, entry.bytes, entry.sha256)
    return not whole or _holds(final, entry.bytes, entry.sha256)


def _same_file(one: Path, other: Path) -> bool:
    try:
        return os.path.samefile(one, other) and not other.is_symlink()
    except OSError:
        return False


def recoverable(
    candidates: list[tuple[object, ...]], folder: Path, data_root: Path | None
) -> tuple[list[tuple[Entry, Item]], int]:
    """What a lost or damaged journal can be rebuilt from: the rows still readable
    (``candidates``) and the last report's entries, kept only where the file under
    ``data_root`` still has the recorded size and SHA-256. Returns (kept, considered).

    The real run writes these into a new journal; the dry run reads them in memory, so both
    skip exactly the same files.
    """
    from .protocol import parse_relative_path, relative_path

    by_path: dict[str, tuple[int, str]] = {}
    for row in candidates:
        key, status, size, sha = row[0], row[8], row[9], row[10]
        if status == Status.DOWNLOADED and isinstance(key, str) and isinstance(sha, str):
            by_path[key] = (int(size), sha)  # type: ignore[call-overload]
    by_path.update(_report_entries(folder / REPORT_NAME, data_root))
    if data_root is None:
        return [], len(by_path)
    kept: list[tuple[Entry, Item]] = []
    for key, (size, sha) in by_path.items():
        item = parse_relative_path(PurePosixPath(key))
        if item is None or relative_path(item).as_posix() != key:
            continue
        final = data_root.joinpath(*PurePosixPath(key).parts)
        if _holds(final, size, sha):
            kept.append((Entry(key, Status.DOWNLOADED, size, sha, final.stat().st_mtime_ns), item))
    return kept, len(by_path)


def lost_journal_entries(folder: Path, data_root: Path) -> tuple[dict[str, Entry], str | None]:
    """For a dry run where the journal is missing or unreadable: the entries a real run's
    rebuild would keep, and the warning it would give (None when there is nothing to say)."""
    path = folder / JOURNAL_NAME
    if path.exists() and not _blank(path):
        found, total = recoverable(_salvage_journal(path), folder, data_root)
        note = (
            f"the journal {path} cannot be read; a run will set it aside and rebuild it:"
            f" {len(found)} of {total} recorded files still match their size and SHA-256"
        )
    elif _has_data(data_root):
        found, total = recoverable([], folder, data_root)
        note = (
            f"there is no journal in {folder} but data files are present: {len(found)} of them"
            " match the last report's size and SHA-256 and would be kept"
        )
    else:
        return {}, None
    return {entry.path: entry for entry, _ in found}, note


def _blank(path: Path) -> bool:
    """Is the journal at ``path`` a file with no tables yet: made by a run stopped, or a
    disk that filled, before its first commit? Nothing was ever recorded in it, so the run
    and every reader take it for no journal at all (the run makes its tables in place)."""
    try:
        db = sqlite3.connect(readonly_uri(path), uri=True)
    except sqlite3.Error:
        return False
    try:
        return int(db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]) == 0
    except sqlite3.Error:
        return False  # unreadable: damage, said as such by whoever opens it
    finally:
        db.close()


def _salvage_journal(path: Path) -> list[tuple[object, ...]]:
    """Whatever rows of a damaged journal can still be read (often none)."""
    rows: list[tuple[object, ...]] = []
    try:
        db = sqlite3.connect(readonly_uri(path), uri=True)
    except sqlite3.Error:
        return rows
    try:
        for row in db.execute("SELECT * FROM items"):
            rows.append(tuple(row))
    except sqlite3.Error:
        pass  # keep what was read before the damage
    finally:
        db.close()
    return rows


def _migrated_in_memory(db: sqlite3.Connection, version: int) -> sqlite3.Connection:
    """A copy of an older journal, brought to this release's format in memory: readers (the
    dry run, ``status``) query the current columns without writing to the file, which only a
    real run migrates (after its backup). ``db`` is closed; the copy is returned."""
    copy = sqlite3.connect(":memory:", isolation_level=None)
    try:
        db.backup(copy)
        with copy:
            copy.execute("BEGIN")
            for step in MIGRATIONS[version:]:
                step(copy)
            copy.execute(f"PRAGMA user_version = {format_version()}")
    except BaseException:
        copy.close()
        raise
    finally:
        db.close()
    return copy


def _migrate(db: sqlite3.Connection, path: Path, version: int) -> None:
    """Bring a journal of an older format up to this release's, in one transaction, after a
    backup copy beside it (``journal.sqlite3.v0-backup`` for a 0.1.0 journal). A step that
    fails leaves the journal exactly as it was."""
    backup = path.with_name(f"{path.name}.v{version}-backup")
    _back_up(db, backup)
    try:
        with db:
            db.execute("BEGIN IMMEDIATE")
            for step in MIGRATIONS[version:]:
                step(db)
            db.execute(f"PRAGMA user_version = {format_version()}")
    except sqlite3.Error as exc:
        raise LocalWriteError(
            f"cannot update the journal {path} from format {version} to {format_version()}:"
            f" {exc}; it was left as it was (a copy is in {backup.name})"
        ) from exc


def _back_up(db: sqlite3.Connection, backup: Path) -> None:
    """Copy the journal to ``backup`` whole or not at all: into a temporary file, renamed
    over ``backup`` once complete, so a run killed or a disk filled during the copy leaves
    no partial backup under the backup's name.

    Made afresh by every attempt, whatever is at ``backup``: a journal still of the old
    format was never migrated since, so the copy made now holds all an earlier one did, and
    what an earlier release left there (it copied in place) may be empty or partial."""
    temporary = backup.with_name(backup.name + ".tmp")
    leftovers = [Path(f"{name}{suffix}") for name in (temporary, backup) for suffix in _SIDE]
    try:
        # A killed copy's rollback journal would be played back into whatever takes its name.
        for leftover in [temporary, *leftovers]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        copy = sqlite3.connect(temporary)
        try:
            db.backup(copy)
        finally:
            copy.close()
        os.replace(temporary, backup)
    except (OSError, sqlite3.Error) as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise LocalWriteError(
            f"cannot keep a backup of the journal before updating its format: {backup}:"
            f" {exc}; the journal was left untouched"
        ) from exc


#: The files SQLite keeps beside a database while writing it.
_SIDE = ("-journal", "-wal", "-shm")


def _report_entries(report: Path, data_root: Path | None) -> dict[str, tuple[int, str]]:
    """(size, sha256) of the files the last report says were downloaded or skipped."""
    if data_root is None:
        return {}
    try:
        items = json.loads(report.read_text(encoding="utf-8"))["items"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    entries = {}
    for entry in items if isinstance(items, list) else []:
        try:
            if entry["status"] in ("downloaded", "skipped") and entry["sha256"]:
                key = Path(entry["path"]).resolve().relative_to(data_root.resolve()).as_posix()
                entries[key] = (int(entry["bytes"]), str(entry["sha256"]))
        except (KeyError, TypeError, ValueError):
            continue
    return entries


def _has_data(root: Path) -> bool:
    for kind in ("meter", "group"):
        folder = root / kind
        if folder.is_dir() and any(folder.iterdir()):
            return True
    return False


__all__ = [
    "MIGRATIONS",
    "Entry",
    "Journal",
    "Record",
    "Unsettled",
    "format_version",
    "lost_journal_entries",
    "readonly_uri",
    "recoverable",
]
