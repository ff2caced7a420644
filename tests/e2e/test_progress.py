"""The live display: cheap bookkeeping on the event loop, frames at a fixed rate, cut to fit."""

from __future__ import annotations

import io
import time
from datetime import date
from pathlib import Path

import pytest
from rich.console import Console

from omar_bulk.plan import Item
from omar_bulk.progress import MAX_FILE_ROWS, MAX_MESSAGES_PER_FRAME, RichObserver, _time_left
from omar_bulk.results import ItemResult, Status


def item(n: int) -> Item:
    return Item("meter", f"M{n:04d}", date(2024, 1, 1), date(2024, 1, 31), "mdef", "PST")


def path(n: int) -> Path:
    return Path(f"out/meter/M{n:04d}/mdef/M{n:04d}_20240101_20240131_PST.mdef")


def result(n: int, status: str = "downloaded", error: str | None = None) -> ItemResult:
    return ItemResult(item(n), "https://127.0.0.1/x", path(n), status, 10, None, 1, error)


def console(*, width: int = 80, height: int = 24, terminal: bool = True) -> Console:
    return Console(
        file=io.StringIO(),
        width=width,
        height=height,
        force_terminal=terminal,
        color_system=None,
        highlight=False,
        soft_wrap=True,
    )


def frame(observer: RichObserver, *, width: int = 80, height: int = 24) -> list[str]:
    """One frame as the terminal would get it, neither cropped nor wrapped afterwards."""
    screen = console(width=width, height=height, terminal=False)
    screen.print(observer, crop=False, soft_wrap=False)
    text = screen.file.getvalue()  # type: ignore[attr-defined]
    return text.splitlines()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_observer_calls_do_not_draw_only_the_painter_does() -> None:
    """Thousands of events between two frames cost no frame at all: drawing is not per event."""
    with RichObserver(console(), refresh_per_second=0.01) as observer:  # no tick in this test
        observer.planned(960)
        for n in range(960):
            observer.started(item(n), path(n), 1)
            for _ in range(20):
                observer.received(item(n), 65536, 20 * 65536)
            observer.finished(result(n))
        observer.pool(3, 16)
        observer.notice("the server pushed back")
        assert observer.frames == 0
    assert observer.frames <= 2  # the frame with the warning, and the last one


def test_the_display_redraws_at_a_fixed_rate_however_many_events_come() -> None:
    """Frames come from a timer: never more than the rate allows, while events pour in."""
    rate = 50
    observer = RichObserver(console(), refresh_per_second=rate)
    with observer:
        begin = time.monotonic()
        observer.planned(1)
        observer.started(item(1), path(1), 1)
        events = 0
        deadline = begin + 20
        while observer.frames < 5 and time.monotonic() < deadline:
            for _ in range(1000):
                observer.received(item(1), 1, None)
            events += 1000
        elapsed = time.monotonic() - begin
        frames = observer.frames
    assert frames >= 5, "the painter drew nothing"
    assert frames <= elapsed * rate + 2
    assert events > frames * 100  # many events per frame, not one frame per event


def test_bookkeeping_of_bytes_attempts_and_time_with_a_fake_clock() -> None:
    clock = Clock()
    observer = RichObserver(console(), clock=clock)
    observer.planned(2)
    observer.started(item(1), path(1), 1)
    observer.started(item(2), path(2), 3)
    clock.now += 1.5
    rows = frame(observer)
    assert rows[0].startswith("omar-bulk ") and "0/2 files" in rows[0] and "-:--:--" in rows[0]
    assert "2 downloading" in rows[1]
    assert rows[2].split() == ["M0001_20240101_20240131_PST.mdef", "waiting", "1.5", "s"]
    assert "M0002_20240101_20240131_PST.mdef (attempt 3)" in rows[3]

    observer.received(item(1), 1_000_000, 4_000_000)
    observer.received(item(1), 1_000_000, 4_000_000)
    clock.now += 0.5  # two seconds since the start
    rows = frame(observer)
    assert rows[2].split()[1:] == ["2.0", "MB/4.0", "MB", "1.0", "MB/s"]
    assert "2.0 MB  1.0 MB/s" in rows[0]

    observer.finished(result(1))
    observer.retrying(item(2), 4, "HTTP 503", 1.0)
    observer.finished(result(2, Status.FAILED, "HTTP 404"))
    rows = frame(observer)
    assert "2/2 files" in rows[0] and "0:00:00" in rows[0]
    assert rows[1].split() == ["1", "retries", "1", "failed"]
    assert len(rows) == 2  # no downloads left, so no file rows


def test_the_pool_level_shows_only_while_the_server_pushes_back() -> None:
    observer = RichObserver(console())
    observer.planned(4)
    observer.pool(3, 8)
    assert frame(observer)[0].startswith("omar-bulk 3/8 at once ")
    observer.pool(8, 8)
    assert "at once" not in frame(observer)[0]


def test_at_80x24_every_row_fits_and_rows_are_capped_with_a_count_of_the_rest() -> None:
    """64 downloads in flight on an 80x24 terminal: no row folds, nothing runs off the screen."""
    observer = RichObserver(console())
    observer.planned(960)
    observer.pool(48, 64)
    for n in range(64):
        observer.started(item(n), path(n), 1 + n % 3)
        if n % 2:
            observer.received(item(n), 1_073_000_000, 1_073_741_824)
    for n in range(64, 70):
        observer.retrying(item(n), 2, "HTTP 503", 1.0)
        observer.finished(result(n, Status.FAILED, "HTTP 404"))
    rows = frame(observer, width=80, height=24)
    assert len(rows) <= 23  # the cursor rests on the 24th
    assert all(len(row) <= 80 for row in rows)
    files = [row for row in rows if row.startswith("  M")]
    assert len(files) == MAX_FILE_ROWS - 1
    assert rows[-1].strip() == f"... and {64 - len(files)} more downloading"
    # Names and amounts are whole, not cut short with an ellipsis.
    assert all("_PST.mdef" in row and ("waiting" in row or "GB/1.1 GB" in row) for row in files)
    assert "..." not in "".join(files)


def test_a_short_terminal_gets_fewer_rows() -> None:
    observer = RichObserver(console(height=10))
    observer.planned(100)
    for n in range(100):
        observer.started(item(n), path(n), 1)
    rows = frame(observer, width=80, height=10)
    assert len(rows) <= 9
    assert rows[-1].strip() == f"... and {100 - (len(rows) - 3)} more downloading"


def test_a_narrow_terminal_cuts_rows_instead_of_folding_them() -> None:
    observer = RichObserver(console(width=40))
    observer.planned(3)
    observer.started(item(1), path(1), 2)
    rows = frame(observer, width=40)
    assert len(rows) == 3 and all(len(row) <= 40 for row in rows)


def test_failures_retries_and_warnings_are_printed_as_they_happen_a_frame_at_a_time() -> None:
    screen = console(terminal=False)
    with RichObserver(screen, refresh_per_second=0.01) as observer:
        observer.planned(1)
        observer.started(item(1), path(1), 1)
        observer.retrying(item(1), 2, "HTTP 503", 2.0)
        observer.finished(result(1, Status.FAILED, "HTTP 404 Not Found"))
        for n in range(MAX_MESSAGES_PER_FRAME + 10):
            observer.notice(f"warning number {n}")
        observer._flush()
        printed = screen.file.getvalue()  # type: ignore[attr-defined]
    assert "retry M0001 2024-01-01..2024-01-31: HTTP 503 (attempt 2, again in 2.0 s)" in printed
    assert f"failed {path(1)}: HTTP 404 Not Found" in printed
    assert "warning: warning number 27" in printed
    assert "warning number 28" not in printed  # 30 lines a frame at most
    assert "... and 12 more" in printed
    last = screen.file.getvalue()[len(printed) :]  # type: ignore[attr-defined]
    assert "1/1 files" in last and "M0001" not in last  # the last frame: no file rows


def test_nothing_is_drawn_before_the_run_has_planned_so_a_password_prompt_stays_readable() -> None:
    """The certificate (and its password prompt) comes after the display is set up: until the
    run says how many items it plans, the display must leave the terminal alone."""
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=80, height=24)
    with RichObserver(console) as observer:
        assert screen.getvalue() == ""
        assert not observer._painter.is_alive()
        observer.planned(3)
        assert observer._painter.is_alive()
    assert "3" in screen.getvalue()


def test_a_run_that_stops_before_planning_leaves_the_terminal_untouched() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=80, height=24)
    with RichObserver(console):
        pass
    assert screen.getvalue() == ""


@pytest.mark.parametrize(
    ("done", "total", "elapsed", "shown"),
    [
        (0, 10, 5.0, "-:--:--"),
        (10, 10, 5.0, "0:00:00"),
        (1, 8, 900.0, "1:45:00"),  # 7 more at 15 minutes each
        (3, 4, 59.0 * 3, "0:00:59"),
        (1, 100, 3600.0, "99:00:00"),
    ],
)
def test_time_left_is_hours_minutes_seconds(
    done: int, total: int, elapsed: float, shown: str
) -> None:
    assert _time_left(done, total, elapsed) == shown
