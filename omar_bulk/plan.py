"""From pulls (ids x a date range) to the items a run requests, lazily.

A *pull* is one line of intent: these meters or groups, this inclusive range of trade dates,
this format. An *item* is one request: one id, one chunk of the range. A manifest of hundreds
of meters over decades expands to hundreds of thousands of items, so nothing here holds the
expansion in memory: ``Plan`` re-reads its pulls on every pass and yields items one by one.
"""

from __future__ import annotations

import hashlib
import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta

from .dates import month_end
from .errors import ManifestError
from .text import printable, unprintable

KINDS = ("meter", "group")
FORMATS = ("mdef", "csv")
TIME_TYPES = ("PST", "DST")
#: Bytes in one file or folder name (Linux, macOS; an id is encoded in UTF-8).
NAME_MAX = 255
#: What the longest name holding an id adds to it: a history copy of a data file,
#: ``{ID}_{YYYYMMDD}_{YYYYMMDD}_{PST}.mdef.{YYYYMMDDTHHMMSSZ}-{N}`` (N to 9999). A ``.part``
#: file (+5) and a kept error page (``.{YYYYMMDDTHHMMSS}.html``, +21) add less.
LONGEST_NAME_SUFFIX = len("_20240101_20240131_PST.mdef") + len(".20240101T000000Z-9999")
#: The longest id, in UTF-8 bytes: room for every suffix above, and a round number.
MAX_ID_BYTES = 200

_ONE_DAY = timedelta(days=1)
_DAYS = re.compile(r"^([1-9][0-9]{0,4})d$")
#: Where the grid of ``<N>d`` chunks under a rolling start is anchored (``Chunking.floor``).
EPOCH = date(1970, 1, 1)
_FIRST_DAY = (date.min - EPOCH).days


def _days_after(day: date, days: int, limit: date) -> date:
    """``day`` plus ``days``, or ``limit`` if that comes first (so 9999-12-31 never overflows)."""
    if days >= (limit - day).days:
        return limit
    return day + timedelta(days=days)


@dataclass(frozen=True, slots=True)
class Chunking:
    """How a date range is cut: calendar ``month`` or ``week``, fixed ``days``, or ``none``."""

    unit: str
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> Chunking:
        value = text.strip().lower()
        if value in ("month", "week", "none"):
            return cls(value)
        if value == "day":
            return cls("days", 1)
        match = _DAYS.match(value)
        if match:
            return cls("days", int(match.group(1)))
        raise ValueError(f"unknown chunk {text!r}: use month, week, day, <N>d (e.g. 7d) or none")

    def __str__(self) -> str:
        return f"{self.days}d" if self.unit == "days" else self.unit

    def split(self, start: date, end: date) -> Iterator[tuple[date, date]]:
        """Yield inclusive (first, last) chunks that never overlap and exactly cover start..end.

        Calendar chunks (month, week) are aligned to the calendar, so the first and the last may
        be partial; a range shorter than one chunk is a single chunk.
        """
        cursor = start
        while cursor <= end:
            if self.unit == "month":
                last = month_end(cursor)
            elif self.unit == "week":  # ISO weeks: Monday to Sunday
                last = _days_after(cursor, 6 - cursor.weekday(), end)
            elif self.unit == "days":
                last = _days_after(cursor, self.days - 1, end)
            else:
                last = end
            last = min(last, end)
            yield cursor, last
            if last == end:  # stop here: the day after may lie past date.max
                return
            cursor = last + _ONE_DAY

    def floor(self, day: date) -> date:
        """The first day of the chunk that holds ``day``, on a grid that does not move.

        A relative start (``-1826d``) moves a day every morning; rounded down to this, the
        chunks it begins stay the same files from one morning to the next, and the first
        one stays whole. Calendar chunks round to the 1st of the month or to Monday; ``<N>d``
        chunks to a multiple of N days since ``EPOCH`` (1970-01-01, or 0001-01-01 where that
        grid would fall before the calendar); ``none`` has no grid: the day itself.
        """
        if self.unit == "month":
            return day.replace(day=1)
        if self.unit == "week":  # 0001-01-01 is a Monday: never before the calendar
            return day - timedelta(days=day.weekday())
        if self.unit == "days":
            offset = (day - EPOCH).days
            offset -= offset % self.days
            return date.min if offset < _FIRST_DAY else EPOCH + timedelta(days=offset)
        return day

    def count(self, start: date, end: date) -> int:
        """Number of chunks ``split`` yields, without building them where it can."""
        if start > end:
            return 0
        if self.unit == "none":
            return 1
        if self.unit == "days":
            return ((end - start).days // self.days) + 1
        if self.unit == "month":
            return (end.year - start.year) * 12 + end.month - start.month + 1
        monday_first = start - timedelta(days=start.weekday())
        monday_last = end - timedelta(days=end.weekday())
        return (monday_last - monday_first).days // 7 + 1


@dataclass(frozen=True, slots=True)
class Pull:
    """One manifest entry: ids of one kind crossed with one inclusive date range."""

    kind: str
    ids: tuple[str, ...]
    start: date
    end: date
    format: str
    time_type: str
    chunking: Chunking
    where: str = ""

    def items(self) -> Iterator[Item]:
        kind, fmt, time_type = self.kind, self.format, self.time_type
        cut = str(self.chunking)
        count = self.chunking.count(self.start, self.end)
        if count <= _SHARED_CHUNKS:
            # Every id gets the same chunks: cut the range once (a TOML pull's 252 months for
            # 1,000 meters), not once per id; one chunk is the range itself (a CSV row's month).
            chunks = (
                [(self.start, self.end)]
                if count == 1
                else list(self.chunking.split(self.start, self.end))
            )
            for ident in self.ids:
                for first, last in chunks:
                    yield Item(kind, ident, first, last, fmt, time_type, cut)
            return
        for ident in self.ids:
            for first, last in self.chunking.split(self.start, self.end):
                yield Item(kind, ident, first, last, fmt, time_type, cut)


#: Up to this many chunks, a pull cuts its range once for all its ids (a list this long is
#: small); beyond, once per id, so that no range (daily chunks over centuries) is held whole.
_SHARED_CHUNKS = 4096


@dataclass(frozen=True, slots=True)
class Item:
    """One request: one meter or group, one chunk of dates, one format and time type."""

    kind: str
    id: str
    start: date
    end: date
    format: str
    time_type: str
    #: The chunking it was cut by (``str(Chunking)``; "" when not known). Not part of the
    #: item's identity: two chunkings that cut the same range ask for the same file.
    chunk: str = field(default="", compare=False, repr=False)

    @property
    def series(self) -> tuple[str, str, str, str]:
        """Items of one series land in one folder and may overlap only by mistake."""
        return (self.kind, self.id, self.format, self.time_type)


def check_id(ident: str, where: str) -> str:
    """Return a usable meter or group id, or raise: ids become folder and file names.

    Callers strip surrounding blanks first (as manifests do); what is left must fit every name
    it goes into, in bytes, and must show on a terminal as what it is.
    """
    if not ident:
        raise ManifestError(where, "empty id")
    plain = ident.isascii() and ident.isprintable()  # most ids: no per-character look-up
    bad = [] if plain else sorted({ch for ch in ident if unprintable(ch)})
    if any("\ud800" <= ch <= "\udfff" for ch in bad):  # bytes that did not decode
        raise ManifestError(where, f"id '{_shown(ident)}' is not valid UTF-8 text")
    if bad:
        names = ", ".join(printable(ch) for ch in bad)
        raise ManifestError(
            where,
            f"id '{_shown(ident)}' holds control, format or line-separator characters ({names}): "
            "ids become file names and are printed",
        )
    if "/" in ident or "\\" in ident or ".." in ident or ident in (".",):
        raise ManifestError(
            where, f"id '{_shown(ident)}' holds '/', '\\' or '..': ids become file names"
        )
    size = len(ident) if plain else len(ident.encode("utf-8"))
    if size > MAX_ID_BYTES:
        raise ManifestError(
            where,
            f"id longer than {MAX_ID_BYTES} bytes in UTF-8 ({size}: '{_shown(ident)}'); with its"
            f" dates, format and history suffix it must fit in a {NAME_MAX}-byte file name",
        )
    return ident


def _shown(ident: str) -> str:
    return printable(ident, limit=60)


def make_pull(
    *,
    kind: str,
    ids: Iterable[str],
    start: date,
    end: date,
    format: str,
    time_type: str,
    chunk: str | Chunking,
    where: str,
) -> Pull:
    """Validate one pull's fields and build it; every manifest form goes through here."""
    return Pull(
        *check_pull(
            kind=kind,
            ids=ids,
            start=start,
            end=end,
            format=format,
            time_type=time_type,
            chunk=chunk,
            where=where,
        )
    )


#: A pull's fields as ``Pull`` takes them, validated.
PullFields = tuple[str, tuple[str, ...], date, date, str, str, Chunking, str]
#: What a plan's survey needs of a pull: kind, ids, format, time type, and chunks per id.
Census = tuple[str, tuple[str, ...], str, str, int]


def check_pull(
    *,
    kind: str,
    ids: Iterable[str],
    start: date,
    end: date,
    format: str,
    time_type: str,
    chunk: str | Chunking,
    where: str,
) -> PullFields:
    """``make_pull``'s checks, without the ``Pull``: for a reader of a million rows whose
    survey has no use for one (``Plan``'s ``census``)."""
    if kind not in KINDS:
        raise ManifestError(where, f"unknown kind {kind!r}: use meter or group")
    fmt = format.strip().lower()
    if fmt not in FORMATS:
        raise ManifestError(where, f"unknown format {format!r}: use mdef or csv")
    tt = time_type.strip().upper()
    if tt not in TIME_TYPES:
        raise ManifestError(where, f"unknown time type {time_type!r}: use PST or DST")
    if isinstance(chunk, Chunking):
        chunking = chunk
    else:
        try:
            chunking = Chunking.parse(chunk)
        except ValueError as exc:
            raise ManifestError(where, str(exc)) from None
    if end < start:
        raise ManifestError(where, f"end {end.isoformat()} is before start {start.isoformat()}")
    checked = tuple(ids)
    for ident in checked:
        check_id(ident, where)
    return kind, checked, start, end, fmt, tt, chunking, where


class Plan:
    """A re-iterable, lazily expanded set of items, duplicates removed.

    ``source`` is called afresh for each pass and yields validated pulls (a manifest re-reads
    its file). Exact duplicates (the same id, chunk, format and time type planned twice) are
    dropped; only series that appear in more than one place are tracked for that, by a digest
    per item, so an ordinary plan costs no memory per item.

    Finding those series costs 8 bytes per id, not an entry per id in a dict: the survey keeps
    each series' hash in one of ``_BUCKETS`` arrays of 64-bit integers, then looks for a hash
    seen twice one bucket at a time. A ``Counter`` of series took 289 bytes per id (a dry run of
    a million-row manifest peaked at 409 MB; now 50 MB). Two series that share a hash are both
    tracked: harmless, as tracking only adds digests; duplicates are still told by the item.
    """

    def __init__(
        self,
        source: Callable[[], Iterable[Pull]],
        *,
        name: str = "plan",
        census: Callable[[], Iterable[Census]] | None = None,
        notes: list[str] | None = None,
    ) -> None:
        self._source = source
        #: Warnings found while reading the pulls (a rolling start that makes a new file every
        #: day), filled in by the survey at the latest; a run prints them.
        self.notes = notes if notes is not None else []
        #: The survey's own pass, if the source has a cheaper one: the same checks, in the
        #: same order, and for each pull what ``_census`` makes of it.
        self._census = census or self._tally
        self.name = name
        self._repeated: frozenset[int] | None = None
        self._count: int | None = None
        #: Digests of the items of repeated series, gathered by ``also_plans``.
        self._named: frozenset[bytes] | None = None

    def survey(self) -> int:
        """Read every pull once (raising on the first bad one) and return the item count."""
        if self._count is not None:
            return self._count
        buckets = [array("q") for _ in range(_BUCKETS)]
        raw = 0
        for kind, ids, fmt, time_type, per_id in self._census():
            raw += per_id * len(ids)
            for ident in ids:
                key = hash((kind, ident, fmt, time_type))
                buckets[key % _BUCKETS].append(key)
        self._repeated = frozenset(_repeated_hashes(buckets))
        self._count = sum(1 for _ in self) if self._repeated else raw
        if self._count == 0:
            raise ManifestError(self.name, "nothing to fetch")
        return self._count

    def _tally(self) -> Iterator[Census]:
        for pull in self._source():
            count = pull.chunking.count(pull.start, pull.end)
            yield pull.kind, pull.ids, pull.format, pull.time_type, count

    def __iter__(self) -> Iterator[Item]:
        if self._repeated is None:
            self.survey()
        repeated = self._repeated or frozenset()
        done: set[bytes] = set()
        for pull in self._source():
            # One id over one chunk (a CSV row's month) is its own item: no generator for it.
            single = len(pull.ids) == 1 and pull.chunking.count(pull.start, pull.end) == 1
            items: Iterable[Item] = (
                (
                    Item(
                        pull.kind,
                        pull.ids[0],
                        pull.start,
                        pull.end,
                        pull.format,
                        pull.time_type,
                        str(pull.chunking),
                    ),
                )
                if single
                else pull.items()
            )
            for item in items:
                if repeated and hash(item.series) in repeated:
                    digest = _digest(item)
                    if digest in done:
                        continue
                    done.add(digest)
                yield item

    def also_plans(self, item: Item) -> bool:
        """Does the plan name ``item`` beside another item of its series that starts on the
        same day (the caller's, which the plan names)? One pull cuts an id's range into
        chunks that do not overlap, so only a series that more than one pull plans can
        name both: only those series' items are gathered, in one pass at the first call.
        An ordinary plan has none and answers at once."""
        if self._repeated is None:
            self.survey()
        repeated = self._repeated or frozenset()
        if hash(item.series) not in repeated:
            return False
        if self._named is None:
            self._named = frozenset(_digest(i) for i in self if hash(i.series) in repeated)
        return _digest(item) in self._named


def _digest(item: Item) -> bytes:
    """An item's identity in 8 bytes (its chunking is no part of it)."""
    return hashlib.blake2b(repr(item).encode(), digest_size=8).digest()


#: Hash buckets of the survey: a bucket's set, the only per-id objects, holds 1/64 of the ids.
_BUCKETS = 64


def _repeated_hashes(buckets: list[array[int]]) -> set[int]:
    """The values found more than once, emptying ``buckets`` as it goes."""
    repeated: set[int] = set()
    while buckets:
        seen: set[int] = set()
        for key in buckets.pop():
            if key in seen:
                repeated.add(key)
            else:
                seen.add(key)
    return repeated


__all__ = [
    "EPOCH",
    "FORMATS",
    "KINDS",
    "LONGEST_NAME_SUFFIX",
    "MAX_ID_BYTES",
    "NAME_MAX",
    "TIME_TYPES",
    "Census",
    "Chunking",
    "Item",
    "Plan",
    "Pull",
    "PullFields",
    "check_id",
    "check_pull",
    "make_pull",
]
