"""A lean client for any OpenAI-compatible ``/chat/completions`` server (vLLM, llama.cpp, OpenAI ...).

The engine may run thousands of requests per second through one instance, so the request path is
kept short: one pooled HTTP client per backend (``coevol.llm.transport``), bodies encoded and decoded
with ``orjson``, no logging, no retries. Timeouts are on progress (connect, first byte, idle between
reads; ``coevol.llm.timeouts``), with ``request_timeout`` as a cap on the whole exchange. Provider
errors are translated here, once, into ``coevol.errors``; everything above this module only sees
those classes.

The API key travels only in the ``Authorization`` header. It is kept out of ``repr()``, exception
messages and ``endpoint`` (which enters cache keys). A key in the base URL's query string
(``?api-key=...``) is sent as given but masked (``***``) in ``endpoint``, ``base_url`` and every
message; user info (``user:pass@``) is refused. Answer bodies are read up to
``max_answer_bytes``: a server that ignores ``max_tokens`` cannot fill memory, the store or the trace.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Final, Self
from urllib.parse import urlsplit, urlunsplit

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
    ResponseTooLarge,
    ServerError,
    UnusableAnswer,
)
from coevol.llm.aiohttp_transport import AiohttpTransport
from coevol.llm.lean_http import LeanTransport
from coevol.llm.logprobs import parse_chat_logprobs
from coevol.llm.timeouts import (
    DEFAULT_CONNECT,
    DEFAULT_FIRST_BYTE,
    DEFAULT_IDLE,
    DEFAULT_TOTAL,
    Timeouts,
    timeout_message,
)
from coevol.llm.transport import Broken, Stalled, TooLarge, Transport, TransportName
from coevol.llm.types import ChatRequest, Choice, Completion
from coevol.llm.urls import has_userinfo, masked_url, url_secrets

__all__ = ["DEFAULT_TRANSPORT", "TRANSPORTS", "OpenAIHTTPBackend", "choose_transport", "parse_retry_after"]

TRANSPORTS: Final[tuple[TransportName, ...]] = ("auto", "lean", "aiohttp")
DEFAULT_TRANSPORT: TransportName = "auto"
"""The transport when none is given (the transport tests run through each one by setting it)."""

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
DEFAULT_MAX_ANSWER_BYTES: Final = 8 * 1024 * 1024
_PROBE_TIMEOUT: Final = 30.0  # seconds for GET /models checks: a setup check must not stall a run


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


def _choice(choice: Mapping[str, object]) -> Choice:
    """One listed choice; a missing content is an empty answer, a non-text one is malformed."""
    message = choice["message"]
    if not isinstance(message, Mapping):
        raise TypeError("message is not an object")
    text = message["content"]
    if text is None:
        text = ""
    elif not isinstance(text, str):
        raise TypeError("content is not text")
    reason = choice.get("finish_reason")
    return Choice(text, reason if reason is None or isinstance(reason, str) else str(reason))


def _unusable(choice: Mapping[str, object]) -> str | None:
    """Why the first choice holds no text a role can use (issue 17), or None: a retried failure,
    never an empty answer that a role would keep."""
    message = choice["message"]
    if not isinstance(message, Mapping):
        return None  # malformed: ``_choice`` says so
    if message.get("tool_calls"):
        return "tool calls instead of text"
    if "content" in message and message["content"] is None:
        return "content: null (no text)"
    return None


def choose_transport(name: TransportName, scheme: str, *, proxied: bool = False) -> TransportName:
    """The transport a base URL gets: ``auto`` is lean for ``http``, aiohttp for ``https`` (TLS) and
    for a URL the environment sends through a proxy (``HTTP_PROXY``, ``NO_PROXY``), which aiohttp
    honours. ``lean`` always connects directly."""
    if name == "auto":
        return "lean" if scheme == "http" and not proxied else "aiohttp"
    if name == "lean" and scheme != "http":
        raise ConfigError("transport 'lean' speaks plain http only; use 'auto' or 'aiohttp' for https")
    if name not in TRANSPORTS:
        raise ConfigError(f"transport must be one of {', '.join(TRANSPORTS)}, got {name!r}")
    return name


def _proxied(url: URL) -> bool:
    """Whether the environment names a proxy for this URL (the rules aiohttp's ``trust_env`` uses)."""
    proxy = urllib.request.getproxies().get(url.scheme)
    return bool(proxy) and not urllib.request.proxy_bypass(url.raw_host or "")


def _check_header(name: str, value: str) -> None:
    """Refuse a header that would break the request: a key with a line break would smuggle headers
    into it, and HTTP/1.1 carries only Latin-1. The value (a key) is never echoed."""
    text = f"{name}{value}"
    if any(c in text for c in "\r\n\0") or ":" in name or _not_latin1(text):
        raise ConfigError(
            f"header {_truncate(name)!r} has a line break, NUL or a character HTTP cannot carry; refused"
        )


def _not_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return True
    return False


def _join(base_url: str, path: str) -> str:
    """``base_url`` + ``path``, keeping the base URL's query string (where a gateway wants its key)."""
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + path, parts.query, ""))


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

    Bound to the event loop it is first used in (connections are opened lazily there). Use as an
    async context manager or call ``aclose()`` to release pooled connections. The timeouts are on
    progress (``coevol.llm.timeouts``), ``request_timeout`` capping the whole exchange.
    """

    __slots__ = (
        "_api_key",
        "_key_hint",
        "_max_answer_bytes",
        "_models",
        "_models_url",
        "_real_base",
        "_secrets",
        "_timeouts",
        "_transport",
        "_url",
        "base_url",
        "endpoint",
        "request_timeout",
        "transport",
    )

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        request_timeout: float | None = DEFAULT_TOTAL,
        connect_timeout: float = DEFAULT_CONNECT,
        first_byte_timeout: float = DEFAULT_FIRST_BYTE,
        idle_timeout: float = DEFAULT_IDLE,
        max_connections: int = 1024,
        headers: Mapping[str, str] | None = None,
        key_hint: str | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        transport: TransportName | None = None,
    ) -> None:
        base_url = base_url.strip().rstrip("/")
        if has_userinfo(base_url):
            raise ConfigError("base_url must not carry credentials (user:pass@); pass api_key instead")
        shown = masked_url(base_url)
        try:
            url = URL(base_url)
        except ValueError:
            raise ConfigError(f"base_url is not a valid URL: {shown!r}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"base_url must be an http(s) URL, got {shown!r}")
        if max_connections < 1:
            raise ConfigError(f"max_connections must be at least 1, got {max_connections}")
        if max_answer_bytes < 1:
            raise ConfigError(f"max_answer_bytes must be at least 1, got {max_answer_bytes}")
        self._timeouts = Timeouts(connect_timeout, first_byte_timeout, idle_timeout, request_timeout)
        self.base_url = shown  # what may be shown, logged and hashed; the real URL stays private
        self.endpoint = shown
        self.request_timeout = request_timeout
        self._real_base = base_url
        self._secrets = url_secrets(base_url)
        self._key_hint = key_hint
        self._max_answer_bytes = max_answer_bytes
        self._url = URL(_join(base_url, "/chat/completions"))
        self._models_url = URL(_join(base_url, "/models"))
        self._models: list[str] | None = None
        self._api_key = api_key or None
        hdrs = {"Content-Type": "application/json", "Accept": "application/json"}
        if headers:
            hdrs.update(headers)
        if self._api_key:
            hdrs["Authorization"] = f"Bearer {self._api_key}"
        for name, value in hdrs.items():
            _check_header(name, value)
        proxied = _proxied(url)
        self.transport = choose_transport(transport or DEFAULT_TRANSPORT, url.scheme, proxied=proxied)
        self._transport: Transport
        if self.transport == "lean":
            self._transport = LeanTransport(
                url, hdrs, max_connections=max_connections, max_answer_bytes=max_answer_bytes
            )
        else:
            self._transport = AiohttpTransport(
                hdrs,
                max_connections=max_connections,
                max_answer_bytes=max_answer_bytes,
                connect_timeout=connect_timeout,
                proxied=proxied,
            )

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
        """Close the pooled connections; a later request opens new ones."""
        await self._transport.aclose()

    async def complete(self, request: ChatRequest) -> Completion:
        """Send one request; raise only ``LLMError`` subclasses."""
        try:
            raw = await self._send("POST", self._url, orjson.dumps(request.body()))
        except NotFoundError as exc:
            raise await self._explain_not_found(exc, request.model) from None
        try:
            data = orjson.loads(raw)
            listed = data["choices"]
            unusable = _unusable(listed[0])
            usage = data.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
            # The first choice always; the others only when asked for (n > 1), as listed.
            first, *more = [_choice(c) for c in listed[: max(1, request.params.n)]]
            asked = request.params.top_logprobs is not None
            logprobs = parse_chat_logprobs(listed[0].get("logprobs")) if asked else None
        except (orjson.JSONDecodeError, LookupError, TypeError, AttributeError, ValueError):
            raise ServerError(self._malformed(raw), status=200) from None
        if unusable is not None:
            raise UnusableAnswer(f"{self._shown(self._url)} answered {unusable}", status=200)
        return Completion(
            first.text,
            prompt_tokens,
            completion_tokens,
            first.finish_reason,
            more=tuple(more),
            logprobs=logprobs,
        )

    async def list_models(self, *, within: float | None = None) -> list[str]:
        """Model ids the server offers (``GET /models``): the default when ``--model`` is omitted."""
        raw = await self._send("GET", self._models_url, None, within=within)
        try:
            models = [str(m["id"]) for m in orjson.loads(raw)["data"]]
        except (orjson.JSONDecodeError, LookupError, TypeError):
            raise ServerError(self._malformed(raw), status=200) from None
        self._models = models
        return models

    async def fetch_root(self, path: str, *, within: float = _PROBE_TIMEOUT) -> bytes:
        """``GET path`` beside the API rather than under it (``http://h:8080/v1`` -> ``http://h:8080``):
        llama.cpp's ``/props`` and ``/slots``, vLLM's ``/metrics``, where servers say their capacity."""
        parts = urlsplit(self._real_base)
        prefix = parts.path.rstrip("/")
        prefix = prefix.removesuffix("/v1")
        url = urlunsplit((parts.scheme, parts.netloc, prefix + path, parts.query, ""))
        return await self._send("GET", URL(url), None, within=within)

    async def check(self) -> None:
        """Setup check before any work: the key is accepted and the base URL is right.

        ``GET /models`` answers 401 for a refused key: raised, with where the key came from (a 403
        may only mean the key cannot list models, and is let pass). A 404 while
        ``{base_url}/v1/models`` answers means the base URL lacks ``/v1``. A server that is down,
        slow or has no ``/models`` is not refused here: the run's own retries and error messages
        deal with it. A model missing from the list is not refused either (the llama.cpp server
        and Ollama accept names they do not list); its first 404 lists them.
        """
        try:
            await self.list_models(within=_PROBE_TIMEOUT)
        except NotFoundError:
            hint = await self._missing_v1_hint()
            if hint:
                raise ConfigError(hint) from None
        except AuthenticationError as exc:
            if exc.status != 403:  # 403: a key allowed to chat but not to list models (OpenAI scopes)
                raise
        except (ServerError, APIConnectionError, APITimeoutError, BadRequestError, RateLimitError):
            return

    async def _explain_not_found(self, exc: NotFoundError, model: str) -> NotFoundError:
        """A 404 on ``/chat/completions`` with the advice that fixes it: the models on offer, or ``/v1``."""
        try:
            offered = self._models
            if offered is None:
                offered = await self.list_models(within=_PROBE_TIMEOUT)
        except NotFoundError:
            hint = await self._missing_v1_hint()
            return NotFoundError(f"{exc}; {hint}" if hint else str(exc), status=exc.status)
        except LLMError:
            return exc
        if model in offered:
            return exc
        listed = ", ".join(repr(m) for m in offered[:20]) or "none"
        more = f" and {len(offered) - 20} more" if len(offered) > 20 else ""
        return NotFoundError(
            f"{exc}; model {model!r} is not served there; the server offers: {listed}{more}",
            status=exc.status,
        )

    async def _missing_v1_hint(self) -> str | None:
        """The advice when ``base_url`` lacks ``/v1`` and ``{base_url}/v1/models`` answers."""
        if urlsplit(self._real_base).path.rstrip("/").endswith("/v1"):
            return None
        try:
            await self._send("GET", URL(_join(self._real_base, "/v1/models")), None, within=_PROBE_TIMEOUT)
        except LLMError:
            return None
        return f"base_url {self.base_url} is missing /v1: the server answers at {self.base_url}/v1"

    async def _send(self, method: str, url: URL, data: bytes | None, *, within: float | None = None) -> bytes:
        """One HTTP exchange (no phase longer than ``within`` seconds if given); the 2xx body or raises.

        The masked URL for messages is only built on an error path: a success costs no string work.
        """
        timeouts = self._timeouts if within is None else self._timeouts.within(within)
        try:
            answer = await self._transport.exchange(method, url, data, timeouts)
        except Stalled as exc:
            message = timeout_message(exc.phase, self._shown(url), exc.seconds)
            raise APITimeoutError(self._scrub(message), phase=exc.phase) from None
        except Broken as exc:
            raise APIConnectionError(self._scrub(f"{method} {self._shown(url)} failed: {exc}")) from None
        except TooLarge:
            raise self._too_large(url) from None
        if answer.status < 300:
            return answer.body
        raise self._http_error(answer.status, answer.body, self._shown(url), answer.header)

    def _too_large(self, url: URL) -> ResponseTooLarge:
        return ResponseTooLarge(
            f"the answer from {self._shown(url)} is larger than {self._max_answer_bytes:,} bytes "
            "(max_answer_bytes); a server that ignores max_tokens? nothing of it was kept"
        )

    def _http_error(self, status: int, raw: bytes, shown: str, header: str | None) -> LLMError:
        """The error for a non-2xx answer; ``header`` is its Retry-After (429) or Location (3xx)."""
        message, code = _error_details(raw)
        text = self._scrub(f"HTTP {status} from {shown}: {_truncate(message) or '(empty body)'}")
        if status == 429:
            return RateLimitError(text, status=status, retry_after=parse_retry_after(header))
        if status >= 500:
            return ServerError(text, status=status)
        if status in (401, 403):
            hint = f" ({self._key_hint})" if self._key_hint else ""
            return AuthenticationError(text + hint, status=status)
        if status == 404:
            return NotFoundError(text, status=status)
        if status in _BAD_REQUEST_STATUSES:
            lowered = message.lower()
            if code in _CONTEXT_CODES or any(marker in lowered for marker in _CONTEXT_MARKERS):
                return ContextLengthError(text, status=status)
        if status >= 400:
            return BadRequestError(text, status=status)
        if 300 <= status < 400:
            where = masked_url(header) if header else "elsewhere"
            return NotFoundError(
                self._scrub(
                    f"HTTP {status} from {shown}: the server redirects to {where}; redirects are not "
                    "followed (the key would go along): use the final URL as base_url"
                ),
                status=status,
            )
        return ServerError(text, status=status)  # 1xx: a misbehaving server

    def _shown(self, url: URL) -> str:
        return masked_url(str(url))

    def _malformed(self, raw: bytes) -> str:
        snippet = _truncate(raw.decode("utf-8", "replace")) or "(empty body)"
        return self._scrub(f"malformed completion from {self._shown(self._url)}: {snippet}")

    def _scrub(self, text: str) -> str:
        """Mask the key and any URL secret in case a server, proxy or library echoes them back."""
        key = self._api_key
        if key:
            text = text.replace(key, "***")
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
