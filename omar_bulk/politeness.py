"""How hard to press the server right now: a worker pool that yields when it is pushed back.

Additive increase, multiplicative decrease, as TCP does: when the server pushes back (429, 503,
connections dropped), the number of requests allowed in flight halves; after as many clean
answers as the current level it grows by one, never above ``--concurrency``. Answers to requests
sent before the last decrease cannot decrease it again, so one burst costs one halving.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class AdaptiveLimit:
    """A semaphore whose size follows the server's answers."""

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
