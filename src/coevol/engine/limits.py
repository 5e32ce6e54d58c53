"""Concurrency and rate control for the dispatcher: an adaptive in-flight limit and token buckets."""

from __future__ import annotations

import asyncio
import time
from collections import deque

__all__ = ["AdaptiveLimit", "RateWindow", "TokenBucket"]


class AdaptiveLimit:
    """A semaphore whose size shrinks on 429s and grows back slowly (AIMD).

    Keeps a server saturated without tuning: it starts at ``maximum`` and only backs off when the
    server says it is overloaded.
    """

    def __init__(self, maximum: int, minimum: int = 1) -> None:
        if maximum < 1:
            raise ValueError(f"maximum must be at least 1, got {maximum}")
        self.maximum = maximum
        self.minimum = max(1, min(minimum, maximum))
        self.limit = float(maximum)
        self.in_flight = 0
        self.peak = 0
        self.backoffs = 0
        self.epoch = 0  # bumped by every backoff; see ``backoff(since=...)``
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.in_flight < int(self.limit) and not self._waiters:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self._release_slot()  # we were handed a slot but are leaving: pass it on
            elif fut in self._waiters:
                self._waiters.remove(fut)
            raise

    def _release_slot(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < int(self.limit):
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
                fut.set_result(None)

    def release(self, *, success: bool = True) -> None:
        if success and self.limit < self.maximum:
            self.limit = min(self.maximum, self.limit + 1.0 / self.limit)
        self._release_slot()

    def backoff(self, since: int | None = None) -> bool:
        """Halve the limit after the server signalled overload; True if it did.

        ``since`` is the ``epoch`` read when the rejected request was admitted. A burst of 429s for
        requests sent under the old limit is one overload signal, not many: only the first of them
        halves the limit, so 200 simultaneous rejections do not collapse it to the minimum.
        """
        if since is not None and since != self.epoch:
            return False
        self.limit = max(float(self.minimum), self.limit / 2)
        self.epoch += 1
        self.backoffs += 1
        return True


class TokenBucket:
    """``rate`` units per minute, bursting up to one minute's worth; for ``--rpm`` and ``--tpm``."""

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = per_minute
        self.tokens = per_minute
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, amount: float) -> None:
        amount = min(amount, self.capacity)
        async with self._lock:
            self._refill()
            while self.tokens < amount:
                await asyncio.sleep((amount - self.tokens) / self.rate)
                self._refill()
            self.tokens -= amount

    def give_back(self, amount: float) -> None:
        """Return an over-estimate once the real token count is known."""
        self.tokens = min(self.capacity, self.tokens + amount)


class RateWindow:
    """The last ``size`` answers of one server: did it answer 429? For the server-wide pause rule."""

    __slots__ = ("limited", "outcomes")

    def __init__(self, size: int = 32) -> None:
        self.outcomes: deque[bool] = deque(maxlen=size)
        self.limited = 0

    def add(self, rate_limited: bool) -> None:
        if len(self.outcomes) == self.outcomes.maxlen and self.outcomes[0]:
            self.limited -= 1
        self.outcomes.append(rate_limited)
        self.limited += rate_limited

    def dominated(self, minimum: int = 8) -> bool:
        """Whether 429s are at least half of a window of at least ``minimum`` answers."""
        return len(self.outcomes) >= minimum and 2 * self.limited >= len(self.outcomes)
