"""Which items a run asks for, what a refetched body amounts to, and which earlier files a
settled one replaces: pure decisions.

The skip rule is here once, for the real run's producer and for ``--dry-run`` alike, so the
dry run prints exactly what a run would request, and so is its one question to the disk:
does the file still match its journal entry (``on_disk``). That is the only function here
that touches the disk; the caller says whether it may hash on its thread (the run hashes off
the event loop, the dry run where it is).

A chunk that ends ``yesterday`` grows by a day every day, and so does its file's name (the
name holds the dates actually requested, as the request does). ``superseded`` says which
earlier files of the same chunk the longer one replaces; the engine moves them to history.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePosixPath
from stat import S_ISLNK

from .dates import month_end
from .journal import Entry
from .plan import Item
from .protocol import parse_relative_path
from .results import Status

#: Journal statuses that stand for a file (or a recorded empty answer) a rerun can skip.
KEPT = (Status.DOWNLOADED, Status.EMPTY)


@dataclass(frozen=True, slots=True)
class Due:
    """The decision for one item: fetch it or not, and the verified entry a refetch is
    compared with (None: nothing on disk to compare with, a plain download)."""

    fetch: bool
    previous: Entry | None = None


@dataclass(frozen=True, slots=True)
class OnDisk:
    """Does the file on disk still match its journal entry: ``good`` (None: only a hash can
    tell, and the caller did not let ``on_disk`` hash), why not (``reason``, for a notice),
    and whether it was hashed (a file whose hash still matches gets its new time stamp)."""

    good: bool | None
    reason: str | None = None
    rehashed: bool = False


def on_disk(entry: Entry, final: Path, *, may_hash: bool) -> OnDisk:
    """Check ``final`` against ``entry`` (``needs_disk_check`` said to): a recorded empty
    answer has no file; a downloaded file must be a regular file (never a link) of the
    recorded size, and is trusted at once if its time stamp did not move. Otherwise its
    bytes are hashed, if ``may_hash``; else ``good`` is None and the caller hashes elsewhere
    (``on_disk`` again, with ``may_hash``), since a big file's hash is slow."""
    good, reason = _stat_check(entry, final)
    if good is not None or not may_hash:
        return OnDisk(good, reason)
    good, reason = _hash_check(entry, final)
    return OnDisk(good, reason, rehashed=True)


def _stat_check(entry: Entry, final: Path) -> tuple[bool | None, str | None]:
    if entry.status == Status.EMPTY:
        return True, None
    if entry.status != Status.DOWNLOADED:
        return False, None
    try:
        stat = final.lstat()
    except OSError:
        return False, f"{final} is missing; fetching it again"
    if S_ISLNK(stat.st_mode):
        # Never vouched for, never followed: the refetch renames the real file over the link.
        return False, f"{final} is a symbolic link, not the file fetched; fetching it again"
    if stat.st_size != entry.bytes:
        return False, (
            f"{final} has {stat.st_size} bytes, the journal says {entry.bytes}; fetching it again"
        )
    if stat.st_mtime_ns == entry.mtime_ns:
        return True, None
    return None, None


def _hash_check(entry: Entry, final: Path) -> tuple[bool, str | None]:
    try:
        with open(final, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return False, f"{final} cannot be read; fetching it again"
    if digest == entry.sha256:
        return True, None
    return False, f"{final} changed since it was fetched; fetching it again"


def needs_disk_check(entry: Entry | None) -> bool:
    """Only an entry that stands for a file can be skipped, so only then look at the disk."""
    return entry is not None and entry.status in KEPT


def decide(
    item: Item,
    entry: Entry | None,
    on_disk: bool,
    *,
    overwrite: bool,
    revisit_from: date | None,
) -> Due:
    """The skip rule.

    An item is skipped when the journal vouches for it (``on_disk``: the file still has the
    recorded size and hash) and nothing asks for it again: not ``--overwrite``, not
    ``--revisit-days`` (its range ends on or after ``revisit_from``), not a failed refetch
    (the entry's ``error``: a revisit that failed is tried again by the next run, whatever
    its window, so ``status`` and the next fetch agree). Everything else is fetched; a
    verified file that is fetched again is compared with its new version.

    Only an item whose file is on disk (or a recorded empty answer) is skipped: a file a
    longer one superseded, planned again (a run dated back with ``--today``, a pull that
    chunks differently), is fetched again, since the file its plan names is in history.
    """
    if entry is None or entry.status not in KEPT:
        return Due(fetch=True)
    again = (
        overwrite
        or entry.error is not None
        or (revisit_from is not None and item.end >= revisit_from)
    )
    if on_disk and not again:
        return Due(fetch=False, previous=entry)
    return Due(fetch=True, previous=entry if on_disk else None)


def compare(previous: Entry | None, digest: str | None) -> tuple[Status, bool]:
    """The status of a complete body (``digest`` None: empty) against the version it would
    replace, and whether that version's file must be kept in history first.

    An empty answer never replaces a file holding data, whatever asked for it again
    (``--revisit-days``, ``--overwrite``, a failed revisit): the server's "no data" for a
    range it served may be a glitch. The refetch is FAILED (``EMPTY_OVER_DATA``): the file
    stays in place, its journal row keeps the error, so ``status`` counts it as failed and
    the next run asks again; an answer with data settles it.
    """
    if previous is None:
        return (Status.DOWNLOADED if digest else Status.EMPTY), False
    if digest is None and previous.status == Status.DOWNLOADED:
        return Status.FAILED, False
    if (previous.status == Status.EMPTY and digest is None) or (
        previous.status == Status.DOWNLOADED and previous.sha256 == digest
    ):
        return Status.UNCHANGED, False
    return Status.REVISED, previous.status == Status.DOWNLOADED


#: The error of a refetch answered empty where the file on disk holds data (``compare``).
EMPTY_OVER_DATA = (
    "answered empty, but {path} holds data: the file is kept, and the next run asks again"
)


@dataclass(frozen=True, slots=True)
class Replacing:
    """What a settled item does to the shorter files of its chunk (``replacing``)."""

    #: The files it replaces: to history, their rows superseded.
    retired: list[Entry]
    #: The files holding data it would have replaced had its answer not been empty: they
    #: stay, with a warning.
    held: list[Entry]


def replacing(item: Item, key: str, same_start: Iterable[Entry]) -> Replacing:
    """``superseded`` and ``held_by_empty`` in one scan of the chunk's entries."""
    entries = list(same_start)
    empty = _answered_empty(key, entries)
    shorter = _shorter_of_same_chunk(item, key, entries)
    held = [entry for entry in shorter if empty and entry.status == Status.DOWNLOADED]
    return Replacing([entry for entry in shorter if entry not in held], held)


def superseded(item: Item, key: str, same_start: Iterable[Entry]) -> list[Entry]:
    """The earlier files ``item`` (settled, under ``key``) replaces: among the journal's
    entries whose key starts on ``item``'s first day (``journal.same_start``, ``key``'s own
    entry included), those of the same kind, id, format, time type and chunking that end
    sooner and are not superseded already.

    Only a shorter range with the same start, cut by the same chunking, is replaced: the
    chunk that grew. A file of another chunking (a monthly January under a ``--chunk none``
    quarter) is a file some other plan names: it stays, and so does anything that starts
    elsewhere; a shorter file never replaces a longer one. Entries of unknown chunking
    (written before journal format 3) are replaced only under ``_grown_before_format_3``.

    Failed entries are replaced too: their chunk is now on disk. An empty answer never
    replaces a file holding data (the server's "no data" for the grown month may be a
    glitch): both stay, and the next revisit of the longer one settles it.
    """
    return replacing(item, key, same_start).retired


def held_by_empty(item: Item, key: str, same_start: Iterable[Entry]) -> list[Entry]:
    """The files holding data that ``superseded`` keeps because ``key``'s answer was empty:
    worth a warning, as the longer file says "no data" where a shorter one has some."""
    return replacing(item, key, same_start).held


def _answered_empty(key: str, entries: list[Entry]) -> bool:
    return any(entry.path == key and entry.status == Status.EMPTY for entry in entries)


def _shorter_of_same_chunk(item: Item, key: str, entries: list[Entry]) -> list[Entry]:
    found = []
    for entry in entries:
        if entry.path == key or entry.superseded_by is not None:
            continue
        if entry.status == Status.SUPERSEDED:
            continue
        other = parse_relative_path(PurePosixPath(entry.path))
        if other is None or other.series != item.series:
            continue
        if other.start != item.start or other.end >= item.end:
            continue
        if _same_chunking(item.chunk, entry.chunk, other.end):
            found.append(entry)
    return found


def _same_chunking(chunk: str, recorded: str | None, shorter_end: date) -> bool:
    """Was the shorter file cut by ``chunk`` (the grown item's; "" when unknown), by its
    journal row's ``recorded`` chunking, or by the rule for rows that have none?"""
    if recorded is None:
        return _grown_before_format_3(chunk, shorter_end)
    return bool(chunk) and recorded == chunk


def _grown_before_format_3(chunk: str, shorter_end: date) -> bool:
    """May a row of unknown chunking that ends on ``shorter_end`` be a shorter version of
    a ``chunk`` chunk that starts on its first day?

    Releases before journal format 3 recorded no chunking, and their piles are what this
    cleans up: the partial months of a daily job. So only a month or week chunk replaces
    such a row, and only one that does not end on a last day of a month or on a Sunday,
    where the whole chunk of a monthly or weekly pull would end: a whole month or week is
    never taken for the partial chunk of another chunking.
    """
    if chunk not in ("month", "week"):
        return False
    return shorter_end != month_end(shorter_end) and shorter_end.weekday() != 6


__all__ = [
    "EMPTY_OVER_DATA",
    "KEPT",
    "Due",
    "OnDisk",
    "Replacing",
    "compare",
    "decide",
    "held_by_empty",
    "needs_disk_check",
    "on_disk",
    "replacing",
    "superseded",
]
