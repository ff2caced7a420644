"""The OMAR-Online download specification's URL rules, and where each file lands.

Specification, section 3.1: the program name sits directly under the base URL, the parameters
follow in a fixed order, dates travel as ``MM%2FDD%2FYYYY``, and ``group`` repeats the id when
downloading by group and is present but empty when downloading by meter (resource). Section 3.2:
``getMDEF.jsp`` produces MDEF files, ``getSQMDCsvForDownload.jsp`` CSV files.

URLs are built here as finished strings, already percent-encoded; the transport must send them
untouched (see ``fetch``: yarl would otherwise turn ``%2F`` back into ``/``).
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import PurePosixPath
from urllib.parse import quote

from .plan import Item

PROD_URL = "https://omar-online.caiso.com:444/"
TEST_URL = "https://omar-onlinetest.caiso.com:444/"
ENVIRONMENTS = {"prod": PROD_URL, "test": TEST_URL}

PROGRAMS = {"mdef": "getMDEF.jsp", "csv": "getSQMDCsvForDownload.jsp"}
FILE_FORMATS = {"mdef": "MDEF", "csv": "CSV"}
EXTENSIONS = {"mdef": "mdef", "csv": "csv"}

#: Parameter names in the order the specification lists them.
PARAMETERS = (
    "requestedFormat",
    "datasourceType",
    "groupOrMeter",
    "selectedMeters",
    "startDate",
    "endDate",
    "timeType",
    "fileFormat",
    "group",
)


#: ``requestedFormat={0}&datasourceType={1}&...``: the parameters in order, filled per item
#: (a million-row dry run builds a million of these).
_QUERY = "&".join(f"{name}={{{index}}}" for index, name in enumerate(PARAMETERS))


def wire_date(day: date) -> str:
    """``MM%2FDD%2FYYYY``: the specification's date with its slashes encoded."""
    return f"{day.month:02d}%2F{day.day:02d}%2F{day.year:04d}"


def quote_id(ident: str) -> str:
    """Percent-encode an id for the query; letters, digits and ``-._~`` stay as they are."""
    return quote(ident, safe="")


def normalise_base_url(base_url: str) -> str:
    """The base URL with exactly one trailing slash, so programs sit directly under it."""
    return base_url.rstrip("/") + "/"


def request_url(base_url: str, item: Item) -> str:
    """The full request URL for ``item``, exactly as it must go on the wire."""
    ident = quote_id(item.id)
    by_group = item.kind == "group"
    values = (
        "download",
        "SQMD",
        "group" if by_group else "meter",
        ident,
        wire_date(item.start),
        wire_date(item.end),
        item.time_type,
        FILE_FORMATS[item.format],
        ident if by_group else "",
    )
    return f"{base_url}{PROGRAMS[item.format]}?{_QUERY.format(*values)}"


def parse_relative_path(rel: PurePosixPath) -> Item | None:
    """The item a path of the output layout belongs to, or None if it is not one."""
    parts = rel.parts
    if len(parts) != 3 or parts[0] not in ("meter", "group"):
        return None
    kind, ident, name = parts
    stem, _, extension = name.rpartition(".")
    fmt = {v: k for k, v in EXTENSIONS.items()}.get(extension)
    pieces = stem.rsplit("_", 3)
    if fmt is None or len(pieces) != 4 or pieces[0] != ident or pieces[3] not in ("PST", "DST"):
        return None
    try:
        start = datetime.strptime(pieces[1], "%Y%m%d").date()
        end = datetime.strptime(pieces[2], "%Y%m%d").date()
    except ValueError:
        return None
    item = Item(kind, ident, start, end, fmt, pieces[3])
    return item if relative_path(item) == rel else None


def relative_path(item: Item) -> PurePosixPath:
    """``{meter|group}/{ID}/{ID}_{YYYYMMDD}_{YYYYMMDD}_{PST|DST}.{mdef|csv}``."""
    return PurePosixPath(relative_key(item))


def relative_key(item: Item) -> str:
    """``relative_path`` as a plain string: the journal's key, cheap enough for every item."""
    s, e = item.start, item.end
    return (
        f"{item.kind}/{item.id}/{item.id}_{s.year:04d}{s.month:02d}{s.day:02d}_"
        f"{e.year:04d}{e.month:02d}{e.day:02d}_{item.time_type}.{EXTENSIONS[item.format]}"
    )


__all__ = [
    "ENVIRONMENTS",
    "EXTENSIONS",
    "FILE_FORMATS",
    "PARAMETERS",
    "PROD_URL",
    "PROGRAMS",
    "TEST_URL",
    "normalise_base_url",
    "parse_relative_path",
    "quote_id",
    "relative_key",
    "relative_path",
    "request_url",
    "wire_date",
]
