"""What an HTTP transport does for ``OpenAIHTTPBackend``: one exchange in, one ``Answer`` out.

Two transports implement it: ``LeanTransport`` (``coevol.llm.lean_http``: HTTP/1.1 keep-alive on
asyncio protocols with httptools' parser, for plain-http servers, where the client's CPU goes) and
``AiohttpTransport`` (``coevol.llm.aiohttp_transport``: TLS, proxies from the environment, and a
fallback the user can choose). A transport raises only the three exceptions below; the backend
translates them, once, into ``coevol.errors`` with the URL masked and secrets scrubbed.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple, Protocol, TypeAlias

from yarl import URL

from coevol.errors import TimeoutPhase
from coevol.llm.timeouts import Timeouts

__all__ = [
    "MAX_ERROR_BODY",
    "Answer",
    "Broken",
    "Stalled",
    "TooLarge",
    "Transport",
    "TransportName",
]

MAX_ERROR_BODY: Final = 64 * 1024  # an error body is only read for its message

TransportName: TypeAlias = Literal["auto", "lean", "aiohttp"]
"""``auto``: lean for ``http://`` base URLs, aiohttp for ``https://`` and proxied URLs."""


class Answer(NamedTuple):
    """A complete answer: status, body (capped) and the one header the backend reads.

    ``header`` is ``Retry-After`` for a 429 and ``Location`` for a 3xx, ``None`` otherwise.
    """

    status: int
    body: bytes
    header: str | None


class Stalled(Exception):
    """A timeout fired; ``phase`` says which and ``seconds`` its limit."""

    def __init__(self, phase: TimeoutPhase, seconds: float) -> None:
        super().__init__(phase, seconds)
        self.phase: TimeoutPhase = phase
        self.seconds = seconds


class Broken(Exception):
    """The connection failed, was refused or closed before the answer was complete."""


class TooLarge(Exception):
    """A success answer past ``max_answer_bytes``; reading stopped there."""


class Transport(Protocol):
    """One pooled HTTP client bound to the event loop it is first used in."""

    async def exchange(self, method: str, url: URL, body: bytes | None, timeouts: Timeouts) -> Answer:
        """Send one request and read its answer, each phase within its timeout."""
        ...

    async def aclose(self) -> None:
        """Close every pooled connection; a later exchange opens new ones."""
        ...
