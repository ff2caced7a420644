"""The adaptive pool's bookkeeping, step by step: how many requests are in flight, which
answers may shrink it, when it grows, and who is woken. No server; each wait has a deadline.

test_politeness holds the rules as the issue stated them; these pin the counts behind them,
fast enough for every mutant of politeness.py (``make mutation``).
"""

from __future__ import annotations

import asyncio

from omar_bulk.politeness import AdaptiveLimit


def pool(maximum: int) -> tuple[AdaptiveLimit, list[tuple[int, int]]]:
    changes: list[tuple[int, int]] = []
    return AdaptiveLimit(maximum, lambda level, top: changes.append((level, top))), changes


async def settle() -> None:
    """Let every task that can run, run (a few loop turns, no time passing)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_never_more_requests_in_flight_than_the_level() -> None:
    limit, _ = pool(2)
    in_flight = 0
    most = 0

    async def request() -> None:
        nonlocal in_flight, most
        epoch = await limit.acquire()
        in_flight += 1
        most = max(most, in_flight)
        await settle()
        in_flight -= 1
        limit.release(epoch)

    await asyncio.wait_for(asyncio.gather(*(request() for _ in range(7))), timeout=5)
    assert most == 2 and in_flight == 0


async def test_only_answers_to_requests_sent_since_the_last_decrease_shrink_the_pool() -> None:
    limit, changes = pool(8)
    first, stale = await limit.acquire(), await limit.acquire()
    limit.release(first, pushback=True)  # 8 -> 4
    second, stale_too = await limit.acquire(), await limit.acquire()
    limit.release(stale, pushback=True)  # sent before the decrease: no effect
    assert limit.level == 4
    limit.release(second, pushback=True)  # 4 -> 2
    limit.release(stale_too, pushback=True)  # sent before the second decrease
    assert limit.level == 2 and limit.decreases == 2
    third = await limit.acquire()
    limit.release(third, pushback=True)  # 2 -> 1
    assert changes == [(4, 8), (2, 8), (1, 8)]
    assert limit.figures() == {"max": 8, "lowest": 1, "final": 1, "decreases": 3, "increases": 0}


async def test_each_step_up_needs_as_many_clean_answers_as_the_level() -> None:
    limit, changes = pool(8)
    limit.release(await limit.acquire(), pushback=True)  # 8 -> 4
    steps = []
    for _ in range(4 + 5 + 6):
        limit.release(await limit.acquire(), clean=True)
        steps.append(limit.level)
    # 4 answers to reach 5, then 5 to reach 6, then 6 to reach 7.
    assert (steps[:4], steps[4:9], steps[9:]) == ([4, 4, 4, 5], [5, 5, 5, 5, 6], [6] * 5 + [7])
    assert limit.increases == 3 and changes == [(4, 8), (5, 8), (6, 8), (7, 8)]
    assert limit.figures()["increases"] == 3


async def test_answers_neither_clean_nor_push_back_change_nothing() -> None:
    limit, changes = pool(4)
    limit.release(await limit.acquire(), pushback=True)  # 4 -> 2
    for _ in range(10):
        limit.release(await limit.acquire())
    assert limit.level == 2 and changes == [(2, 4)]


async def test_a_step_up_wakes_a_waiter_for_every_slot_it_frees() -> None:
    limit, _ = pool(2)
    limit.release(await limit.acquire(), pushback=True)  # 2 -> 1
    holder = await limit.acquire()
    waiters = [asyncio.ensure_future(limit.acquire()) for _ in range(3)]
    await settle()
    assert not any(w.done() for w in waiters)
    # One clean answer at level 1 grows the pool to 2 and frees the holder's slot: two free.
    limit.release(holder, clean=True)
    assert limit.level == 2
    await settle()
    assert [w.done() for w in waiters] == [True, True, False]
    limit.release(waiters[0].result())
    await asyncio.wait_for(waiters[2], timeout=5)
    limit.release(waiters[1].result())
    limit.release(waiters[2].result())


async def test_waiters_are_served_first_come_first_served_however_many_wait() -> None:
    limit, _ = pool(2)
    held = [await limit.acquire(), await limit.acquire()]
    order: list[str] = []

    async def take(name: str) -> None:
        epoch = await limit.acquire()
        order.append(name)
        await settle()
        limit.release(epoch)

    waiters = [asyncio.ensure_future(take(name)) for name in "ABCDEF"]
    await settle()
    limit.release(held.pop())
    await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
    assert order == list("ABCDEF")
    limit.release(held.pop())
