"""What a run produces, as plain immutable data, and the hook through which it reports live.

The engine knows nothing of terminals: it calls an ``Observer`` (``progress.py`` renders one
with rich; a cron job can pass ``NullObserver`` or its own logger) and returns a ``RunResult``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from .plan import Item


class Status(StrEnum):
    """Every state a planned file can be in: an item's outcome, the journal's record of it,
    and a cell of ``omar-bulk status``. The values are what the report and journal store."""

    DOWNLOADED = "downloaded"
    #: The journal vouched for the file on disk; nothing was requested.
    SKIPPED = "skipped"
    #: The server answered 200 with no body: recorded, no file written.
    EMPTY = "empty"
    FAILED = "failed"
    #: A file fetched again (``--revisit-days``, ``--overwrite``) whose bytes changed ...
    REVISED = "revised"
    #: ... or did not.
    UNCHANGED = "unchanged"
    #: Only in ``status --manifest``: planned, never fetched.
    MISSING = "missing"
    #: Only in the journal: a shorter file of a chunk that a longer one replaced (a partial
    #: month that grew); its bytes are in history, its chunk counted once, as the longer file.
    SUPERSEDED = "superseded"
    #: Only in the report: an item whose request had gone out (or that was waiting out a
    #: Retry-After) when the run was interrupted. Not settled: the journal keeps what it had.
    INTERRUPTED = "interrupted"


#: The outcomes one run can give an item, in the order reports list them.
OUTCOMES = (
    Status.DOWNLOADED,
    Status.SKIPPED,
    Status.EMPTY,
    Status.FAILED,
    Status.REVISED,
    Status.UNCHANGED,
)


_json_text = json.JSONEncoder(ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The outcome of one planned item."""

    item: Item
    url: str
    path: Path
    status: Status
    bytes: int = 0
    sha256: str | None = None
    attempts: int = 0
    error: str | None = None

    def as_json(self) -> str:
        """``as_report`` as one line of JSON, without a generic encoder: it runs per item."""
        text = _json_text
        digest = f'"{self.sha256}"' if self.sha256 else "null"
        error = text(self.error) if self.error is not None else "null"
        return (
            f'{{"url": {text(self.url)}, "path": {text(str(self.path))}, "status": '
            f'"{self.status}", "bytes": {self.bytes}, "sha256": {digest}, "attempts": '
            f'{self.attempts}, "error": {error}}}'
        )

    def as_report(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "path": str(self.path),
            "status": self.status,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "attempts": self.attempts,
            "error": self.error,
        }


@dataclass(slots=True)
class Tally:
    """Counts kept while a run goes; frozen into a ``Summary`` at the end."""

    planned: int = 0
    counts: dict[Status, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    bytes: int = 0
    #: Attempted items an interruption left unsettled (not an outcome: not in ``counts``).
    interrupted: int = 0
    #: Earlier, shorter files of a chunk moved to history because a longer one replaced them.
    superseded: int = 0

    def add(self, result: ItemResult) -> None:
        if result.status == Status.INTERRUPTED:
            self.interrupted += 1
            return
        self.counts[result.status] += 1
        if result.status in (Status.DOWNLOADED, Status.REVISED):
            self.bytes += result.bytes

    def __getitem__(self, status: Status) -> int:
        return self.counts[status]

    @property
    def failed(self) -> int:
        return self.counts[Status.FAILED]

    @property
    def done(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class Summary:
    planned: int
    downloaded: int
    skipped: int
    empty: int
    failed: int
    bytes: int
    seconds: float
    interrupted: bool = False
    not_attempted: int = 0
    revised: int = 0
    unchanged: int = 0
    concurrency: dict[str, int] = field(default_factory=dict)
    #: Attempted items left unsettled by an interruption (listed as ``interrupted`` in the
    #: report's items); ``not_attempted`` counts only items never sent.
    interrupted_items: int = 0
    #: Shorter files of a chunk this run moved to history because a longer one replaced them.
    superseded: int = 0

    @classmethod
    def of(
        cls,
        tally: Tally,
        seconds: float,
        *,
        interrupted: bool = False,
        concurrency: dict[str, int] | None = None,
    ) -> Summary:
        return cls(
            planned=tally.planned,
            downloaded=tally[Status.DOWNLOADED],
            skipped=tally[Status.SKIPPED],
            empty=tally[Status.EMPTY],
            failed=tally[Status.FAILED],
            bytes=tally.bytes,
            seconds=round(seconds, 3),
            interrupted=interrupted,
            not_attempted=max(0, tally.planned - tally.done - tally.interrupted),
            revised=tally[Status.REVISED],
            unchanged=tally[Status.UNCHANGED],
            concurrency=dict(concurrency or {}),
            interrupted_items=tally.interrupted,
            superseded=tally.superseded,
        )

    def as_report(self) -> dict[str, Any]:
        return {
            "planned": self.planned,
            "downloaded": self.downloaded,
            "skipped": self.skipped,
            "empty": self.empty,
            "failed": self.failed,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "revised": self.revised,
            "unchanged": self.unchanged,
            "interrupted": self.interrupted,
            "not_attempted": self.not_attempted,
            "interrupted_items": self.interrupted_items,
            "superseded": self.superseded,
            "concurrency": self.concurrency,
        }


@dataclass(frozen=True, slots=True)
class RunResult:
    """Everything a caller needs after a run: counts, failures, where the report is."""

    summary: Summary
    failures: tuple[ItemResult, ...] = ()
    more_failures: int = 0
    report: Path | None = None
    aborted: str | None = None
    exit_code: int = 0
    warnings: tuple[str, ...] = field(default=())


class Observer(Protocol):
    """Live events of a run, for displays and logs; the run's outcome never depends on them.

    Every method is called on the event loop's thread, from inside the run, and must return
    quickly without blocking or awaiting: a slow observer slows every download. An observer
    may keep state and render it on its own schedule (``progress.RichObserver`` redraws at a
    fixed rate); it must not raise, and must not call back into the run.
    """

    def planned(self, total: int) -> None:
        """Once, before anything is sent: how many items the plan holds."""

    def started(self, item: Item, path: Path, attempt: int) -> None:
        """An attempt at ``item`` is about to send its request (``attempt`` counts from 1)."""

    def received(self, item: Item, nbytes: int, expected: int | None) -> None:
        """A block of ``item``'s body arrived (``expected``: Content-Length, if sent).
        Called per block of a large body: keep it to a counter update."""

    def retrying(self, item: Item, attempt: int, reason: str, delay: float) -> None:
        """Attempt ``attempt`` failed for a ``reason`` worth retrying; the next starts after
        ``delay`` seconds. ``reason`` may quote server text: it is escaped already."""

    def finished(self, result: ItemResult) -> None:
        """An item is settled, skipped included; ``result`` is final and recorded."""

    def notice(self, message: str) -> None:
        """A warning for the person running it (certificate expiry, a file changed on disk)."""

    def pool(self, level: int, maximum: int) -> None:
        """The number of downloads allowed at once changed (the server pushed back)."""


class NullObserver:
    """Observes nothing: for schedulers and tests that read the ``RunResult`` only."""

    def planned(self, total: int) -> None:
        pass

    def started(self, item: Item, path: Path, attempt: int) -> None:
        pass

    def received(self, item: Item, nbytes: int, expected: int | None) -> None:
        pass

    def retrying(self, item: Item, attempt: int, reason: str, delay: float) -> None:
        pass

    def finished(self, result: ItemResult) -> None:
        pass

    def notice(self, message: str) -> None:
        pass

    def pool(self, level: int, maximum: int) -> None:
        pass


__all__ = [
    "OUTCOMES",
    "ItemResult",
    "NullObserver",
    "Observer",
    "RunResult",
    "Status",
    "Summary",
    "Tally",
]
