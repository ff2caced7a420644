"""How hard to press the server: how long to wait before trying again, how many requests may
be in flight, and how often a request may start. Every politeness rule of a run lives here.

Backoff is exponential with full jitter (a uniform draw up to ``base * 2**(attempt-1)``,
capped), never shorter than the server's Retry-After: jitter spreads the retries of many
workers that failed together, so they do not come back as one burst.

The pool size follows the server's answers, additive increase and multiplicative decrease as
TCP does: when the server pushes back (429, 503,
connections dropped), the number of requests allowed in flight halves; after as many clean
answers as the current level it grows by one, never above ``--concurrency``. Answers to requests
sent before the last decrease cannot decrease it again, so one burst costs one halving.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """The waits between attempts: ``base`` doubles per attempt up to ``cap`` seconds."""

    base: float = 1.0
    cap: float = 120.0

    def delay(
        self, attempt: int, retry_after: float | None = None, *, draw: float | None = None
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 for the first).

        ``draw`` is the jitter in [0, 1), random unless given (tests pin it).
        """
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt - 1, 64))
        fraction: float = random.random() if draw is None else draw
        wait = fraction * ceiling
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait


#: Session expiries that do not count against ``--retries`` for one item, when the session had
#: been serving downloads: re-logging in is cheap, and with sessions that expire every few
#: requests an item can meet several expiries through no fault of its own.
FREE_RELOGINS = 10


@dataclass(slots=True)
class RetryBudget:
    """One item's attempts left: ``retries`` failed attempts may be retried, besides up to
    ``FREE_RELOGINS`` ordinary session expiries (a session that worked, then timed out)."""

    retries: int
    charged: int = 0
    relogins: int = 0

    def spend(self, *, ordinary_expiry: bool = False) -> bool:
        """Account for one failed attempt; True if another one may follow."""
        if ordinary_expiry and self.relogins < FREE_RELOGINS:
            self.relogins += 1
            return True
        self.charged += 1
        return self.charged <= self.retries


class RateLimiter:
    """Spaces request starts at least ``1/rate`` seconds apart, across all workers."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = asyncio.get_running_loop().time()
        slot = max(now, self._next)
        self._next = slot + self._interval  # reserved before awaiting: no lock needed
        if slot > now:
            await asyncio.sleep(slot - now)


class AdaptiveLimit:
    """A semaphore whose size follows the server's answers (additive increase,
    multiplicative decrease)."""

    def __init__(self, maximum: int, on_change: Callable[[int, int], None]) -> None:
        self.maximum = maximum
        self.level = maximum
        self.lowest = maximum
        self.decreases = 0
        self.increases = 0
        self._active = 0
        self._epoch = 0
        self._clean = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._on_change = on_change

    async def acquire(self) -> int:
        """Wait for a slot; return the epoch to hand back to ``release``."""
        while self._active >= self.level:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                self._wake()  # pass on a wake-up this waiter may have consumed
                raise
        self._active += 1
        return self._epoch

    def release(self, epoch: int, *, clean: bool = False, pushback: bool = False) -> None:
        """Give the slot back, saying how the server answered."""
        self._active -= 1
        if pushback and epoch == self._epoch:
            self._epoch += 1
            self._clean = 0
            if self.level > 1:
                self.level = max(1, self.level // 2)
                self.lowest = min(self.lowest, self.level)
                self.decreases += 1
                self._on_change(self.level, self.maximum)
        elif clean and self.level < self.maximum:
            self._clean += 1
            if self._clean >= self.level:
                self._clean = 0
                self.level += 1
                self.increases += 1
                self._on_change(self.level, self.maximum)
        self._wake()

    def figures(self) -> dict[str, int]:
        """For the report."""
        return {
            "max": self.maximum,
            "lowest": self.lowest,
            "final": self.level,
            "decreases": self.decreases,
            "increases": self.increases,
        }

    def _wake(self) -> None:
        free = self.level - self._active
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1


__all__ = [
    "FREE_RELOGINS",
    "AdaptiveLimit",
    "Backoff",
    "RateLimiter",
    "RetryBudget",
]
