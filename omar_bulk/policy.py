"""Which items a run asks for, what a refetched body amounts to, and which earlier files a
settled one replaces: pure decisions.

The skip rule is here once, for the real run's producer and for ``--dry-run`` alike, so the
dry run prints exactly what a run would request. No function touches the disk: the
caller says whether the file still matches the journal (``journal.vouches`` and
``journal.hash_matches``), because only the caller knows whether it may hash on this thread.

A chunk that ends ``yesterday`` grows by a day every day, and so does its file's name (the
name holds the dates actually requested, as the request does). ``superseded`` says which
earlier files of the same chunk the longer one replaces; the engine moves them to history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import PurePosixPath

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

    A file superseded by a longer one of the same chunk (planned again by a run dated back)
    is skipped unless ``--overwrite``: the longer file stands for it.
    """
    if entry is not None and entry.superseded_by is not None and not overwrite:
        return Due(fetch=False, previous=entry)
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
    replace, and whether that version's file must be kept in history first."""
    if previous is None:
        return (Status.DOWNLOADED if digest else Status.EMPTY), False
    if (previous.status == Status.EMPTY and digest is None) or (
        previous.status == Status.DOWNLOADED and previous.sha256 == digest
    ):
        return Status.UNCHANGED, False
    return Status.REVISED, previous.status == Status.DOWNLOADED


def superseded(item: Item, key: str, same_start: Iterable[Entry]) -> list[Entry]:
    """The earlier files ``item`` (settled, under ``key``) replaces: among the journal's
    entries whose key starts on ``item``'s first day (``journal.same_start``), those of the
    same kind, id, format and time type that end sooner and are not superseded already.

    Only a shorter range with the same start is replaced: the chunk that grew. Files of
    other lengths that start elsewhere (another ``--chunk``) are left alone, and a shorter
    file never replaces a longer one, so two pulls that chunk one id differently never take
    turns replacing each other. Failed entries are replaced too: their chunk is now on disk.
    """
    replaced = []
    for entry in same_start:
        if entry.path == key or entry.superseded_by is not None:
            continue
        if entry.status == Status.SUPERSEDED:
            continue
        other = parse_relative_path(PurePosixPath(entry.path))
        if other is None or other.series != item.series:
            continue
        if other.start == item.start and other.end < item.end:
            replaced.append(entry)
    return replaced


__all__ = ["KEPT", "Due", "compare", "decide", "needs_disk_check", "superseded"]
