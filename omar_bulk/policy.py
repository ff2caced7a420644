"""Which items a run asks for, and what a refetched body amounts to: pure decisions.

The skip rule is here once, for the real run's producer and for ``--dry-run`` alike, so the
dry run prints exactly what a run would request. Neither function touches the disk: the
caller says whether the file still matches the journal (``journal.vouches`` and
``journal.hash_matches``), because only the caller knows whether it may hash on this thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from .journal import Entry
from .plan import Item
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
    ``--revisit-days`` (its range ends on or after ``revisit_from``). Everything else is
    fetched; a verified file that is fetched again is compared with its new version.
    """
    if entry is None or entry.status not in KEPT:
        return Due(fetch=True)
    again = overwrite or (revisit_from is not None and item.end >= revisit_from)
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


__all__ = ["KEPT", "Due", "compare", "decide", "needs_disk_check"]
