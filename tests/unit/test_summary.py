"""The summary every run ends with (``summary.summary_lines``): what it says for counts
that only large runs reach."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from omar_bulk.plan import Item
from omar_bulk.results import ItemResult, RunResult, Status, Summary
from omar_bulk.summary import MAX_LISTED_FAILURES, summary_lines


def _text(result: RunResult) -> list[str]:
    return ["".join(text for text, _style in line) for line in summary_lines(result)]


def _failure(n: int) -> ItemResult:
    item = Item("meter", f"M{n}", date(2024, 1, 1), date(2024, 1, 31), "mdef", "PST")
    return ItemResult(item, "https://x/", Path(f"meter/M{n}/f"), Status.FAILED, error="HTTP 404")


def test_the_failures_beyond_the_listed_ones_and_beyond_those_kept_are_all_counted() -> None:
    """A run keeps the first 1000 failures and lists 20 of them: the line after the list
    counts every other one, those kept and those only in the report."""
    kept = tuple(_failure(n) for n in range(1000))
    summary = Summary(
        planned=2000, downloaded=0, skipped=0, empty=0, failed=1234, bytes=0, seconds=1.0
    )
    lines = _text(RunResult(summary=summary, failures=kept, more_failures=234, exit_code=1))
    assert lines[-1] == f"  ... and {1234 - MAX_LISTED_FAILURES} more (see the report)"
    assert sum(line.startswith("  meter/") for line in lines) == MAX_LISTED_FAILURES
    assert "2000 planned, 0 downloaded, 0 skipped, 0 empty, 1234 failed" in lines


def test_a_run_with_only_listed_failures_says_no_more() -> None:
    kept = tuple(_failure(n) for n in range(MAX_LISTED_FAILURES))
    summary = Summary(planned=20, downloaded=0, skipped=0, empty=0, failed=20, bytes=0, seconds=1.0)
    lines = _text(RunResult(summary=summary, failures=kept, exit_code=1))
    assert lines[-1] == f"  meter/M{MAX_LISTED_FAILURES - 1}/f: HTTP 404"
