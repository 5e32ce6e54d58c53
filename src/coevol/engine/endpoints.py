"""An endpoint group: the servers that answer one route, and the state the scheduler keeps per server.

Every route is served by a group; one server is a group of one. The group's ``endpoint`` (its name)
is what cache keys name, so a rerun against other servers of the group replays what was paid for.
Each server has its own adaptive in-flight limit (429s, timeouts and queueing delay shrink it; see
``coevol.engine.limits``), its own optional requests-per-minute bucket, its own 429 window and
pause clock, and its health: a server that fails (connection refused or dropped, a timeout, or
``failures`` 5xx answers in a row) leaves rotation while another server of the group is in it, and
returns only after a probe (``GET /models``, or one real request for a backend that cannot list
models) succeeds, tried after an exponential backoff.

The group only keeps state and decides who may send: ``acquire`` hands a request the least loaded
server with room (waiting in FIFO order while none has any); the dispatcher
(``coevol.engine.dispatch``) sends, retries and reports each outcome back here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from coevol.engine.limits import AdaptiveLimit, Backpressure, RateWindow, TokenBucket
from coevol.errors import (
    APIConnectionError,
    APITimeoutError,
    ConfigError,
    LLMError,
    RateLimitError,
    RetryableError,
    ServerError,
)
from coevol.llm.types import Backend
from coevol.textsafe import inert_line

__all__ = [
    "EndpointGroup",
    "EndpointState",
    "HealthPolicy",
    "Server",
    "Wait",
    "describe_pool",
    "group_endpoint",
]

UP, DOWN, PROBING = "up", "down", "probing"
_UNCAPPED = 1 << 30  # the "limit" of a backend that queues on its own side (``in_flight_cap = False``)


def group_endpoint(name: str) -> str:
    """The identity a group's requests are cached under: ``pool:NAME`` (never a URL)."""
    return f"pool:{name}"


def capped(backend: Backend) -> bool:
    """Whether the scheduler limits this backend's requests in flight.

    A backend that queues work on its own side and answers much later (a batch API) says
    ``in_flight_cap = False``: it gets no in-flight limit and no latency backpressure, and a slow
    answer is never taken for a stalled server.
    """
    return getattr(backend, "in_flight_cap", True) is not False


@dataclass(frozen=True, slots=True)
class Wait:
    """A request (or a whole server) waiting before it may send: shown by the progress display."""

    roles: str  # the roles whose requests wait, e.g. "judge" or "positive, critical"
    reason: str  # "429", "HTTP 503", "rate limit" ...
    until: float  # wall-clock time (``time.time()``) the wait ends
    server_wide: bool = False


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """When a server leaves rotation and how soon it is probed again."""

    failures: int = 3  # 5xx answers in a row that take a server out
    base_backoff: float = 1.0  # seconds before the first probe
    max_backoff: float = 30.0
    probe_timeout: float = 10.0
    # A server with requests in flight and no answer for this long (and for ``stall_factor`` times
    # its usual latency) while another server of the group answers is stalled: it leaves rotation
    # and its requests go elsewhere.
    stall_after: float = 30.0
    stall_factor: float = 10.0

    def backoff(self, downs: int) -> float:
        return float(min(self.max_backoff, self.base_backoff * 2 ** max(0, downs - 1)))


@dataclass(frozen=True, slots=True)
class EndpointState:
    """One server as the progress display shows it."""

    name: str
    state: str
    in_flight: int
    limit: int
    sent: int
    failed: int
    retry_in: float | None = None  # seconds until the next probe of a server that is down


class Server:
    """One server of a group and everything the scheduler knows about it."""

    __slots__ = (
        "attempts",
        "backend",
        "consecutive",
        "downs",
        "evicted",
        "failed",
        "latency",
        "limit",
        "name",
        "paused_until",
        "probe",
        "progress_at",
        "retry_at",
        "rpm",
        "sent",
        "state",
        "window",
    )

    def __init__(
        self, backend: Backend, limit: int, rpm: float | None, backpressure: Backpressure | None
    ) -> None:
        self.backend = backend
        self.name = backend.endpoint
        if capped(backend):
            self.limit = AdaptiveLimit(limit, backpressure=backpressure)
        else:
            self.limit = AdaptiveLimit(_UNCAPPED)
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
        self.latency = 0.0  # average seconds per answer (0: none yet)
        self.progress_at = 0.0  # last answer, or when it last went from idle to busy
        self.attempts: dict[int, asyncio.Task[Any]] = {}  # requests on the wire, by token
        self.evicted: set[int] = set()  # of those, the ones cancelled because it stalled

    def load(self) -> float:
        return self.limit.in_flight / max(1, int(self.limit.limit))


class EndpointGroup:
    """The servers that serve one model for a route; hands each request a server with room."""

    def __init__(
        self,
        members: Sequence[Backend],
        *,
        name: str | None = None,
        limits: Sequence[int] | None = None,
        rpms: Sequence[float | None] | None = None,
        health: HealthPolicy | None = None,
        max_retry_after: float = 90.0,
        backpressure: Backpressure | None = Backpressure(),  # noqa: B008  (frozen: shared safely)
        shown: str | None = None,
    ) -> None:
        if not members:
            raise ConfigError("an endpoint group needs at least one server")
        limits = list(limits) if limits is not None else [256] * len(members)
        rpms = list(rpms) if rpms is not None else [None] * len(members)
        if name is None and len(members) > 1:
            name = "pool"
        # A group of one made without a name (a backend given directly) is cached under its own
        # endpoint; a named group under ``pool:NAME``.
        self.endpoint = group_endpoint(name) if name is not None else members[0].endpoint
        self.name = name or members[0].endpoint
        self.shown = shown or ", ".join(b.endpoint for b in members)  # for the trace and ``show``
        # The endpoint coevol 0.2 cached this group's calls under (a single server's URL), looked up
        # when a call is not found under ``endpoint``: a 0.2 store still replays.
        self.former: str | None = None
        self.health = health or HealthPolicy()
        self.max_retry_after = max_retry_after
        self.servers = [Server(b, n, r, backpressure) for b, n, r in zip(members, limits, rpms, strict=True)]
        self.roles = ""  # the roles it serves, for the display's pauses (set by the dispatcher)
        self.pauses: dict[str, Wait] = {}  # server-wide pauses, by server (the dispatcher's stats)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._woken = 0  # waiters handed a wake-up that have not run yet
        self._timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._watchers: list[asyncio.Task[None]] = []
        self._closed = False

    # choosing -------------------------------------------------------------------------------------
    async def acquire(self, tried: set[Server]) -> Server | None:
        """The least loaded server in rotation with room, its slot taken; waits while none has one.

        ``tried``: servers this request already failed on in this round. ``None``: no server in
        rotation is left for it (the caller backs off and starts a new round).
        """
        queue = bool(self._waiters or self._woken)  # first come, first served
        while True:
            if queue:
                await self._queue()
            queue = True
            now = time.monotonic()
            found = self._ready(tried, now)
            if found is None or isinstance(found, Server):
                if found is not None:
                    found.limit.take()
                    if found.limit.in_flight == 1:
                        found.progress_at = now
                return found
            self._later(found)

    def _ready(self, tried: set[Server], now: float) -> Server | float | None:
        """A server to send to now; else the seconds until a pause ends (``0.0``: until a slot frees
        or a probe answers); ``None`` when no server in rotation is left for this request."""
        best: Server | None = None
        soonest = 0.0
        candidates = 0
        for server in self.servers:
            if server in tried:
                continue
            if server.state == DOWN:
                if now < server.retry_at:
                    continue
                self._start_probe(server)
            candidates += 1
            if server.paused_until:
                if server.paused_until > now:
                    left = server.paused_until - now
                    soonest = left if not soonest else min(soonest, left)
                    continue
                self._unpause(server)
            if self._has_room(server) and (best is None or _less_loaded(server, best)):
                best = server
        if best is not None:
            return best
        return soonest if candidates else None

    @staticmethod
    def _has_room(server: Server) -> bool:
        if server.state == PROBING:  # half-open: one real request is the probe (none while a GET probes)
            return server.probe is None and server.limit.in_flight == 0
        return server.limit.room() > 0

    async def _queue(self) -> None:
        """Wait in line for a wake-up (a slot freed, a state changed)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self._woken -= 1
                self.wake()  # we were handed a wake-up but are leaving: pass it on
            elif fut in self._waiters:
                self._waiters.remove(fut)
            raise
        self._woken -= 1

    def wake(self) -> None:
        """Wake as many waiters as servers have free slots now (FIFO, no thundering herd)."""
        waiters = self._waiters
        if not waiters:
            return
        now = time.monotonic()
        free = -self._woken
        for server in self.servers:
            if server.paused_until <= now and server.state != DOWN:
                free += max(0, server.limit.room()) if server.state == UP else int(self._has_room(server))
        while waiters and free > 0:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                self._woken += 1
                free -= 1

    def _later(self, delay: float) -> None:
        """Wake every waiter after ``delay`` (a pause ends, a probe is due): one timer per group."""
        if delay <= 0 or self._closed:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        timer = self._timer
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timer = loop.call_at(when, self._wake_all)

    def _wake_all(self) -> None:
        self._timer = None
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                self._woken += 1

    # outcomes -------------------------------------------------------------------------------------
    def answered(self, server: Server, latency: float) -> None:
        server.limit.release(success=True, latency=latency)
        server.sent += 1
        server.window.add(False)
        server.latency = latency if not server.latency else 0.9 * server.latency + 0.1 * latency
        server.progress_at = now = time.monotonic()
        if server.state != UP or server.consecutive:
            self._back_up(server)
        if len(self.servers) > 1:
            self._find_stalls(server, now)
        self.wake()

    def _find_stalls(self, answering: Server, now: float) -> None:
        """Servers that hold requests without answering while ``answering`` answers: out of
        rotation, and their requests cancelled so the dispatcher sends them to another server.

        A server that accepted connections and then never answers (or drips bytes) would otherwise
        hold its requests, and the samples waiting on them, until the request timeout. One that is
        not overdue yet is looked at again when it will be (the other servers may fall silent
        meanwhile: their work waits on it).
        """
        health = self.health
        due: float | None = None
        for s in self.servers:
            if s is answering or s.state == DOWN or not s.attempts or not capped(s.backend):
                continue
            if answering.progress_at <= s.progress_at:
                continue  # nobody answered since it last did: no evidence against it
            at = s.progress_at + max(
                health.stall_after, health.stall_factor * (s.latency or answering.latency)
            )
            if now < at:
                due = at if due is None else min(due, at)
                continue
            self._take_out(s)
            for token, task in s.attempts.items():
                s.evicted.add(token)
                task.cancel()
        if due is not None:
            self._recheck(answering, due - now)

    def _recheck(self, answering: Server, delay: float) -> None:
        timer = self._stall_timer
        loop = asyncio.get_running_loop()
        if self._closed or (
            timer is not None and not timer.cancelled() and timer.when() <= loop.time() + delay
        ):
            return
        if timer is not None:
            timer.cancel()
        self._stall_timer = loop.call_later(delay, self._stall_check, answering)

    def _stall_check(self, answering: Server) -> None:
        self._stall_timer = None
        self._find_stalls(answering, time.monotonic())

    def released(self, server: Server) -> None:
        """A request that did not get an answer (cancelled, refused) gives its slot back."""
        server.limit.release(success=False)
        self.wake()

    def failed(self, server: Server, exc: RetryableError, epoch: int) -> float | None:
        """Count a transient failure against ``server``; returns the seconds of a server-wide pause
        when 429s now dominate its answers and it said how long to wait, else ``None``.

        A 429 or a timeout halves its limit (once per burst). A timeout that says the server
        stalled (no connection, silence midway through an answer, or the whole-exchange cap; the
        transport's ``APITimeoutError.stalled``) counts against its health like a dropped
        connection; one that only says no first byte came yet (a queue, a long answer) does not.
        """
        server.limit.release(success=False)
        pause = None
        if isinstance(exc, RateLimitError):
            server.limit.backoff(since=epoch)
            server.window.add(True)
            if exc.retry_after is not None and server.window.dominated():
                pause = min(exc.retry_after, self.max_retry_after)
                self._pause(server, pause)
        elif isinstance(exc, APITimeoutError):
            if capped(server.backend):
                server.limit.backoff(since=epoch)  # too slow to answer: fewer requests at once
            if getattr(exc, "stalled", None) is not False:
                self._unhealthy(server, exc)
            # else: no first byte yet, which a busy server's queue also causes; it stays in rotation
        else:
            self._unhealthy(server, exc)
        self.wake()
        return pause

    def others_in_rotation(self, tried: set[Server]) -> bool:
        """Whether a server this request has not tried yet is in rotation (failover at once)."""
        return any(s.state != DOWN and s not in tried for s in self.servers)

    def _pause(self, server: Server, seconds: float) -> None:
        until = time.monotonic() + seconds
        if until > server.paused_until:
            server.paused_until = until
            self.pauses[server.name] = Wait(self.roles, "429", time.time() + seconds, server_wide=True)
            self._later(seconds)

    def _unpause(self, server: Server) -> None:
        server.paused_until = 0.0
        self.pauses.pop(server.name, None)

    def _unhealthy(self, server: Server, exc: LLMError) -> None:
        server.failed += 1
        if isinstance(exc, ServerError):
            server.consecutive += 1
            if server.consecutive < self.health.failures:
                return
        self._take_out(server)

    def _take_out(self, server: Server) -> None:
        """Out of rotation until a probe answers; never the last server in rotation (a group of one
        keeps sending, with the dispatcher's backoff, as a single server always did)."""
        if server.state == DOWN:
            return
        if not any(s is not server and s.state != DOWN for s in self.servers):
            server.state = UP  # the last one (a failed half-open probe too) keeps taking requests
            return
        server.state = DOWN
        server.downs += 1
        server.consecutive = 0
        delay = self.health.backoff(server.downs)
        server.retry_at = time.monotonic() + delay
        self._later(delay)

    def _back_up(self, server: Server) -> None:
        server.state = UP
        server.consecutive = 0
        server.downs = 0
        self.wake()

    def _start_probe(self, server: Server) -> None:
        server.state = PROBING
        lister = getattr(server.backend, "list_models", None)
        if lister is None or self._closed:
            return  # half-open: the next real request is the probe
        server.probe = asyncio.get_running_loop().create_task(self._probe(server, lister))

    async def _probe(self, server: Server, lister: Any) -> None:
        try:
            await lister(within=self.health.probe_timeout)
        except (APIConnectionError, APITimeoutError, ServerError):
            server.probe = None
            server.state = UP  # so that _take_out sees it in rotation and takes it out again
            self._take_out(server)
            self._wake_all()  # requests waiting for this probe look again
            return
        except LLMError:
            pass  # it answered (a key without the right to list models, say): it is up
        server.probe = None
        self._back_up(server)

    # setup and shutdown ---------------------------------------------------------------------------
    def watch(self, watcher: Coroutine[Any, Any, None]) -> None:
        """Run ``watcher`` (a look at a server's own load) until the group closes."""
        self._watchers.append(asyncio.get_running_loop().create_task(watcher))

    async def aclose(self) -> None:
        self._closed = True
        for timer in (self._timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        probes = [s.probe for s in self.servers if s.probe is not None and not s.probe.done()]
        probes += [task for task in self._watchers if not task.done()]
        for task in probes:
            task.cancel()
        for task in probes:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for server in self.servers:
            await server.backend.aclose()

    async def _listed(self, within: float | None) -> dict[str, list[str]]:
        """The models each reachable server lists, by server."""
        seen: dict[str, list[str]] = {}
        for server in self.servers:
            lister = getattr(server.backend, "list_models", None)
            if lister is None:
                continue
            try:
                models: list[str] = await lister(within=within) if within is not None else await lister()
            except RetryableError:
                continue  # down now; the group takes it out when it fails a request
            seen[server.name] = sorted(models)
        return seen

    async def list_models(self, *, within: float | None = None) -> list[str]:
        """The models every reachable server serves; servers that disagree are refused (never mixed)."""
        seen = await self._listed(within)
        distinct = {tuple(v) for v in seen.values()}
        if len(distinct) > 1:
            listed = "; ".join(f"{name}: {', '.join(m) or 'none'}" for name, m in seen.items())
            raise ConfigError(
                f"the servers of endpoint group {self.name!r} serve different models ({listed}); "
                "a group must serve one model: pass --model, or give each model its own role"
            )
        return list(distinct.pop()) if distinct else []

    async def check_model(self, model: str) -> None:
        """Refuse the group when a server does not list ``model`` while another server does.

        When no server lists it, none is refused: llama.cpp's server and Ollama answer to names
        they do not list, and the first 404 says what a server offers.
        """
        seen = await self._listed(None)
        strangers = [name for name, models in seen.items() if model not in models]
        if not strangers or len(strangers) == len(seen):
            return
        listed = "; ".join(f"{name}: {', '.join(seen[name][:10]) or 'none'}" for name in strangers)
        raise ConfigError(
            f"not every server of endpoint group {self.name!r} serves model {model!r} ({listed}); "
            "a group must serve one model: drop those servers, or give them their own role"
        )

    async def check(self) -> None:
        """Each server's setup check (a refused key is refused before any work)."""
        for server in self.servers:
            check = getattr(server.backend, "check", None)
            if check is not None:
                await check()

    # the display ----------------------------------------------------------------------------------
    def states(self, now: float | None = None) -> list[EndpointState]:
        mono = time.monotonic() if now is None else now
        return [
            EndpointState(
                s.name,
                s.state,
                s.limit.in_flight,
                min(int(s.limit.limit), s.limit.maximum),
                s.sent,
                s.failed,
                max(0.0, s.retry_at - mono) if s.state == DOWN else None,
            )
            for s in self.servers
        ]


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


def _less_loaded(a: Server, b: Server) -> bool:
    return (a.load(), a.sent) < (b.load(), b.sent)
