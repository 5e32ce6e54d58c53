"""The one place where a role's request meets a model: routing, cache, retries, limits, accounting.

Agents call ``await dispatcher(role, messages)``; the dispatcher picks the role's route (backend,
model, parameters), replays the answer from the store when it has one, and otherwise sends it under
the concurrency and rate limits, retrying transient failures with backoff. Every answer is stored
before it is returned, so a crash never loses a paid-for call.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from coevol.engine.limits import AdaptiveLimit, TokenBucket
from coevol.errors import ConfigError, FatalError, RateLimitError, RetryableError
from coevol.llm.types import Backend, ChatRequest, Completion, GenParams, Message, Usage
from coevol.prompts.render import merge_system_prompt
from coevol.store.sqlite import Store

__all__ = ["Dispatcher", "RetryPolicy", "Route", "RunStats"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where one role's requests go and how they are sampled."""

    backend: Backend
    model: str
    params: GenParams = field(default_factory=GenParams)
    merge_system: bool = False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a 429's ``Retry-After`` wins when it is given."""

    max_retries: int = 6
    base_delay: float = 0.5
    max_delay: float = 60.0

    def delay(self, retry: int, error: RetryableError) -> float:
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            return min(error.retry_after, self.max_delay)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**retry))


@dataclass(slots=True)
class RunStats:
    """Live counters for the progress display and the summary."""

    sent: int = 0
    cached: int = 0
    retries: int = 0
    failed_calls: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    usage: dict[str, Usage] = field(default_factory=dict)  # tokens of calls actually sent
    cached_usage: dict[str, Usage] = field(default_factory=dict)  # tokens replayed from the store

    def tokens(self) -> int:
        return sum(u.prompt_tokens + u.completion_tokens for u in self.usage.values())


class Dispatcher:
    """Implements ``coevol.llm.types.Generate`` for a set of role routes."""

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
        self._not_before = 0.0  # a server-wide pause after a 429, shared by all requests

    def request(self, role: str, messages: Sequence[Message], *, attempt: int = 0) -> ChatRequest:
        """The exact request a role's messages become (routing and system-prompt merging)."""
        try:
            route = self.routes[role]
        except KeyError:
            raise ConfigError(f"no model configured for role {role!r}") from None
        msgs = merge_system_prompt(messages) if route.merge_system else messages
        return ChatRequest(route.backend.endpoint, route.model, tuple(msgs), route.params, attempt)

    async def __call__(self, role: str, messages: Sequence[Message], *, attempt: int = 0) -> Completion:
        request = self.request(role, messages, attempt=attempt)
        key = request.key()
        if self.store is not None:
            hit = self.store.get_call(key)
            if hit is not None:
                self.stats.cached += 1
                self.stats.cached_usage.setdefault(role, Usage()).add(hit.usage())
                return hit
        try:
            completion = await self._send(self.routes[role].backend, request)
        except (FatalError, RetryableError) as exc:
            self.stats.failed_calls += 1
            name = type(exc).__name__
            self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
            if self.store is not None:
                self.store.put_call_failure(key, role, exc)
            raise
        if self.store is not None:
            self.store.put_call(key, role, request.model, completion)
        self.stats.sent += 1
        self.stats.usage.setdefault(role, Usage()).add(completion.usage())
        return completion

    async def _send(self, backend: Backend, request: ChatRequest) -> Completion:
        retries = 0
        while True:
            await self._admit(request)
            await self.limit.acquire()
            ok, delay = False, 0.0
            try:
                completion = await backend.complete(request)
                ok = True
            except RetryableError as exc:
                if retries >= self.retry.max_retries:
                    raise
                delay = self.retry.delay(retries, exc)
                if isinstance(exc, RateLimitError):
                    # The server is overloaded, not just this request: everyone waits and the
                    # in-flight limit shrinks.
                    self.limit.backoff()
                    self._not_before = max(self._not_before, time.monotonic() + delay)
                    delay = 0.0
                retries += 1
                self.stats.retries += 1
            finally:
                self.limit.release(success=ok)
            if ok:
                self._settle_tokens(request, completion)
                return completion
            if delay > 0:
                await asyncio.sleep(delay)

    async def _admit(self, request: ChatRequest) -> None:
        """Wait out a server-wide 429 pause, then take from the optional rate buckets."""
        wait = self._not_before - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if self._rpm is not None:
            await self._rpm.take(1)
        if self._tpm is not None:
            await self._tpm.take(self._estimate_tokens(request))

    @staticmethod
    def _estimate_tokens(request: ChatRequest) -> float:
        chars = sum(len(m["content"]) for m in request.messages)
        return chars / 4 + request.params.max_tokens

    def _settle_tokens(self, request: ChatRequest, completion: Completion) -> None:
        if self._tpm is not None:
            used = completion.prompt_tokens + completion.completion_tokens
            self._tpm.give_back(max(0.0, self._estimate_tokens(request) - used))
