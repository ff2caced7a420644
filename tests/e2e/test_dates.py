"""Dates at the calendar's edges through the CLI: planned, or exit 2, never a traceback."""

from __future__ import annotations

import pytest

from ..conftest import Cli

PLANNED = [
    (["--start", "9999-11-01", "--end", "9999-12-31"], ["11%2F01%2F9999", "12%2F31%2F9999"]),
    (["--start", "9999-12-31", "--end", "9999-12-31", "--chunk", "none"], ["12%2F31%2F9999"]),
    (["--start", "9999-12", "--end", "9999-12"], ["endDate=12%2F31%2F9999"]),
    (["--start", "9999-12-20", "--end", "9999-12-31", "--chunk", "week"], ["12%2F27%2F9999"]),
    (["--start", "9999-12-01", "--end", "9999-12-31", "--chunk", "45d"], ["12%2F31%2F9999"]),
    (["--start", "0001-01-01", "--end", "0001-01-10", "--chunk", "week"], ["01%2F08%2F0001"]),
    (["--start", "today", "--end", "today", "--today", "0001-01-01"], ["01%2F01%2F0001"]),
]


@pytest.mark.parametrize(("args", "expected"), PLANNED)
def test_edge_ranges_are_planned(offline_cli: Cli, args: list[str], expected: list[str]) -> None:
    """Each of these once ended in a traceback; now a plan, up to the last day there is."""
    outcome = offline_cli("fetch", "--dry-run", "--meter", "M", *args)
    assert outcome.exit_code == 0, outcome.stderr
    for text in expected:
        assert text in outcome.stdout


REFUSED = [
    ["--start", "-5d", "--end", "today", "--today", "0001-01-01"],
    ["--start", "yesterday", "--end", "today", "--today", "0001-01-01"],
    ["--start", "-99999d", "--end", "today", "--today", "0100-01-01"],
    ["--start", "0000-12", "--end", "0001-01"],
]


@pytest.mark.parametrize("args", REFUSED)
def test_dates_before_the_calendar_are_exit_2(offline_cli: Cli, args: list[str]) -> None:
    outcome = offline_cli("fetch", "--dry-run", "--meter", "M", *args)
    assert outcome.exit_code == 2
    assert "--start" in outcome.stderr and "Traceback" not in outcome.stderr


def test_revisiting_further_back_than_the_calendar_revisits_everything(
    offline_cli: Cli,
) -> None:
    """--revisit-days reaching past 0001-01-01 means every item, not an OverflowError."""
    outcome = offline_cli(
        "fetch",
        "--dry-run",
        "--meter",
        "M",
        "--start",
        "0001-01-01",
        "--end",
        "0001-01-31",
        "--today",
        "0001-01-05",
        "--revisit-days",
        "60",
    )
    assert outcome.exit_code == 0, outcome.stderr
    assert "endDate=01%2F31%2F0001" in outcome.stdout
