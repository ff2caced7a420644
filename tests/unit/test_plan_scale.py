"""Planning at scale: memory per id, kept out of the mutation run's fast selection (it plans
200,000 pulls, which is slow under mutmut's trampolines and says nothing of a decision)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from datetime import date

from omar_bulk.plan import Plan, Pull

from .test_plan import pull


def test_surveying_many_distinct_ids_costs_a_few_bytes_per_id() -> None:
    """200,000 one-id pulls (a CSV manifest's rows) are surveyed without an entry per id in a
    dict: the ids themselves are never held, only an 8-byte hash each."""

    def rows() -> Iterator[Pull]:
        for n in range(200_000):
            yield pull([f"MTR{n:07d}"], date(2024, 1, 1), date(2024, 1, 31))

    plan = Plan(rows)
    tracemalloc.start()
    try:
        assert plan.survey() == 200_000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000, f"the survey held {peak} bytes ({peak / 200_000:.0f} per id)"
