"""Plain data shared by every model client. No I/O here.

``Message``, ``Completion``, ``Choice``, ``TokenLogprob``, ``Usage`` and ``Generate`` are declared in
``coevol.domain`` (the loop and the roles use them too) and importable from here as before.

A ``ChatRequest`` is what a backend sends; its ``key()`` is the hash the store caches under, so it
must name everything that changes the answer (endpoint, model, sampling parameters, messages) and
nothing that does not (timeouts, API keys).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from coevol.domain import Choice, Completion, Generate, Message, TokenLogprob, Usage

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


class Backend(Protocol):
    """Something that answers chat requests: an HTTP server, llama.cpp in-process, or a fake.

    Implementations raise only ``coevol.errors.LLMError`` subclasses. ``endpoint`` names the
    server or model file for cache keys; it never contains a secret.
    """

    endpoint: str

    async def complete(self, request: ChatRequest) -> Completion: ...

    async def aclose(self) -> None: ...
