"""The one place where a role's request meets a model: routing, cache, retries, limits, accounting.

Agents call ``await dispatcher(role, messages)``; the dispatcher picks the role's route (backend,
model, parameters), replays the answer from the store when it has one, and otherwise sends it under
the concurrency and rate limits, retrying transient failures with backoff. Every answer is committed
to the store before it is returned (and before its in-flight slot is freed), so a crash never loses
a paid-for call and a rerun re-sends at most what was in flight. An identical request already on the
wire is awaited rather than sent again, and once a server refuses the key (or a model) nothing more
is sent to it: the run is misconfigured, not unlucky.

A route served by several servers has an ``EndpointPool`` (``coevol.engine.endpoints``) as its
backend: the pool chooses the server, keeps each server's own limits and takes failing ones out of
rotation; here it is one endpoint, named after its group, so cache keys never name a server.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from coevol.conversation import estimate_tokens
from coevol.engine.limits import AdaptiveLimit, RateWindow, TokenBucket
from coevol.errors import (
    AuthenticationError,
    ConfigError,
    FatalError,
    LLMError,
    NotFoundError,
    RateLimitError,
    RetryableError,
)
from coevol.llm.types import Backend, ChatRequest, Completion, GenParams, Message, Usage
from coevol.prompts.render import merge_system_prompt
from coevol.store.sqlite import Store

if TYPE_CHECKING:
    from coevol.engine.endpoints import EndpointPool

__all__ = ["Dispatcher", "RetryPolicy", "Route", "RunStats", "Wait"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where one role's requests go and how they are sampled."""

    backend: Backend
    model: str
    params: GenParams = field(default_factory=GenParams)
    merge_system: bool = False


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


@dataclass(frozen=True, slots=True)
class Wait:
    """A request (or a whole server) waiting before it may send: shown by the progress display."""

    roles: str  # the roles whose requests wait, e.g. "judge" or "positive, critical"
    reason: str  # "429", "HTTP 503", "rate limit" ...
    until: float  # wall-clock time (``time.time()``) the wait ends
    server_wide: bool = False


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
    pauses: dict[str, Wait] = field(default_factory=dict)  # server-wide pauses, by endpoint
    sending: dict[int, tuple[str, float]] = field(default_factory=dict)  # token -> (role, monotonic start)
    pools: list[EndpointPool] = field(default_factory=list)  # routes served by several servers


# What a request already in flight hands to identical requests that wait for it: its answer, its
# error, or ``None`` when it was cancelled and a waiter has to send the request itself.
_Shared = Completion | LLMError | None


class Dispatcher:
    """Implements ``coevol.llm.types.Generate`` for a set of role routes.

    A 429 is one request's problem first: that request backs off (``Retry-After``, capped, or a
    jittered exponential delay) and the adaptive in-flight limit shrinks, but the other requests
    keep going. Only when 429s make up at least half of a server's recent answers, and the server
    said how long to wait, does every request to that server pause. Waits are published in
    ``stats.waits`` so the progress display can say what is waiting and until when.
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
    ) -> None:
        self.routes = dict(routes)
        self.store = store
        self.retry = retry or RetryPolicy()
        self.stats = stats or RunStats()
        self.limit = AdaptiveLimit(max_in_flight)
        self._rpm = TokenBucket(rpm) if rpm else None
        self._tpm = TokenBucket(tpm) if tpm else None
        self._paused: dict[str, float] = {}  # endpoint -> monotonic end of a server-wide pause
        self._windows: dict[str, RateWindow] = {}
        self._tokens = itertools.count()
        self._in_flight: dict[str, asyncio.Future[_Shared]] = {}
        # A server that rejected our key (or does not know a model) will reject every later request
        # too: remember it, and fail those without sending them.
        self._refused: dict[tuple[str, str | None], FatalError] = {}
        self._callers: set[asyncio.Task[object]] = set()  # tasks waiting in ``__call__``
        # Called after every answer actually sent; may raise (the runner stops on --max-budget here,
        # so a run overshoots by at most the calls in flight, not by whole samples).
        self.after_send: Callable[[], None] | None = None

    def request(self, role: str, messages: Sequence[Message], *, attempt: int = 0) -> ChatRequest:
        """The exact request a role's messages become (routing and system-prompt merging)."""
        try:
            route = self.routes[role]
        except KeyError:
            raise ConfigError(f"no model configured for role {role!r}") from None
        msgs = merge_system_prompt(messages) if route.merge_system else messages
        return ChatRequest(route.backend.endpoint, route.model, tuple(msgs), route.params, attempt)

    def roles_of(self, endpoint: str) -> str:
        """The roles served by ``endpoint``, for messages ("judge", "positive, critical")."""
        return ", ".join(r for r, route in self.routes.items() if route.backend.endpoint == endpoint)

    async def __call__(self, role: str, messages: Sequence[Message], *, attempt: int = 0) -> Completion:
        task = asyncio.current_task()
        if task is None:
            return await self._call(role, messages, attempt)
        self._callers.add(task)
        try:
            return await self._call(role, messages, attempt)
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

    async def _replayed(self, role: str, key: str) -> Completion | None:
        """The stored answer, or that of an identical request already on the wire; ``None``: send."""
        store = self.store
        stats = self.stats
        while True:
            hit = store.get_call(key) if store is not None else None
            if hit is not None:
                stats.cached += 1
                _add_usage(stats.cached_usage, role, hit)
                return hit
            shared = self._in_flight.get(key)
            if shared is None:
                return None
            # The same request is on the wire for another sample (duplicate rows are common in
            # SFT data): wait for its answer instead of paying for it twice.
            result = await asyncio.shield(shared)
            if isinstance(result, Completion):
                stats.cached += 1
                _add_usage(stats.cached_usage, role, result)
                return replace(result, cached=True)
            if result is not None:
                raise result
            # its sender was cancelled: look again, and send it ourselves if nobody else has

    async def _call(self, role: str, messages: Sequence[Message], attempt: int) -> Completion:
        request = self.request(role, messages, attempt=attempt)
        key = request.key()
        replayed = await self._replayed(role, key)
        if replayed is not None:
            return replayed
        fut: asyncio.Future[_Shared] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = fut
        outcome: _Shared = None
        try:
            try:
                completion = await self._send(self.routes[role].backend, request, key, role)
            except (FatalError, RetryableError) as exc:
                outcome = exc
                self._count_failure(key, role, exc)
                raise
            outcome = completion
            if self.after_send is not None:
                self.after_send()
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

    async def _send(self, backend: Backend, request: ChatRequest, key: str, role: str) -> Completion:
        """Send under the limits, retrying transient errors; store the answer before returning it."""
        retries = 0
        while True:
            try:
                return await self._attempt(backend, request, key, role)
            except RetryableError as exc:
                if retries >= self.retry.max_retries:
                    raise
                delay = self._after_transient(request, exc, retries)
                reason = "429" if isinstance(exc, RateLimitError) else _short_reason(exc)
            retries += 1
            self.stats.retries += 1
            if delay > 0:
                await self._wait(role, reason, delay)

    async def _attempt(self, backend: Backend, request: ChatRequest, key: str, role: str) -> Completion:
        """One try: admission, a slot, the call, the store; the slot is released on every path."""
        if self._paused or self._rpm is not None or self._tpm is not None:
            await self._admit(request, role)
        limit = self.limit
        await limit.acquire()
        epoch = limit.epoch
        token = next(self._tokens)
        self.stats.sending[token] = (role, time.monotonic())
        try:
            if self._refused:
                self._check_refused(request)
            completion = await backend.complete(request)
            self.stats.sent += 1
            _add_usage(self.stats.usage, role, completion)
            if self.store is not None:
                # Committed before the slot is released and before anything can depend on it,
                # so after a kill only requests still holding a slot are paid for again.
                self.store.put_call(key, role, request.model, completion)
                await self.store.synced()
        except RateLimitError:
            limit.release(success=False)
            limit.backoff(since=epoch)
            raise
        except (AuthenticationError, NotFoundError) as exc:
            limit.release(success=False)
            scope = request.endpoint, None if isinstance(exc, AuthenticationError) else request.model
            self._refused.setdefault(scope, exc)
            raise
        except BaseException:
            limit.release(success=False)
            raise
        finally:
            del self.stats.sending[token]
        limit.release(success=True)
        self._window(request.endpoint).add(False)
        if self._tpm is not None:
            self._settle_tokens(request, completion)
        return completion

    def _window(self, endpoint: str) -> RateWindow:
        window = self._windows.get(endpoint)
        if window is None:
            window = self._windows[endpoint] = RateWindow()
        return window

    def _after_transient(self, request: ChatRequest, exc: RetryableError, retries: int) -> float:
        """This request's delay before its next try; a server-wide pause only when 429s dominate."""
        delay = self.retry.delay(retries, exc)
        if not isinstance(exc, RateLimitError):
            return delay
        self.stats.rate_limited += 1
        window = self._window(request.endpoint)
        window.add(True)
        if exc.retry_after is not None and window.dominated():
            until = time.monotonic() + delay
            if until > self._paused.get(request.endpoint, 0.0):
                self._paused[request.endpoint] = until
                self.stats.pauses[request.endpoint] = Wait(
                    self.roles_of(request.endpoint), "429", time.time() + delay, server_wide=True
                )
            return 0.0  # the pause applies to this request as to every other one
        return delay

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

    async def _admit(self, request: ChatRequest, role: str) -> None:
        """Wait out a server-wide pause of this request's server, then take from the rate buckets."""
        until = self._paused.get(request.endpoint)
        if until is not None:
            wait = until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif self._paused.pop(request.endpoint, None) is not None:
                self.stats.pauses.pop(request.endpoint, None)
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


def _short_reason(exc: RetryableError) -> str:
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
