"""One server's in-flight limit (adaptive: 429s, timeouts and queueing delay), token buckets, 429 window.

Pure bookkeeping, no waiting: the endpoint group (``coevol.engine.endpoints``) decides who may send,
and asks ``AdaptiveLimit.room()`` how many more requests a server takes now.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Final

__all__ = ["AdaptiveLimit", "Backpressure", "RateWindow", "TokenBucket"]

_INITIAL: Final = 16  # slow start: the first window, doubled per round trip while latency holds


@dataclass(frozen=True, slots=True)
class Backpressure:
    """When a server's answers say it queues: latency past ``tolerance`` x its unqueued latency.

    A gradient rule (the family of TCP Vegas and Netflix's gradient limiter), because servers such
    as vLLM and llama.cpp's never answer 429: they queue, and the only sign is time. The unqueued
    latency is the lowest short-term average seen (``smoothing``: LLM answers vary in length, so a
    single fastest answer would be an outlier), forgotten slowly (``drift`` per answer) so that a
    server that really became slower is re-learned. Latency past ``tolerance`` times that baseline,
    and by more than ``min_delay`` seconds (so a fast server's client-side jitter is no signal),
    shrinks the limit toward the size whose latency would be within the tolerance, at most once
    per round trip and at most by half; otherwise it grows back by about the square root of the
    limit per round trip (gradient2's allowance: a client too busy to read answers at once looks
    like a queue, and must not leave the server under-filled for long). With ``tolerance`` 2 a
    server keeps about as many requests queued as it runs: its batch stays full, the queue bounded.
    """

    tolerance: float = 2.0
    min_delay: float = 0.05
    smoothing: float = 0.2
    drift: float = 0.0002


class AdaptiveLimit:
    """How many requests one server may have in flight now; ``in_flight`` is what it has.

    Starts small and doubles per round trip (slow start) up to ``maximum`` while answers come back
    unqueued; halves on overload (a 429, a timeout) once per burst; shrinks on queueing delay
    (``Backpressure``, unless ``None``); grows back by about one request per round trip.
    """

    __slots__ = (
        "_base",
        "_cut_wait",
        "_latency_cut",
        "_short",
        "_since_cut",
        "backoffs",
        "backpressure",
        "epoch",
        "in_flight",
        "limit",
        "maximum",
        "minimum",
        "peak",
        "slow_start",
    )

    def __init__(self, maximum: int, minimum: int = 1, *, backpressure: Backpressure | None = None) -> None:
        if maximum < 1:
            raise ValueError(f"maximum must be at least 1, got {maximum}")
        self.maximum = maximum
        self.minimum = max(1, min(minimum, maximum))
        self.backpressure = backpressure
        # Without a latency signal there is nothing to end a slow start: begin at the maximum.
        self.slow_start = backpressure is not None and maximum > _INITIAL
        self.limit = float(_INITIAL if self.slow_start else maximum)
        self.in_flight = 0
        self.peak = 0
        self.backoffs = 0
        self.epoch = 0  # bumped by every backoff; see ``backoff(since=...)``
        self._short: float | None = None  # short-term average latency
        self._base: float | None = None  # the unqueued latency
        self._since_cut = 0  # answers since the limit last shrank on latency
        self._cut_wait = 0  # answers to wait for before it may shrink again
        self._latency_cut = False  # whether the last decrease was for queueing delay (not a 429)

    def room(self) -> int:
        return int(self.limit) - self.in_flight

    def take(self) -> None:
        self.in_flight += 1
        if self.in_flight > self.peak:
            self.peak = self.in_flight

    def release(self, *, success: bool = True, latency: float | None = None) -> None:
        """A request ended; an answer (``success``) took ``latency`` seconds from send to answer."""
        self.in_flight -= 1
        if not success:
            return
        if latency is not None and self.backpressure is not None and self._queueing(latency):
            return
        if self.limit >= self.maximum:
            return
        if not self.slow_start:
            # After a 429 one more request per round trip (AIMD); after queueing delay, whose
            # signal is noisier (a busy client delays answers too), the square root of the limit.
            step = math.sqrt(self.limit) if self._latency_cut else 1.0
            self.limit = min(float(self.maximum), self.limit + step / self.limit)
        elif 2 * (self.in_flight + 1) >= self.limit:  # only a window in use doubles
            self.limit = min(float(self.maximum), self.limit + 1.0)

    def _queueing(self, latency: float) -> bool:
        """Feed one latency to the gradient rule; True when it shows the server queueing."""
        bp = self.backpressure
        assert bp is not None
        short = latency if self._short is None else self._short + bp.smoothing * (latency - self._short)
        self._short = short
        base = self._base
        base = short if base is None or short < base else base * (1.0 + bp.drift)
        self._base = base
        self._since_cut += 1
        if short <= bp.tolerance * base or short - base <= bp.min_delay:
            return False
        if self._since_cut >= self._cut_wait:
            self.slow_start = False
            self._latency_cut = True
            self.limit = max(float(self.minimum), self.limit * max(0.5, bp.tolerance * base / short))
            self._since_cut = 0
            # Requests in flight now were sent under the old limit: their latency says nothing new.
            self._cut_wait = self.in_flight
        return True

    def backoff(self, since: int | None = None) -> bool:
        """Halve the limit after the server signalled overload; True if it did.

        ``since`` is the ``epoch`` read when the rejected request was admitted. A burst of 429s for
        requests sent under the old limit is one overload signal, not many: only the first of them
        halves the limit, so 200 simultaneous rejections do not collapse it to the minimum.
        """
        if since is not None and since != self.epoch:
            return False
        self.slow_start = False
        self._latency_cut = False
        self.limit = max(float(self.minimum), self.limit / 2)
        self.epoch += 1
        self.backoffs += 1
        return True

    def shed(self, waiting: int) -> None:
        """The server says ``waiting`` requests wait in its queue: keep that many fewer in flight."""
        target = max(float(self.minimum), float(self.in_flight - waiting))
        if target < self.limit:
            self.slow_start = False
            self.limit = target

    def cap(self, capacity: int) -> None:
        """The server said how many requests it runs at once: never keep more in flight there."""
        self.maximum = max(1, min(self.maximum, capacity))
        self.minimum = min(self.minimum, self.maximum)
        self.limit = min(self.limit, float(self.maximum))


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
