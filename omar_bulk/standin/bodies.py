"""Deterministic, synthetic meter data bodies: the same request always gets the same bytes.

The bodies are shaped like the files OMAR-Online returns (a header naming the meter or group,
the dates and the time type, then hourly interval readings) but the numbers are made up.
``revision`` changes every reading, as a resubmission of meter data would.
"""

from __future__ import annotations

import zlib
from datetime import date, timedelta


def _readings(ident: str, start: date, end: date, revision: int) -> list[tuple[str, int, str]]:
    rows = []
    day = start
    while day <= end:
        stamp = f"{day:%Y%m%d}"
        for hour in range(1, 25):
            seed = zlib.crc32(f"{ident}|{stamp}|{hour}|{revision}".encode())
            rows.append((stamp, hour, f"{seed % 100000 / 100:.3f}"))
        day += timedelta(days=1)
    return rows


def mdef_body(
    kind: str, ident: str, start: date, end: date, time_type: str, revision: int = 0
) -> bytes:
    lines = [
        "MDEF,SYNTHETIC,omar-bulk stand-in server (not CAISO data)",
        f"HDR,{kind.upper()},{ident},{start:%Y%m%d},{end:%Y%m%d},{time_type},60,KWH",
    ]
    lines += [
        f"INT,{stamp},{hour:02d}00,{value},A"
        for stamp, hour, value in _readings(ident, start, end, revision)
    ]
    lines.append(f"END,{ident},{len(lines) - 2}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii", "backslashreplace")


def csv_body(
    kind: str, ident: str, start: date, end: date, time_type: str, revision: int = 0
) -> bytes:
    lines = [f"{kind.upper()}_ID,TRADE_DATE,HOUR_ENDING,TIME_TYPE,KWH"]
    lines += [
        f"{ident},{stamp[:4]}-{stamp[4:6]}-{stamp[6:]},{hour},{time_type},{value}"
        for stamp, hour, value in _readings(ident, start, end, revision)
    ]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


__all__ = [
    "csv_body",
    "mdef_body",
]
