"""Backoff, the adaptive pool and the rate limit: pure rules, no server; each wait has a
deadline. The pool's bookkeeping is pinned step by step: how many requests are in flight,
which answers may shrink it, when it grows, and who is woken."""

from __future__ import annotations

import asyncio

import pytest

from omar_bulk.politeness import FREE_RELOGINS, AdaptiveLimit, Backoff, RateLimiter, RetryBudget


def test_backoff_doubles_from_the_base_under_full_jitter() -> None:
    backoff = Backoff(base=1.0, cap=120.0)
    assert [backoff.delay(n, draw=0.999999) for n in (1, 2, 3, 4)] == pytest.approx(
        [1.0, 2.0, 4.0, 8.0], rel=1e-5
    )
    assert backoff.delay(3, draw=0.5) == pytest.approx(2.0)
    assert backoff.delay(3, draw=0.0) == 0.0


def test_backoff_is_capped() -> None:
    backoff = Backoff(base=1.0, cap=120.0)
    assert backoff.delay(8, draw=0.999999) == pytest.approx(120.0, rel=1e-5)
    assert backoff.delay(500, draw=0.999999) == pytest.approx(120.0, rel=1e-5)


def test_backoff_is_jittered() -> None:
    """Workers that failed together do not come back together."""
    backoff = Backoff(base=1.0, cap=120.0)
    draws = {round(backoff.delay(6), 6) for _ in range(50)}
    assert len(draws) > 40
    assert all(0.0 <= d <= 32.0 for d in draws)


def test_backoff_never_undercuts_retry_after() -> None:
    backoff = Backoff(base=1.0, cap=120.0)
    assert backoff.delay(1, 30.0, draw=0.5) == 30.0
    assert backoff.delay(7, 3.0, draw=0.999999) == pytest.approx(64.0, rel=1e-5)


def _limit(maximum: int) -> tuple[AdaptiveLimit, list[tuple[int, int]]]:
    changes: list[tuple[int, int]] = []
    return AdaptiveLimit(maximum, lambda level, top: changes.append((level, top))), changes


async def test_one_burst_of_push_back_halves_the_pool_once() -> None:
    limit, changes = _limit(8)
    epochs = [await limit.acquire() for _ in range(8)]
    for epoch in epochs:
        limit.release(epoch, pushback=True)
    assert limit.level == 4 and limit.decreases == 1 and changes == [(4, 8)]


async def test_push_back_after_a_decrease_halves_again() -> None:
    limit, _ = _limit(8)
    limit.release(await limit.acquire(), pushback=True)
    limit.release(await limit.acquire(), pushback=True)
    assert limit.level == 2 and limit.lowest == 2 and limit.decreases == 2


async def test_the_pool_never_goes_below_one() -> None:
    limit, _ = _limit(2)
    for _ in range(5):
        limit.release(await limit.acquire(), pushback=True)
    assert limit.level == 1 and limit.decreases == 1


async def test_the_pool_grows_by_one_after_level_clean_answers() -> None:
    limit, changes = _limit(8)
    limit.release(await limit.acquire(), pushback=True)
    assert limit.level == 4
    for _ in range(3):
        limit.release(await limit.acquire(), clean=True)
    assert limit.level == 4  # three clean answers are not yet four
    limit.release(await limit.acquire(), clean=True)
    assert limit.level == 5 and limit.increases == 1
    for _ in range(5):
        limit.release(await limit.acquire(), clean=True)
    assert limit.level == 6
    assert changes == [(4, 8), (5, 8), (6, 8)]


async def test_the_pool_never_grows_past_its_maximum() -> None:
    limit, changes = _limit(2)
    for _ in range(20):
        limit.release(await limit.acquire(), clean=True)
    assert limit.level == 2 and changes == []


async def test_acquire_waits_while_the_pool_is_full() -> None:
    limit, _ = _limit(1)
    first = await limit.acquire()
    waiter = asyncio.ensure_future(limit.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()
    limit.release(first, clean=True)
    await asyncio.wait_for(waiter, timeout=5)


async def test_the_rate_limiter_spaces_starts() -> None:
    loop = asyncio.get_running_loop()
    limiter = RateLimiter(50.0)
    started = loop.time()
    for _ in range(6):
        await limiter.wait()
    elapsed = loop.time() - started
    assert 0.1 - 0.005 <= elapsed < 2.0  # five gaps of 20 ms at least


async def test_the_rate_limiter_reserves_one_slot_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Starts asked for at the same instant (many workers at once) each get their own slot,
    1/rate apart, the first at once: on a clock that does not move, the waits are exact."""
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "time", lambda: 0.0)
    slept: list[float] = []

    async def no_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    limiter = RateLimiter(20.0)
    for _ in range(5):
        await limiter.wait()
    assert slept == pytest.approx([0.05, 0.10, 0.15, 0.20])
    slept.clear()
    for _ in range(5):
        await RateLimiter(None).wait()
        await RateLimiter(0).wait()
    assert slept == []


async def test_no_rate_means_no_wait() -> None:
    limiter = RateLimiter(None)
    await asyncio.wait_for(limiter.wait(), timeout=1)


def test_the_retry_budget_counts_failures_not_ordinary_expiries() -> None:
    budget = RetryBudget(2)
    assert budget.spend() and budget.spend()
    assert not budget.spend()  # the third failure ends it: 1 attempt + 2 retries
    budget = RetryBudget(0)
    assert all(budget.spend(ordinary_expiry=True) for _ in range(FREE_RELOGINS))
    assert not budget.spend(ordinary_expiry=True)  # free re-logins are bounded too


async def test_the_report_figures_follow_the_pool() -> None:
    limit, _ = _limit(5)
    limit.release(await limit.acquire(), pushback=True)  # 5 halves to 2, never 2.5
    assert limit.level == 2 and isinstance(limit.level, int)
    for _ in range(2):
        limit.release(await limit.acquire(), clean=True)
    assert limit.figures() == {"max": 5, "lowest": 2, "final": 3, "decreases": 1, "increases": 1}


async def test_each_slot_is_held_and_waiters_go_first_come_first_served() -> None:
    limit, _ = _limit(2)
    held = [await limit.acquire(), await limit.acquire()]
    order: list[str] = []

    async def take(name: str) -> None:
        epoch = await limit.acquire()
        order.append(name)
        await asyncio.sleep(0)
        limit.release(epoch, clean=True)

    waiters = [asyncio.ensure_future(take(name)) for name in "ABC"]
    await asyncio.sleep(0)
    assert order == []  # both slots are held: a third acquire waits
    limit.release(held.pop(), clean=True)
    await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
    assert order == ["A", "B", "C"]
    limit.release(held.pop(), clean=True)


async def test_a_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    limit, _ = _limit(1)
    first = await limit.acquire()
    gone = asyncio.ensure_future(limit.acquire())
    nxt = asyncio.ensure_future(limit.acquire())
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    limit.release(first, clean=True)
    await asyncio.wait_for(nxt, timeout=5)


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
