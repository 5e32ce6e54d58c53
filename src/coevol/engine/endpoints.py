"""Several servers for one route: a pool that sends each request to the least loaded one.

An ``EndpointPool`` is a ``Backend``: the dispatcher sees one endpoint (the pool's ``endpoint``, the
group's name), so the cache key does not depend on which server answered and a rerun against another
set of servers replays what was paid for. Inside, every member has its own adaptive in-flight
limit, its own optional requests-per-minute bucket and its own 429 pause.

A request goes to the member with the fewest requests in flight relative to its limit. A member that
fails (connection refused or dropped, a timeout, or ``failures`` 5xx answers in a row) is taken out
of rotation: it returns only after a probe (``GET /models``, or one real request for a backend that
cannot list models) succeeds, tried after an exponential backoff. A request that fails on one member
is retried at once on another one; only when no member is left to try does its error reach the
dispatcher, whose own retries and backoff then apply. Refusals (401, unknown model) are not a
member's bad luck but the run's configuration: they propagate unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coevol.engine.limits import AdaptiveLimit, RateWindow, TokenBucket
from coevol.errors import (
    APIConnectionError,
    APITimeoutError,
    ConfigError,
    LLMError,
    RateLimitError,
    RetryableError,
    ServerError,
)
from coevol.llm.types import Backend, ChatRequest, Completion
from coevol.textsafe import inert_line

__all__ = ["EndpointPool", "EndpointState", "HealthPolicy", "describe_pool", "group_endpoint"]

UP, DOWN, PROBING = "up", "down", "probing"


def group_endpoint(name: str) -> str:
    """The identity a pool's requests are cached under: ``pool:NAME`` (never a URL)."""
    return f"pool:{name}"


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """When a member leaves rotation and how soon it is probed again."""

    failures: int = 3  # 5xx answers in a row that take a member out
    base_backoff: float = 1.0  # seconds before the first probe
    max_backoff: float = 30.0
    probe_timeout: float = 10.0

    def backoff(self, downs: int) -> float:
        return float(min(self.max_backoff, self.base_backoff * 2 ** max(0, downs - 1)))


@dataclass(frozen=True, slots=True)
class EndpointState:
    """One member as the progress display shows it."""

    name: str
    state: str
    in_flight: int
    limit: int
    sent: int
    failed: int
    retry_in: float | None = None  # seconds until the next probe of a member that is down


class _Member:
    __slots__ = (
        "backend",
        "consecutive",
        "downs",
        "failed",
        "limit",
        "name",
        "paused_until",
        "probe",
        "retry_at",
        "rpm",
        "sent",
        "state",
        "window",
    )

    def __init__(self, backend: Backend, limit: int, rpm: float | None) -> None:
        self.backend = backend
        self.name = backend.endpoint
        self.limit = AdaptiveLimit(limit)
        self.rpm = TokenBucket(rpm) if rpm else None
        self.window = RateWindow()
        self.state = UP
        self.consecutive = 0  # 5xx in a row
        self.downs = 0  # times taken out since it last answered
        self.retry_at = 0.0
        self.paused_until = 0.0
        self.sent = 0
        self.failed = 0
        self.probe: asyncio.Task[None] | None = None

    def load(self) -> float:
        return self.limit.in_flight / max(1, int(self.limit.limit))

    def has_room(self) -> bool:
        return self.limit.in_flight < int(self.limit.limit)


class EndpointPool:
    """Implements ``Backend`` over several servers that serve the same model."""

    def __init__(
        self,
        members: Sequence[Backend],
        *,
        name: str = "pool",
        limits: Sequence[int] | None = None,
        rpms: Sequence[float | None] | None = None,
        health: HealthPolicy | None = None,
        max_retry_after: float = 90.0,
    ) -> None:
        if not members:
            raise ConfigError("an endpoint pool needs at least one server")
        limits = list(limits) if limits is not None else [256] * len(members)
        rpms = list(rpms) if rpms is not None else [None] * len(members)
        self.endpoint = group_endpoint(name)
        self.name = name
        self.health = health or HealthPolicy()
        self.max_retry_after = max_retry_after
        self.members = [_Member(b, n, r) for b, n, r in zip(members, limits, rpms, strict=True)]
        self._changed: asyncio.Event | None = None
        self._closed = False

    # Backend --------------------------------------------------------------------------------------
    async def complete(self, request: ChatRequest) -> Completion:
        tried: set[int] = set()
        last: RetryableError | None = None
        while True:
            index = await self._choose(tried)
            if index is None:
                raise last or self._none_up()
            member = self.members[index]
            try:
                return await self._send(member, request)
            except RateLimitError as exc:
                self._rate_limited(member, exc)
                last = exc
            except (APIConnectionError, APITimeoutError, ServerError) as exc:
                self._failed(member, exc)
                last = exc
            tried.add(index)

    async def aclose(self) -> None:
        self._closed = True
        probes = [m.probe for m in self.members if m.probe is not None and not m.probe.done()]
        for task in probes:
            task.cancel()
        for task in probes:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for member in self.members:
            await member.backend.aclose()

    async def list_models(self, *, within: float | None = None) -> list[str]:
        """The models every reachable member serves; members that disagree are refused (never mixed)."""
        seen: dict[str, list[str]] = {}
        for member in self.members:
            lister = getattr(member.backend, "list_models", None)
            if lister is None:
                continue
            try:
                models: list[str] = await lister(within=within) if within is not None else await lister()
            except RetryableError:
                continue  # down now; the pool takes it out when it fails a request
            seen[member.name] = sorted(models)
        distinct = {tuple(v) for v in seen.values()}
        if len(distinct) > 1:
            listed = "; ".join(f"{name}: {', '.join(m) or 'none'}" for name, m in seen.items())
            raise ConfigError(
                f"the servers of endpoint group {self.name!r} serve different models ({listed}); "
                "a group must serve one model: pass --model, or give each model its own role"
            )
        return list(distinct.pop()) if distinct else []

    async def check(self) -> None:
        """Each member's setup check (a refused key is refused before any work)."""
        for member in self.members:
            check = getattr(member.backend, "check", None)
            if check is not None:
                await check()

    # the display ----------------------------------------------------------------------------------
    def states(self, now: float | None = None) -> list[EndpointState]:
        mono = time.monotonic() if now is None else now
        return [
            EndpointState(
                m.name,
                m.state,
                m.limit.in_flight,
                int(m.limit.limit),
                m.sent,
                m.failed,
                max(0.0, m.retry_at - mono) if m.state == DOWN else None,
            )
            for m in self.members
        ]

    # choosing -------------------------------------------------------------------------------------
    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _none_up(self) -> APIConnectionError:
        waits = [m.retry_at - time.monotonic() for m in self.members if m.state != UP]
        soon = f"; next probe in {max(0.0, min(waits)):.0f}s" if waits else ""
        return APIConnectionError(
            f"no server of endpoint group {self.name!r} is in rotation "
            f"({len(self.members)} out after failures{soon})"
        )

    def _candidates(self, tried: set[int], now: float) -> list[int]:
        """Members this request may use: in rotation (or half-open for a probe) and not yet tried."""
        found = []
        for i, m in enumerate(self.members):
            if i in tried:
                continue
            if m.state == DOWN and now >= m.retry_at:
                self._start_probe(m)
            if m.state == UP or (m.state == PROBING and m.probe is None and m.limit.in_flight == 0):
                found.append(i)
        return found

    async def _choose(self, tried: set[int]) -> int | None:
        """The least loaded member with room; waits while every candidate is full or paused.

        ``None``: no member is left for this request (the caller raises). When no member at all is
        in rotation but one is about to be probed, it waits for the probe rather than fail.
        """
        while True:
            now = time.monotonic()
            candidates = self._candidates(tried, now)
            if not candidates:
                if tried or not self._recovering(now):
                    return None
                await self._until_change(self._next_probe(now))
                continue
            members = self.members
            ready = [i for i in candidates if members[i].paused_until <= now and members[i].has_room()]
            if ready:
                return min(ready, key=lambda i: (members[i].load(), members[i].sent, i))
            pauses = [members[i].paused_until - now for i in candidates if members[i].paused_until > now]
            await self._until_change(min(pauses) if len(pauses) == len(candidates) else None)

    async def _until_change(self, within: float | None) -> None:
        """Sleep until a slot frees, a member changes state, or ``within`` seconds pass."""
        event = self._event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), None if within is None else max(0.01, within))

    def _recovering(self, now: float) -> bool:
        """Whether a member will be probed soon enough to wait for (asked only when none is up)."""
        return any(m.state == PROBING or m.retry_at - now <= self.health.probe_timeout for m in self.members)

    def _next_probe(self, now: float) -> float:
        waits = [m.retry_at - now for m in self.members if m.state == DOWN and m.retry_at > now]
        return min([*waits, self.health.probe_timeout])

    # sending --------------------------------------------------------------------------------------
    async def _send(self, member: _Member, request: ChatRequest) -> Completion:
        limit = member.limit
        await limit.acquire()  # never waits: chosen only with room
        epoch = limit.epoch
        ok = False
        try:
            if member.rpm is not None:
                await member.rpm.take(1)
            completion = await member.backend.complete(request)
            ok = True
        except RateLimitError:
            limit.backoff(since=epoch)
            raise
        finally:
            limit.release(success=ok)
            self._notify()
        member.sent += 1
        member.window.add(False)
        if member.state != UP or member.consecutive:
            self._back_up(member)
        return completion

    def _back_up(self, member: _Member) -> None:
        member.state = UP
        member.consecutive = 0
        member.downs = 0
        self._notify()

    def _rate_limited(self, member: _Member, exc: RateLimitError) -> None:
        """A 429 is this member's: its limit shrank; it pauses when 429s dominate and it said how long."""
        member.window.add(True)
        if exc.retry_after is not None and member.window.dominated():
            member.paused_until = time.monotonic() + min(exc.retry_after, self.max_retry_after)

    def _failed(self, member: _Member, exc: LLMError) -> None:
        member.failed += 1
        if isinstance(exc, ServerError):
            member.consecutive += 1
            if member.consecutive < self.health.failures:
                return
        self._take_out(member)

    def _take_out(self, member: _Member) -> None:
        if member.state == DOWN:
            return
        member.state = DOWN
        member.downs += 1
        member.consecutive = 0
        member.retry_at = time.monotonic() + self.health.backoff(member.downs)
        self._notify()

    def _start_probe(self, member: _Member) -> None:
        member.state = PROBING
        lister = getattr(member.backend, "list_models", None)
        if lister is None or self._closed:
            return  # half-open: the next real request is the probe
        member.probe = asyncio.get_running_loop().create_task(self._probe(member, lister))

    async def _probe(self, member: _Member, lister: Any) -> None:
        try:
            await lister(within=self.health.probe_timeout)
        except (APIConnectionError, APITimeoutError, ServerError):
            member.probe = None
            self._take_out(member)
            return
        except LLMError:
            pass  # it answered (a key without the right to list models, say): it is up
        member.probe = None
        self._back_up(member)


def describe_pool(states: Sequence[EndpointState]) -> str:
    """``endpoints: host-a up 12/64 (340 sent), host-b down (probe in 4s, 3 failed)``. Pure."""
    parts = []
    for s in states:
        if s.state == DOWN:
            when = f"probe in {s.retry_in:.0f}s, " if s.retry_in is not None else ""
            parts.append(f"{s.name} down ({when}{s.failed} failed)")
        else:
            parts.append(f"{s.name} {s.state} {s.in_flight}/{s.limit} ({s.sent} sent)")
    return inert_line("endpoints: " + ", ".join(parts)) if parts else ""
