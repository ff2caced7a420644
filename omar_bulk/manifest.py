"""Manifests: the TOML and CSV files that say which ids and dates to fetch.

TOML::

    format = "mdef"          # optional defaults for every pull
    time_type = "PST"
    chunk = "month"

    [[pull]]
    meters = ["MTR_001", "MTR_002"]
    groups = ["GRP_A"]
    start = 2019-01-01
    end = 2023-12-31
    format = "csv"           # optional, this pull only

CSV, one id and range per row (``format``, ``time_type`` and ``chunk`` columns optional)::

    kind,id,start,end,format,time_type
    meter,MTR_001,2019-01-01,2023-12-31,mdef,PST

Every problem is a ``ManifestError`` naming the file and line. Nothing here is sent anywhere:
the whole manifest is read and checked before the first request.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import stat
import sys
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from itertools import starmap
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

from .dates import california_today, is_relative, parse_date
from .errors import ManifestError
from .plan import Census, Chunking, Plan, Pull, PullFields, check_pull, make_pull
from .userfiles import describe, is_stdio, read_whole

CSV_REQUIRED = ("kind", "id", "start", "end")
CSV_OPTIONAL = ("format", "time_type", "chunk")
PULL_KEYS = {"meters", "groups", "start", "end", "format", "time_type", "chunk"}
TOP_KEYS = {"format", "time_type", "chunk", "pull"}
#: What ``errors="surrogateescape"`` turns a byte that is not UTF-8 into.
_UNDECODED = re.compile("[\udc80-\udcff]")
#: Anything ``str.strip`` would remove, in one scan of a row.
_SPACE = re.compile(r"\s")


@dataclass(frozen=True, slots=True)
class Defaults:
    """What a manifest leaves out: from the command line, else the built-in defaults.

    ``today`` anchors relative dates (``today``, ``-60d``); None means today in California.
    """

    format: str = "mdef"
    time_type: str = "PST"
    chunk: str = "month"
    today: date | None = None


def load_manifest(path: Path, defaults: Defaults = Defaults()) -> Plan:
    """Read and check a manifest; return its plan.

    ``-`` reads standard input. A regular file is read again on each pass over the plan (a
    CSV of a million rows is never held whole); what can be read only once (standard input,
    a FIFO, a process substitution) is read whole first, up to ``MAX_MANIFEST`` bytes. Either
    is CSV when its first line is a ``kind,...`` header, else TOML (a ``.csv`` or ``.toml``
    name says so without looking).
    """
    defaults = _anchored(defaults)
    name = STDIN if is_stdio(path) else str(path)
    source = _source(path, name)
    kind = _sniff(path, source)
    notes: list[str] = []
    if kind == "csv":
        plan = Plan(
            lambda: starmap(Pull, _csv_pulls(source, name, defaults, notes)),
            name=name,
            census=lambda: _census(_csv_pulls(source, name, defaults, notes)),
            notes=notes,
        )
    else:
        pulls = _toml_pulls(source, name, defaults, notes)
        plan = Plan(lambda: pulls, name=name, notes=notes)
    plan.survey()
    return plan


#: How messages name a manifest read from standard input (``fetch -``).
STDIN = "<stdin>"
#: The largest manifest read. The documented case of a million CSV rows takes about 45 MB;
#: a quarter of a gigabyte leaves room for long ids and every optional column, and stops a
#: device that never ends (or a wrong file) before it fills the memory.
MAX_MANIFEST = 256 << 20

#: A regular file (read on each pass), or the whole of what can be read only once.
_Source = Path | bytes


def _source(path: Path, name: str) -> _Source:
    def fail(why: str) -> ManifestError:
        return ManifestError(name, why)

    if is_stdio(path):
        if sys.stdin is None:  # started with standard input closed (``<&-``)
            raise fail("standard input is closed: pipe or redirect a manifest into it")
        if sys.stdin.isatty():  # nothing piped in: do not wait for typing
            raise fail("standard input is a terminal: pipe or redirect a manifest into it")
        return read_whole(path, MAX_MANIFEST, fail, text=True)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise fail("no such file") from None
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror or exc}") from None
    if stat.S_ISREG(info.st_mode):
        if info.st_size > MAX_MANIFEST:
            raise fail(f"larger than the {MAX_MANIFEST >> 20} MiB a manifest may take")
        return path
    if stat.S_ISDIR(info.st_mode):
        raise fail("is a folder, not a file")
    if stat.S_ISFIFO(info.st_mode) or stat.S_ISCHR(info.st_mode):
        return read_whole(path, MAX_MANIFEST, fail, text=True)
    raise fail(f"not a file (it is {describe(path)})")


def adhoc_plan(
    *,
    meters: list[str],
    groups: list[str],
    start: str | None,
    end: str | None,
    defaults: Defaults,
) -> Plan:
    """The plan for ``--meter``/``--group`` with ``--start``/``--end`` on the command line."""
    where = "command line"
    defaults = _anchored(defaults)
    if not meters and not groups:
        raise ManifestError(where, "give a manifest file, or --meter/--group with --start/--end")
    if start is None or end is None:
        raise ManifestError(where, "--meter/--group need both --start and --end")
    first = _date(start, where, "--start", today=defaults.today)
    last = _date(end, where, "--end", end=True, today=defaults.today)
    notes: list[str] = []
    if is_relative(start):
        first = _rolled(first, last, defaults.chunk, where, notes)
    pulls = [
        make_pull(
            kind=kind,
            ids=[ident.strip() for ident in ids],  # as a manifest's cells are
            start=first,
            end=last,
            format=defaults.format,
            time_type=defaults.time_type,
            chunk=defaults.chunk,
            where=where,
        )
        for kind, ids in (("meter", meters), ("group", groups))
        if ids
    ]
    plan = Plan(lambda: pulls, name=where, notes=notes)
    plan.survey()
    return plan


#: The start of the warning for a rolling start that no chunk grid can hold in place.
_ROLLING_NONE = "a relative start with chunk none makes a new file every day"


def _rolled(start: date, end: date, chunk: str | Chunking, where: str, notes: list[str]) -> date:
    """A relative start rounded down to the first day of its chunk (``Chunking.floor``).

    A start that counts from today moves every morning; unrounded, it would cut a shorter
    first chunk every day (and with ``<N>d`` chunks move every boundary after it), each a
    new file that replaces nothing. Rounded, the window's chunks stay put and its first
    one leaves whole. ``none`` has no grid: the run is warned (once) instead.
    """
    if end < start:
        return start  # check_pull says so, of the dates as written
    if isinstance(chunk, str):
        try:
            chunk = Chunking.parse(chunk)
        except ValueError:
            return start  # check_pull says what is wrong with it
    if chunk.unit == "none":
        if not any(note.startswith(_ROLLING_NONE) for note in notes):
            notes.append(
                f"{_ROLLING_NONE} ({where}): the range's first day moves each morning and"
                " nothing replaces the day before's file; give a fixed start, or a chunk"
                " (month, week, <N>d)"
            )
        return start
    return chunk.floor(start)


def _anchored(defaults: Defaults) -> Defaults:
    """Fix "today" once, so every pass over a manifest sees the same relative dates."""
    if defaults.today is not None:
        return defaults
    return replace(defaults, today=california_today())


def _sniff(path: Path, source: _Source) -> str:
    if not is_stdio(path):
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return "csv"
        if suffix == ".toml":
            return "toml"
    if isinstance(source, bytes):
        head = source[:4096]
    else:
        with source.open("rb") as handle:
            head = handle.read(4096)
    return "csv" if _names_columns(head.removeprefix(b"\xef\xbb\xbf")) else "toml"


def _names_columns(head: bytes) -> bool:
    """Does the first line that is not blank or a ``#`` comment (both formats have them) name
    the CSV columns, ``kind`` and ``id`` among them in any order? A TOML line has ``=`` or
    opens a ``[table]``."""
    for raw in head.splitlines():
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        if b"=" in line or line.startswith(b"["):
            return False
        columns = {column.strip().strip(b'"').lower() for column in line.split(b",")}
        return {b"kind", b"id"} <= columns
    return False


def _date(
    value: object, where: str, field: str, *, end: bool = False, today: date | None = None
) -> date:
    try:
        return parse_date(value, end=end, today=today)
    except ValueError as exc:
        raise ManifestError(where, f"{field}: {exc}") from None


def _read_text(source: _Source, name: str) -> str:
    if isinstance(source, bytes):
        data = source
    else:
        data = read_whole(source, MAX_MANIFEST, lambda why: ManifestError(name, why), text=True)
    if b"\x00" in data:
        raise ManifestError(name, "not a text file (it holds NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ManifestError(f"{name}:{line}", "not a text file (not UTF-8)") from None


# --- TOML -------------------------------------------------------------------------------


def _toml_pulls(source: _Source, path: str, defaults: Defaults, notes: list[str]) -> list[Pull]:
    text = _read_text(source, path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        where = f"{path}:{found.group(1)}" if found else str(path)
        raise ManifestError(where, f"TOML syntax: {exc}") from None
    lines = text.splitlines()
    header_lines = [n for n, ln in enumerate(lines, 1) if re.match(r"\s*\[\[\s*pull\s*\]\]", ln)]

    def top_line(key: str) -> str:
        for n, ln in enumerate(lines, 1):
            if re.match(rf"\s*{re.escape(key)}\s*=", ln):
                return f"{path}:{n}"
        return str(path)

    for key in doc:
        if key not in TOP_KEYS:
            raise ManifestError(top_line(key), f"unknown key {key!r} (expected {_keys(TOP_KEYS)})")
    base = {}
    for key in ("format", "time_type", "chunk"):
        value = doc.get(key, getattr(defaults, key))
        if not isinstance(value, str):
            raise ManifestError(top_line(key), f"{key} must be a string")
        base[key] = value
    tables = doc.get("pull", [])
    if not isinstance(tables, list):
        raise ManifestError(top_line("pull"), "pull must be a [[pull]] table")
    pulls = []
    for index, table in enumerate(tables):
        line = header_lines[index] if index < len(header_lines) else None
        where = f"{path}:{line}" if line else f"{path}: pull #{index + 1}"
        if not isinstance(table, dict):
            raise ManifestError(where, "pull must be a [[pull]] table")
        pulls.extend(_toml_pull(table, base, where, defaults.today, notes))
    return pulls


def _toml_pull(
    table: dict[str, Any], base: dict[str, str], where: str, today: date | None, notes: list[str]
) -> list[Pull]:
    """One ``[[pull]]`` table: a pull for its meters and one for its groups."""
    for key in table:
        if key not in PULL_KEYS:
            hint = " (did you mean meters or groups?)" if key in ("meter", "group", "ids") else ""
            raise ManifestError(where, f"unknown key {key!r} in [[pull]]{hint}")
    for key in ("start", "end"):
        if key not in table:
            raise ManifestError(where, f"[[pull]] has no {key}")
    start = _date(table["start"], where, "start", today=today)
    end = _date(table["end"], where, "end", end=True, today=today)
    options = {}
    for key in ("format", "time_type", "chunk"):
        value = table.get(key, base[key])
        if not isinstance(value, str):
            raise ManifestError(where, f"{key} must be a string")
        options[key] = value
    if is_relative(table["start"]):
        start = _rolled(start, end, options["chunk"], where, notes)
    if "meters" not in table and "groups" not in table:
        raise ManifestError(where, "[[pull]] has neither meters nor groups")
    pulls = []
    for key, kind in (("meters", "meter"), ("groups", "group")):
        ids = _id_list(table.get(key, []), where, key)
        if ids:
            pulls.append(
                make_pull(kind=kind, ids=ids, start=start, end=end, where=where, **options)
            )
    if not pulls:
        raise ManifestError(where, "[[pull]] lists no ids")
    return pulls


def _id_list(value: object, where: str, key: str) -> list[str]:
    if isinstance(value, str | int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        raise ManifestError(where, f"{key} must be a list of ids")
    ids = []
    for entry in value:
        if isinstance(entry, bool) or not isinstance(entry, str | int):
            raise ManifestError(where, f"{key}: {entry!r} is not an id")
        ids.append(str(entry).strip())
    return ids


def _keys(keys: set[str]) -> str:
    return ", ".join(sorted(keys))


# --- CSV --------------------------------------------------------------------------------


def _census(rows: Iterable[PullFields]) -> Iterator[Census]:
    """What a plan's survey needs of each row, without building a ``Pull`` for it."""
    for kind, ids, start, end, fmt, time_type, chunking, _ in rows:
        yield kind, ids, fmt, time_type, chunking.count(start, end)


def _csv_pulls(
    source: _Source, path: str, defaults: Defaults, notes: list[str]
) -> Iterator[PullFields]:
    # Undecodable bytes become lone surrogates, caught row by row: the decoder reads ahead
    # in blocks, so its own error would name a line long before the bad byte.
    handle: IO[str]
    if isinstance(source, bytes):
        handle = io.TextIOWrapper(
            io.BytesIO(source), encoding="utf-8-sig", errors="surrogateescape", newline=""
        )
    else:
        try:
            handle = source.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
        except OSError as exc:
            raise ManifestError(path, f"cannot read: {exc.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            yield from _csv_rows(path, reader, defaults, notes)
        except csv.Error as exc:
            raise ManifestError(f"{path}:{reader.line_num}", f"CSV: {exc}") from None


def _csv_rows(path: str, reader: Any, defaults: Defaults, notes: list[str]) -> Iterator[PullFields]:
    """Validated pulls from a CSV manifest's rows. This runs once per row on every pass (a
    manifest can hold a million rows): one string per row for the checks that look at every
    cell, and the same dates and chunk sizes parsed once, not once per row."""
    header: list[str] | None = None
    pick: Callable[[list[str]], tuple[str, ...]] = itemgetter(0, 1)
    starts: dict[str, date] = {}
    ends: dict[str, date] = {}
    chunks: dict[str, Chunking] = {}
    #: Start cells that count from today (a few distinct strings at most).
    rolling: set[str] = set()
    today = defaults.today
    name = path
    for row in reader:
        joined = "".join(row)
        if not joined.isascii() and _UNDECODED.search(joined):
            raise ManifestError(f"{name}:{reader.line_num}", "not a text file (not UTF-8)")
        if not joined or joined.isspace() or row[0].lstrip().startswith("#"):
            continue  # a blank line (every cell blank) or a comment
        where = f"{name}:{reader.line_num}"
        if "\x00" in joined:
            raise ManifestError(where, "not a text file (it holds NUL bytes)")
        if header is None:
            header = _csv_header(row, where)
            columns = tuple(header.index(c) if c in header else -1 for c in _CSV_COLUMNS)
            pick = itemgetter(*columns)
            continue
        if len(row) != len(header):
            raise ManifestError(where, f"{len(row)} fields where the header has {len(header)}")
        row.append("")  # what an absent optional column (index -1) reads
        cells = pick(row)
        if _SPACE.search(joined):  # else no cell has blanks to strip
            cells = tuple([cell.strip() for cell in cells])
        kind_cell, ident, start_cell, end_cell, fmt, time_type, chunk_cell = cells
        kind = kind_cell.lower()
        if kind not in ("meter", "group"):
            raise ManifestError(where, f"unknown kind {kind_cell!r}: use meter or group")
        start = starts.get(start_cell)
        if start is None:
            start = _remember(starts, start_cell, _date(start_cell, where, "start", today=today))
            if is_relative(start_cell):
                rolling.add(start_cell)
        end = ends.get(end_cell)
        if end is None:
            end = _remember(ends, end_cell, _date(end_cell, where, "end", end=True, today=today))
        chunk_text = chunk_cell or defaults.chunk
        chunk: str | Chunking | None = chunks.get(chunk_text)
        if chunk is None:
            chunk = chunk_text  # check_pull says what is wrong with it, if anything
            if len(chunks) < _REMEMBERED:
                with contextlib.suppress(ValueError):
                    chunk = chunks[chunk_text] = Chunking.parse(chunk_text)
        if rolling and start_cell in rolling:
            start = _rolled(start, end, chunk, where, notes)
        yield check_pull(
            kind=kind,
            ids=(ident,),
            start=start,
            end=end,
            format=fmt or defaults.format,
            time_type=time_type or defaults.time_type,
            chunk=chunk,
            where=where,
        )
    if header is None:
        raise ManifestError(name, "empty manifest: nothing to fetch")


#: The columns a row is read by, in this order (optional ones may be absent).
_CSV_COLUMNS = ("kind", "id", "start", "end", "format", "time_type", "chunk")
#: Distinct dates and chunk sizes remembered per pass; a manifest rarely has more.
_REMEMBERED = 4096


def _remember(cache: dict[str, date], key: str, value: date) -> date:
    if len(cache) >= _REMEMBERED:
        cache.clear()
    cache[key] = value
    return value


def _csv_header(row: list[str], where: str) -> list[str]:
    header = [cell.strip().lower() for cell in row]
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise ManifestError(
            where,
            f"header lacks column {', '.join(missing)} "
            f"(expected {','.join(CSV_REQUIRED)}[,{','.join(CSV_OPTIONAL)}])",
        )
    unknown = [c for c in header if c not in CSV_REQUIRED + CSV_OPTIONAL]
    if unknown:
        raise ManifestError(where, f"unknown column {', '.join(unknown)}")
    if len(set(header)) != len(header):
        raise ManifestError(where, "a column appears twice in the header")
    return header


__all__ = [
    "CSV_OPTIONAL",
    "CSV_REQUIRED",
    "MAX_MANIFEST",
    "PULL_KEYS",
    "STDIN",
    "TOP_KEYS",
    "Defaults",
    "adhoc_plan",
    "load_manifest",
]
