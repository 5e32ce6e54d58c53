"""The one place where a role's request meets a model: routing, cache, the scheduler, accounting.

Agents call ``await dispatcher(role, messages)``; the dispatcher picks the role's route (endpoint
group, model, parameters), replays the answer from the store when it has one, and otherwise sends
it. Every answer is committed to the store before it is returned (and before its in-flight slot is
freed), so a crash never loses a paid-for call and a rerun re-sends at most what was in flight. An
identical request already on the wire is awaited rather than sent again, and once a server refuses
the key (or a model) nothing more is sent to it: the run is misconfigured, not unlucky.

This is the one scheduler. Every route is served by an endpoint group (``coevol.engine.endpoints``;
a single server is a group of one) that keeps each server's limit, 429 window, pause clock and
health; one retry loop here asks the group for a server with room, sends, and reports the outcome
back. A transient failure on one server is retried at once on another server of the group that
this request has not tried; once every server in rotation was tried, the request backs off (a
429's ``Retry-After``, capped, or jittered exponential delay) and starts a new round.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

from coevol.conversation import estimate_tokens
from coevol.engine.endpoints import EndpointGroup, Server, Wait
from coevol.engine.limits import Backpressure, TokenBucket
from coevol.errors import (
    APITimeoutError,
    AuthenticationError,
    ConfigError,
    FatalError,
    LLMError,
    NotFoundError,
    RateLimitError,
    RetryableError,
)
from coevol.llm.batch import waiting_on_batch
from coevol.llm.types import Backend, ChatRequest, Completion, GenParams, Message, Usage
from coevol.prompts.render import merge_system_prompt
from coevol.store.sqlite import Store

__all__ = ["Dispatcher", "RetryPolicy", "Route", "RunStats", "Wait"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where one role's requests go and how they are sampled."""

    backend: Backend | EndpointGroup  # a backend is served as a group of one
    model: str
    params: GenParams = field(default_factory=GenParams)
    merge_system: bool = False

    @property
    def shown(self) -> str:
        """What served this route, for the trace: the servers (and the group's name, if given)."""
        backend = self.backend
        shown = getattr(backend, "shown", None)  # a group's, or that of the group a batch backend wraps
        return shown if isinstance(shown, str) else backend.endpoint


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a 429's ``Retry-After`` wins when it is given.

    Full jitter spreads the retries of requests that failed together (a server restart drops
    hundreds at once) so they do not return together. ``Retry-After`` is obeyed up to
    ``max_retry_after`` (``--max-retry-after``): a server asking for an hour would otherwise stall
    the run without a word.
    """

    max_retries: int = 6
    base_delay: float = 0.5
    max_delay: float = 60.0
    max_retry_after: float = 90.0

    def delay(self, retry: int, error: RetryableError) -> float:
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            return min(error.retry_after, self.max_retry_after)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**retry))


@dataclass(slots=True)
class RunStats:
    """Live counters for the progress display and the summary."""

    sent: int = 0
    cached: int = 0  # answered from the store, or by an identical request already in flight
    retries: int = 0
    failed_calls: int = 0
    rate_limited: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # failed calls by error type
    usage: dict[str, Usage] = field(default_factory=dict)  # tokens of calls actually sent
    cached_usage: dict[str, Usage] = field(default_factory=dict)  # tokens replayed from the store
    waits: dict[int, Wait] = field(default_factory=dict)  # one request's backoff, by request token
    pauses: dict[str, Wait] = field(default_factory=dict)  # server-wide pauses, by server
    sending: dict[int, tuple[str, float]] = field(default_factory=dict)  # token -> (role, monotonic start)
    pools: list[EndpointGroup] = field(default_factory=list)  # groups of several servers (display)
    batches: list[Any] = field(default_factory=list)  # --batch backends (``coevol.llm.batch``)


# What a request already in flight hands to identical requests that wait for it: its answer, its
# error, or ``None`` when it was cancelled and a waiter has to send the request itself.
_Shared = Completion | LLMError | None


class Dispatcher:
    """Implements ``coevol.llm.types.Generate`` for a set of role routes.

    A 429 is one request's problem first: that request backs off (``Retry-After``, capped, or a
    jittered exponential delay; at once onto another server of its group when there is one) and
    that server's adaptive in-flight limit shrinks, but the other requests keep going. Only when
    429s make up at least half of a server's recent answers, and the server said how long to wait,
    does every request to that server pause. Waits are published in ``stats.waits`` and
    ``stats.pauses`` so the progress display can say what is waiting and until when.

    ``max_in_flight`` is the limit of each server given as a plain backend (a group of one); an
    ``EndpointGroup`` brings its servers' own limits. ``backpressure`` (``None``: off) lets a
    server's limit follow its queueing delay, for servers that queue rather than answer 429.
    """

    def __init__(
        self,
        routes: Mapping[str, Route],
        *,
        store: Store | None = None,
        max_in_flight: int = 256,
        retry: RetryPolicy | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        stats: RunStats | None = None,
        backpressure: Backpressure | None = Backpressure(),  # noqa: B008  (frozen: shared safely)
    ) -> None:
        self.routes = dict(routes)
        self.store = store
        self.retry = retry or RetryPolicy()
        self.stats = stats or RunStats()
        self.groups = self._group(max_in_flight, backpressure)
        # A store written by coevol 0.2 keyed a single server's calls by its URL: on a miss, those
        # groups look there too (only when the store held calls before this run began).
        self._former = {
            role: g.former for role, g in self.groups.items() if g.former is not None and store is not None
        }
        if self._former and store is not None and not store.count_calls():
            self._former = {}
        self.peak = 0  # the most requests in flight at once, over every server
        self._sending = 0
        self._rpm = TokenBucket(rpm) if rpm else None
        self._tpm = TokenBucket(tpm) if tpm else None
        self._tokens = itertools.count()
        self._in_flight: dict[str, asyncio.Future[_Shared]] = {}
        # A server that rejected our key (or does not know a model) will reject every later request
        # too: remember it, and fail those without sending them.
        self._refused: dict[tuple[str, str | None], FatalError] = {}
        self._callers: set[asyncio.Task[object]] = set()  # tasks waiting in ``__call__``
        # Called with the role and the answer after every answer actually sent; may raise (a job
        # stops on --max-budget here, so it overshoots by at most the calls in flight, not by
        # whole samples).
        self.after_send: Callable[[str, Completion], None] | None = None

    def _group(self, max_in_flight: int, backpressure: Backpressure | None) -> dict[str, EndpointGroup]:
        """Each role's endpoint group; routes sharing a backend share its group (and its limits)."""
        made: dict[int, EndpointGroup] = {}
        groups: dict[str, EndpointGroup] = {}
        for role, route in self.routes.items():
            backend = route.backend
            group = made.get(id(backend))
            if group is None:
                if isinstance(backend, EndpointGroup):
                    group = backend
                else:
                    group = EndpointGroup(
                        [backend],
                        limits=[max_in_flight],
                        max_retry_after=self.retry.max_retry_after,
                        backpressure=backpressure,
                    )
                made[id(backend)] = group
                group.pauses = self.stats.pauses
            group.roles = f"{group.roles}, {role}" if group.roles else role
            groups[role] = group
        return groups

    def request(
        self, role: str, messages: Sequence[Message], *, attempt: int = 0, seed: int | None = None, n: int = 1
    ) -> ChatRequest:
        """The exact request a role's messages become (routing and system-prompt merging); ``seed``
        and ``n`` override the route's for this call."""
        try:
            route = self.routes[role]
        except KeyError:
            raise ConfigError(f"no model configured for role {role!r}") from None
        msgs = merge_system_prompt(messages) if route.merge_system else messages
        params = route.params
        if seed is not None or n != 1:
            params = replace(params, seed=params.seed if seed is None else seed, n=n)
        return ChatRequest(route.backend.endpoint, route.model, tuple(msgs), params, attempt)

    async def __call__(
        self, role: str, messages: Sequence[Message], *, attempt: int = 0, seed: int | None = None, n: int = 1
    ) -> Completion:
        request = self.request(role, messages, attempt=attempt, seed=seed, n=n)
        task = asyncio.current_task()
        if task is None:
            return await self._call(role, request)
        self._callers.add(task)
        try:
            return await self._call(role, request)
        finally:
            self._callers.discard(task)

    async def drain(self) -> int:
        """Cancel the calls still in flight and wait for them; returns how many there were.

        When one of two concurrent calls of a sample fails, the sample is over but the other call
        may still be running, detached. A run ends by draining, so nothing keeps sending (or
        retrying on a closed session) after the run's store and backends are closed.
        """
        left = [t for t in self._callers if not t.done() and t is not asyncio.current_task()]
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left)
        return len(left)

    async def _replayed(self, role: str, request: ChatRequest, key: str) -> Completion | None:
        """The stored answer, or that of an identical request already on the wire; ``None``: send."""
        store = self.store
        stats = self.stats
        while True:
            hit = store.get_call(key, choices=request.params.n) if store is not None else None
            if hit is None and role in self._former and store is not None:
                hit = store.get_call(
                    replace(request, endpoint=self._former[role]).key(), choices=request.params.n
                )
            if hit is not None:
                stats.cached += 1
                _add_usage(stats.cached_usage, role, hit)
                return hit
            shared = self._in_flight.get(key)
            if shared is None:
                return None
            # The same request is on the wire for another sample (duplicate rows are common in
            # SFT data): wait for its answer instead of paying for it twice. Through a Batch API,
            # this sample then waits on that batch as much as the sender does.
            batched = getattr(self.routes[role].backend, "batched", False)
            with waiting_on_batch() if batched else nullcontext():
                result = await asyncio.shield(shared)
            if isinstance(result, Completion):
                stats.cached += 1
                _add_usage(stats.cached_usage, role, result)
                return replace(result, cached=True)
            if result is not None:
                raise result
            # its sender was cancelled: look again, and send it ourselves if nobody else has

    async def _call(self, role: str, request: ChatRequest) -> Completion:
        key = request.key()
        replayed = await self._replayed(role, request, key)
        if replayed is not None:
            return replayed
        fut: asyncio.Future[_Shared] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = fut
        outcome: _Shared = None
        try:
            try:
                completion = await self._send(self.groups[role], request, key, role)
            except (FatalError, RetryableError) as exc:
                outcome = exc
                self._count_failure(key, role, exc)
                raise
            outcome = completion
            if self.after_send is not None:
                self.after_send(role, completion)
            return completion
        finally:
            del self._in_flight[key]
            fut.set_result(outcome)

    def _count_failure(self, key: str, role: str, exc: LLMError) -> None:
        stats = self.stats
        stats.failed_calls += 1
        name = type(exc).__name__
        stats.errors[name] = stats.errors.get(name, 0) + 1
        if self.store is not None:
            self.store.put_call_failure(key, role, exc)

    async def _send(self, group: EndpointGroup, request: ChatRequest, key: str, role: str) -> Completion:
        """The one retry loop: a server with room, the call, the outcome reported to the group.

        A transient failure moves the request at once to a server of the group it has not tried in
        this round; when none is left it backs off (not at all when its server just paused: the
        group holds it until the pause ends) and starts a new round with every server again.
        """
        backend = self.routes[role].backend
        if getattr(backend, "batched", False):
            return await self._batched(backend, request, key, role)  # type: ignore[arg-type]
        retries = 0
        tried: set[Server] = set()
        last: RetryableError | None = None
        paused = False
        while True:
            if self._rpm is not None or self._tpm is not None:
                await self._admit(request)
            server = await group.acquire(tried)
            if server is not None:
                outcome = await self._attempt(group, server, request, key, role)
                if isinstance(outcome, Completion):
                    return outcome
                last, paused = outcome
                tried.add(server)
                if group.others_in_rotation(tried):
                    self.stats.retries += 1
                    continue
            assert last is not None  # a request with nothing tried always finds a server
            if retries >= self.retry.max_retries:
                raise last
            retries += 1
            self.stats.retries += 1
            tried.clear()
            if not paused:
                delay = self.retry.delay(retries - 1, last)
                if delay > 0:
                    await self._wait(role, _reason(last), delay)

    async def _batched(self, backend: Backend, request: ChatRequest, key: str, role: str) -> Completion:
        """A call through a Batch API (``--batch``): the provider's queue is its only limit, so no
        server slot, rate bucket or stall timeout applies. A failed or expired line backs off as
        any transient failure, then is queued again, alone, for the next batch."""
        retries = 0
        while True:
            if self._refused:
                self._check_refused(request)
            try:
                completion = await backend.complete(request)
                break
            except RetryableError as exc:
                if retries >= self.retry.max_retries:
                    raise
                retries += 1
                self.stats.retries += 1
                delay, reason = self.retry.delay(retries - 1, exc), _reason(exc)
            except (AuthenticationError, NotFoundError) as exc:
                self._refused.setdefault((request.endpoint, None), exc)
                raise
            if delay > 0:
                await self._wait(role, reason, delay)
        self.stats.sent += 1
        _add_usage(self.stats.usage, role, completion)
        if self.store is not None:
            self.store.put_call(key, role, request.model, completion)
            await self.store.synced()
        return completion

    async def _attempt(
        self, group: EndpointGroup, server: Server, request: ChatRequest, key: str, role: str
    ) -> Completion | tuple[RetryableError, bool]:
        """One try on ``server`` (its slot already taken): the call and the store, then the slot
        goes back on every path. A transient error is returned with whether the server paused."""
        epoch = server.limit.epoch
        token = next(self._tokens)
        stats = self.stats
        stats.sending[token] = (role, time.monotonic())
        self._sending += 1
        if self._sending > self.peak:
            self.peak = self._sending
        try:
            if self._refused:
                self._check_refused(request)
            if server.rpm is not None:
                await server.rpm.take(1)
            sent_at = time.monotonic()
            completion = await self._on_the_wire(server, token, request)
            latency = time.monotonic() - sent_at
            stats.sent += 1
            _add_usage(stats.usage, role, completion)
            if self.store is not None:
                # Committed before the slot is released and before anything can depend on it,
                # so after a kill only requests still holding a slot are paid for again.
                self.store.put_call(key, role, request.model, completion)
                await self.store.synced()
        except RetryableError as exc:
            if isinstance(exc, RateLimitError):
                stats.rate_limited += 1
            return exc, group.failed(server, exc, epoch) is not None
        except asyncio.CancelledError:
            stalled = _stalled(server, token)
            if stalled is None:
                group.released(server)
                raise
            return stalled, group.failed(server, stalled, epoch) is not None
        except (AuthenticationError, NotFoundError) as exc:
            group.released(server)
            scope = request.endpoint, None if isinstance(exc, AuthenticationError) else request.model
            self._refused.setdefault(scope, exc)
            raise
        except BaseException:
            group.released(server)
            raise
        finally:
            del stats.sending[token]
            self._sending -= 1
        group.answered(server, latency)
        if self._tpm is not None:
            self._settle_tokens(request, completion)
        return completion

    @staticmethod
    async def _on_the_wire(server: Server, token: int, request: ChatRequest) -> Completion:
        """The call itself, cancellable by the group while it lasts (see ``_find_stalls``)."""
        task = asyncio.current_task()
        if task is None:
            return await server.backend.complete(request)
        server.attempts[token] = task
        try:
            return await server.backend.complete(request)
        finally:
            del server.attempts[token]

    async def _wait(self, role: str, reason: str, delay: float) -> None:
        """Sleep out one request's backoff, visible in ``stats.waits`` while it lasts."""
        token = next(self._tokens)
        self.stats.waits[token] = Wait(role, reason, time.time() + delay)
        try:
            await asyncio.sleep(delay)
        finally:
            del self.stats.waits[token]

    def _check_refused(self, request: ChatRequest) -> None:
        refused = self._refused.get((request.endpoint, None)) or self._refused.get(
            (request.endpoint, request.model)
        )
        if refused is not None:
            raise type(refused)(f"{refused} (not sent: the server already refused it)", status=refused.status)

    async def _admit(self, request: ChatRequest) -> None:
        """Take from the run's rate buckets (``--rpm``, ``--tpm``) before each try."""
        if self._rpm is not None:
            await self._rpm.take(1)
        if self._tpm is not None:
            await self._tpm.take(self._estimate_tokens(request))

    @staticmethod
    def _estimate_tokens(request: ChatRequest) -> float:
        prompt = sum(estimate_tokens(m["content"]) for m in request.messages)
        return float(prompt + request.params.max_tokens)

    def _settle_tokens(self, request: ChatRequest, completion: Completion) -> None:
        if self._tpm is not None:
            used = completion.prompt_tokens + completion.completion_tokens
            self._tpm.give_back(max(0.0, self._estimate_tokens(request) - used))


def _stalled(server: Server, token: int) -> APITimeoutError | None:
    """The error for an attempt the group cancelled because its server stalled; ``None`` when the
    cancellation came from elsewhere (the run stopping) and must propagate."""
    if token not in server.evicted:
        return None
    server.evicted.discard(token)
    task = asyncio.current_task()
    if task is not None and task.uncancel() > 0:
        return None  # cancelled by someone else too
    return APITimeoutError(
        f"no answer from {server.name} for {time.monotonic() - server.progress_at:.0f}s while another "
        "server of its group answered: it left rotation and the request went to another server"
    )


def _reason(exc: RetryableError) -> str:
    """Why a request waits, for the display: ``429``, ``HTTP 503``, ``timeout`` ..."""
    if isinstance(exc, RateLimitError):
        return "429"
    if exc.status is not None:
        return f"HTTP {exc.status}"
    return {"APITimeoutError": "timeout", "APIConnectionError": "connection error"}.get(
        type(exc).__name__, type(exc).__name__
    )


def _add_usage(table: dict[str, Usage], role: str, completion: Completion) -> None:
    usage = table.get(role)
    if usage is None:
        usage = table[role] = Usage()
    usage.prompt_tokens += completion.prompt_tokens
    usage.completion_tokens += completion.completion_tokens
    usage.calls += 1
