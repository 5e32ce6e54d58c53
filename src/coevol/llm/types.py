"""Plain data shared by every model client. No I/O here.

A ``ChatRequest`` is what a backend sends; its ``key()`` is the hash the store caches under, so it
must name everything that changes the answer (endpoint, model, sampling parameters, messages) and
nothing that does not (timeouts, API keys).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

__all__ = [
    "Backend",
    "ChatRequest",
    "Choice",
    "Completion",
    "GenParams",
    "Generate",
    "Message",
    "TokenLogprob",
    "Usage",
]

Message = dict[str, str]
"""One chat message, ``{"role": "system"|"user"|"assistant", "content": "..."}``."""


@dataclass(frozen=True, slots=True)
class GenParams:
    """Sampling parameters; defaults are the paper's (Appendix B)."""

    max_tokens: int = 1000
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    """Choices asked for in one request (vLLM and OpenAI honour it; llama.cpp answers one)."""
    top_logprobs: int | None = None
    """Ask for each generated token's log-probability and this many alternatives (``--judge prob``);
    ``None`` asks for none. Part of the body, so of the cache key: an answer stored without
    logprobs is never replayed to a caller that needs them."""

    def as_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        if self.seed is not None:
            body["seed"] = self.seed
        if self.stop:
            body["stop"] = list(self.stop)
        if self.n != 1:  # left out when 1, so every earlier cache key stays the same
            body["n"] = self.n
        if self.top_logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = self.top_logprobs
        return body


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A fully specified chat completion request.

    ``attempt`` distinguishes deliberate re-asks of an identical prompt (an unparseable judge verdict
    is asked again); it enters the cache key but is never sent to the server.
    """

    endpoint: str
    model: str
    messages: tuple[Message, ...]
    params: GenParams = field(default_factory=GenParams)
    attempt: int = 0

    def body(self) -> dict[str, Any]:
        """The OpenAI-compatible JSON body (without transport-only fields)."""
        return {"model": self.model, "messages": list(self.messages), **self.params.as_body()}

    def key(self) -> str:
        """Stable hash of the canonical request: the cache and resume key."""
        canon = {"endpoint": self.endpoint, "attempt": self.attempt, **self.body()}
        return hashlib.sha256(orjson.dumps(canon, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(slots=True)
class Usage:
    """Token counts; summed per role for the progress display and the trace."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.calls += other.calls

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "calls": self.calls,
        }


@dataclass(frozen=True, slots=True)
class Choice:
    """One of several choices of a completion asked with ``n`` > 1."""

    text: str
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token with its log-probability and the most likely alternatives at that step
    (``top``: ``(token, logprob)`` pairs as the server listed them)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Completion:
    """A model's answer. ``cached`` is true when it was replayed from the store, not sent.

    ``text`` and ``finish_reason`` are the first choice; ``more`` holds the others when the request
    asked for ``n`` > 1 and the server gave them (a server may give fewer than asked).
    ``logprobs`` is the answer's tokens when the request asked for them and the server returned
    them; ``None`` otherwise (a server that ignores the field gives ``None``, never an empty guess).
    """

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    cached: bool = False
    more: tuple[Choice, ...] = ()
    logprobs: tuple[TokenLogprob, ...] | None = None

    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens, 1)

    def choices(self) -> tuple[Choice, ...]:
        """Every choice, the first one first."""
        return (Choice(self.text, self.finish_reason), *self.more)


class Backend(Protocol):
    """Something that answers chat requests: an HTTP server, llama.cpp in-process, or a fake.

    Implementations raise only ``coevol.errors.LLMError`` subclasses. ``endpoint`` names the
    server or model file for cache keys; it never contains a secret.
    """

    endpoint: str

    async def complete(self, request: ChatRequest) -> Completion: ...

    async def aclose(self) -> None: ...


class Generate(Protocol):
    """What an agent role receives: ``await generate(role_name, messages)``.

    Which model, endpoint and parameters serve ``role_name`` -- and caching, retries, rate limits
    and concurrency -- are the engine's business, never the role's. ``attempt`` > 0 marks a
    deliberate re-ask of the same prompt, so a cache does not hand back the same answer. ``seed``
    (when given) replaces the role's seed for this call and ``n`` asks for several choices (the tree
    strategy's sampled critiques and distinct children); both are part of the request, so of its
    cache key.
    """

    def __call__(
        self,
        role: str,
        messages: Sequence[Message],
        *,
        attempt: int = 0,
        seed: int | None = None,
        n: int = 1,
    ) -> Awaitable[Completion]: ...
