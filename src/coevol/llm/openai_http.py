"""A lean client for any OpenAI-compatible ``/chat/completions`` server (vLLM, llama.cpp, OpenAI ...).

The engine may run thousands of requests per second through one instance, so the request path is
kept short: one pooled ``aiohttp`` session per backend, bodies encoded and decoded with ``orjson``, no
logging, no retries. Provider errors are translated here, once, into ``coevol.errors``; everything
above this module only sees those classes.

The API key travels only in the ``Authorization`` header. It is kept out of ``repr()``, exception
messages and ``endpoint`` (which enters cache keys).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Final, Self

import aiohttp
import orjson
from yarl import URL

from coevol.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ContextLengthError,
    LLMError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from coevol.llm.types import ChatRequest, Completion

__all__ = ["OpenAIHTTPBackend", "parse_retry_after"]

_MAX_MESSAGE: Final = 300
# Lower-cased phrases servers use for "prompt too long": vLLM, llama.cpp server, OpenAI, generic.
_CONTEXT_MARKERS: Final = (
    "maximum context length",
    "context length",
    "context size",
    "context window",
    "context_length_exceeded",
)
_CONTEXT_CODES: Final = frozenset({"context_length_exceeded", "exceed_context_size_error"})
_BAD_REQUEST_STATUSES: Final = frozenset({400, 413, 422})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date); ``None`` if unusable.

    Fractional seconds are accepted because local proxies and the fake server send them.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; accept servers that write "-0000"
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _truncate(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _error_details(raw: bytes) -> tuple[str, str | None]:
    """The server's error message and code from an error body, whatever its shape.

    OpenAI and llama.cpp send ``{"error": {"message", "type", "code"}}``; older vLLM sends the
    fields at top level; FastAPI sends ``{"detail": ...}``; proxies send HTML or plain text.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace"), None
    if not isinstance(data, dict):
        return str(data), None
    err = data.get("error", data)
    if isinstance(err, str):
        return err, None
    if not isinstance(err, dict):
        return str(data), None
    message = err.get("message", err.get("detail", ""))
    code = err.get("code")
    kind = err.get("type")
    if isinstance(code, str):
        code_s: str | None = code
    elif isinstance(kind, str) and kind in _CONTEXT_CODES:
        code_s = kind
    else:
        code_s = None
    return (message if isinstance(message, str) else str(message)), code_s


class OpenAIHTTPBackend:
    """Answers ``ChatRequest``s by POSTing to ``{base_url}/chat/completions``.

    Bound to the event loop it is first used in (the session is created lazily there). Use as an
    async context manager or call ``aclose()`` to release pooled connections.
    """

    __slots__ = (
        "_api_key",
        "_headers",
        "_max_connections",
        "_models_url",
        "_session",
        "_timeout",
        "_url",
        "base_url",
        "endpoint",
        "request_timeout",
    )

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        request_timeout: float = 600.0,
        max_connections: int = 1024,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        base_url = base_url.strip().rstrip("/")
        url = URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"base_url must be an http(s) URL, got {base_url!r}")
        if url.user is not None or url.password is not None:
            raise ConfigError("base_url must not carry credentials; pass api_key instead")
        if request_timeout <= 0:
            raise ConfigError(f"request_timeout must be positive, got {request_timeout}")
        if max_connections < 1:
            raise ConfigError(f"max_connections must be at least 1, got {max_connections}")
        self.base_url = base_url
        self.endpoint = base_url
        self.request_timeout = request_timeout
        self._max_connections = max_connections
        self._url = URL(f"{base_url}/chat/completions")
        self._models_url = URL(f"{base_url}/models")
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._api_key = api_key or None
        hdrs = {"Content-Type": "application/json", "Accept": "application/json"}
        if headers:
            hdrs.update(headers)
        if self._api_key:
            hdrs["Authorization"] = f"Bearer {self._api_key}"
        self._headers = hdrs
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        key = ", api_key=***" if self._api_key else ""
        return f"{type(self).__name__}(base_url={self.base_url!r}{key})"

    __str__ = __repr__

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections; a later request opens a new session."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        # Created here rather than in __init__ so it binds to the running loop.
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=self._timeout,
            raise_for_status=False,
        )
        return self._session

    async def complete(self, request: ChatRequest) -> Completion:
        """Send one request; raise only ``LLMError`` subclasses."""
        raw = await self._send("POST", self._url, orjson.dumps(request.body()))
        try:
            data = orjson.loads(raw)
            choice = data["choices"][0]
            text = choice["message"]["content"]
            usage = data.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
            finish_reason = choice.get("finish_reason")
        except (orjson.JSONDecodeError, LookupError, TypeError, AttributeError, ValueError):
            raise ServerError(self._malformed(raw), status=200) from None
        if text is None:
            text = ""
        elif not isinstance(text, str):
            raise ServerError(self._malformed(raw), status=200)
        return Completion(text, prompt_tokens, completion_tokens, finish_reason)

    async def list_models(self) -> list[str]:
        """Model ids the server offers (``GET /models``): the default when ``--model`` is omitted."""
        raw = await self._send("GET", self._models_url, None)
        try:
            return [str(m["id"]) for m in orjson.loads(raw)["data"]]
        except (orjson.JSONDecodeError, LookupError, TypeError):
            raise ServerError(self._malformed(raw), status=200) from None

    async def _send(self, method: str, url: URL, data: bytes | None) -> bytes:
        """One HTTP exchange; returns the 2xx body or raises the translated error."""
        session = self._session or self._open()
        try:
            async with session.request(method, url, data=data) as resp:
                raw = await resp.read()
                status = resp.status
                if status < 300:
                    return raw
                retry_after = resp.headers.get("Retry-After") if status == 429 else None
        except TimeoutError:  # before OSError: TimeoutError is one; aiohttp's timeouts subclass it
            raise APITimeoutError(
                f"no answer from {url} within {self.request_timeout:g}s; request cancelled"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise APIConnectionError(
                self._scrub(f"{method} {url} failed: {type(exc).__name__}: {exc}")
            ) from exc
        raise self._http_error(status, raw, url, retry_after)

    def _http_error(self, status: int, raw: bytes, url: URL, retry_after: str | None) -> LLMError:
        message, code = _error_details(raw)
        text = self._scrub(f"HTTP {status} from {url}: {_truncate(message) or '(empty body)'}")
        if status == 429:
            return RateLimitError(text, status=status, retry_after=parse_retry_after(retry_after))
        if status >= 500:
            return ServerError(text, status=status)
        if status in (401, 403):
            return AuthenticationError(text, status=status)
        if status == 404:
            return NotFoundError(text, status=status)
        if status in _BAD_REQUEST_STATUSES:
            lowered = message.lower()
            if code in _CONTEXT_CODES or any(marker in lowered for marker in _CONTEXT_MARKERS):
                return ContextLengthError(text, status=status)
        if status >= 400:
            return BadRequestError(text, status=status)
        # 1xx/3xx: aiohttp follows redirects, so one that remains is a misbehaving server.
        return ServerError(text, status=status)

    def _malformed(self, raw: bytes) -> str:
        snippet = _truncate(raw.decode("utf-8", "replace")) or "(empty body)"
        return self._scrub(f"malformed completion from {self._url}: {snippet}")

    def _scrub(self, text: str) -> str:
        """Mask the key in case a server or proxy echoes it back in an error."""
        key = self._api_key
        return text.replace(key, "***") if key else text
