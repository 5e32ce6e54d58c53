"""A small client for OpenAI's Files and Batches endpoints, and the pure codec of their JSONL files.

``BatchAPI`` uploads an input file (``POST /files``, multipart, ``purpose=batch``), creates a batch
(``POST /batches``), polls it (``GET /batches/{id}``), finds a batch by its input file after a
crash (``GET /batches``), cancels it and downloads its output and error files
(``GET /files/{id}/content``). Errors are translated here, once, into ``coevol.errors``; the key
travels only in the ``Authorization`` header and is masked in every message.

``input_line`` and ``parse_result_line`` are pure: one request as a line of the input file, and
one line of an output or error file as a ``Completion`` or the ``LLMError`` the online call would
have raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

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
)
from coevol.llm.types import ChatRequest, Choice, Completion
from coevol.llm.urls import masked_url, url_secrets

__all__ = [
    "CHAT_PATH",
    "TERMINAL",
    "BatchAPI",
    "BatchInfo",
    "input_line",
    "parse_result_line",
]

CHAT_PATH: Final = "/v1/chat/completions"
TERMINAL: Final = frozenset({"completed", "failed", "expired", "cancelled"})
_MAX_MESSAGE: Final = 300
_MAX_ERROR_BODY: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """The fields of a batch object coevol reads; ``errors`` are the provider's, one per line."""

    id: str
    status: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    input_file_id: str | None = None
    expires_at: float | None = None
    errors: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> BatchInfo:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise ServerError(f"not a batch object: {_short(repr(data))}", status=200)
        counts = data.get("request_counts") or {}
        errors = (data.get("errors") or {}).get("data") if isinstance(data.get("errors"), dict) else None
        expires = data.get("expires_at")
        return cls(
            id=data["id"],
            status=str(data.get("status")),
            total=_int(counts.get("total")),
            completed=_int(counts.get("completed")),
            failed=_int(counts.get("failed")),
            output_file_id=_str(data.get("output_file_id")),
            error_file_id=_str(data.get("error_file_id")),
            input_file_id=_str(data.get("input_file_id")),
            expires_at=float(expires) if isinstance(expires, int | float) else None,
            errors=tuple(_describe_error(e) for e in errors or () if isinstance(e, dict)),
        )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _describe_error(error: dict[str, Any]) -> str:
    """``code: message (line N)`` for one entry of a failed batch's ``errors.data``."""
    code, message, line = error.get("code"), error.get("message"), error.get("line")
    text = f"{code}: {message}" if code else str(message)
    return _short(text + (f" (line {line})" if isinstance(line, int) else ""))


def input_line(custom_id: str, request: ChatRequest) -> bytes:
    """One line of a batch input file: the body the online call would POST."""
    line = {"custom_id": custom_id, "method": "POST", "url": CHAT_PATH, "body": request.body()}
    return orjson.dumps(line) + b"\n"


def parse_result_line(raw: bytes) -> tuple[str, Completion | LLMError]:
    """One output or error line: its ``custom_id`` and the answer, or the call's error.

    Raises ``ServerError`` for a line that has no usable ``custom_id`` (nothing to match it to).
    """
    try:
        line = orjson.loads(raw)
        cid = line["custom_id"]
    except (orjson.JSONDecodeError, LookupError, TypeError):
        raise ServerError(f"malformed batch result line: {_short(raw.decode('utf-8', 'replace'))}") from None
    if not isinstance(cid, str):
        raise ServerError(f"malformed batch result line: {_short(raw.decode('utf-8', 'replace'))}")
    error = line.get("error")
    response = line.get("response")
    if isinstance(error, dict) or not isinstance(response, dict):
        what = _describe_error(error) if isinstance(error, dict) else "no response"
        return cid, ServerError(f"batch line {cid}: {what}")
    status = response.get("status_code")
    body = response.get("body")
    if status != 200:
        return cid, _line_error(cid, status, body)
    return cid, _completion(cid, body)


def _line_error(cid: str, status: Any, body: Any) -> LLMError:
    err = body.get("error") if isinstance(body, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    text = _short(f"batch line {cid}: HTTP {status}: {message or '(no message)'}")
    status_i = status if isinstance(status, int) else None
    if status_i == 429:
        return RateLimitError(text, status=429)
    if status_i is None or status_i >= 500:
        return ServerError(text, status=status_i)
    if code == "context_length_exceeded" or "context length" in str(message).lower():
        return ContextLengthError(text, status=status_i)
    if status_i in (401, 403):
        return AuthenticationError(text, status=status_i)
    if status_i == 404:
        return NotFoundError(text, status=status_i)
    return BadRequestError(text, status=status_i)


def _choice(choice: Any) -> Choice:
    """One listed choice; a missing content is an empty answer, a non-text one is malformed."""
    text = choice["message"]["content"]
    if text is None:
        text = ""
    elif not isinstance(text, str):
        raise TypeError("content is not text")
    reason = choice.get("finish_reason")
    return Choice(text, reason if reason is None or isinstance(reason, str) else str(reason))


def _completion(cid: str, body: Any) -> Completion | LLMError:
    """The line's completion: every choice it lists (the body asked for ``n`` of them)."""
    try:
        usage = body.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        first, *more = [_choice(c) for c in body["choices"]]
    except (LookupError, TypeError, AttributeError, ValueError):
        return ServerError(f"batch line {cid}: malformed completion: {_short(repr(body))}", status=200)
    return Completion(first.text, prompt_tokens, completion_tokens, first.finish_reason, more=tuple(more))


def _join(base_url: str, path: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + path, parts.query, ""))


class BatchAPI:
    """The Files and Batches endpoints of one OpenAI-compatible server (``base_url`` ends in /v1)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        key_hint: str = "",
        timeout: float = 300.0,
        max_file_bytes: int = 1024 * 1024 * 1024,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._key_hint = key_hint
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_file_bytes = max_file_bytes
        self._secrets = [s for s in [api_key, *url_secrets(base_url)] if s]
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"BatchAPI({masked_url(self.base_url)!r})"

    def _open(self) -> aiohttp.ClientSession:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._session = aiohttp.ClientSession(headers=headers, timeout=self._timeout)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def upload(self, content: bytes, filename: str) -> str:
        """Upload a batch input file; returns its id."""
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", content, filename=filename, content_type="application/jsonl")
        data = await self._json("POST", "/files", form)
        file_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(file_id, str):
            raise ServerError(f"the file upload to {self._shown('/files')} returned no id", status=200)
        return file_id

    async def create(self, input_file_id: str) -> BatchInfo:
        body = {"input_file_id": input_file_id, "endpoint": CHAT_PATH, "completion_window": "24h"}
        return BatchInfo.from_json(await self._json("POST", "/batches", orjson.dumps(body)))

    async def retrieve(self, batch_id: str) -> BatchInfo:
        return BatchInfo.from_json(await self._json("GET", f"/batches/{batch_id}", None))

    async def cancel(self, batch_id: str) -> BatchInfo:
        return BatchInfo.from_json(await self._json("POST", f"/batches/{batch_id}/cancel", None))

    async def find(self, input_file_id: str) -> BatchInfo | None:
        """The batch created from ``input_file_id`` among the most recent ones, if any."""
        data = await self._json("GET", "/batches?limit=100", None)
        items = data.get("data") if isinstance(data, dict) else None
        for item in items or ():
            if isinstance(item, dict) and item.get("input_file_id") == input_file_id:
                return BatchInfo.from_json(item)
        return None

    async def probe(self) -> None:
        """Refuse, before any work, a server without the Batch API (a plain vLLM server, say)."""
        try:
            await self._request("GET", "/batches?limit=1", None)
        except NotFoundError:
            raise ConfigError(
                f"{masked_url(self.base_url)} does not offer the Batch API (GET /batches answered 404): "
                "run without --batch, or put a gateway that offers it in front of the server"
            ) from None
        except (ServerError, APIConnectionError, APITimeoutError, RateLimitError):
            return  # down or busy now: the run's own retries deal with it

    async def content(self, file_id: str) -> bytes:
        return await self._request("GET", f"/files/{file_id}/content", None)

    async def _json(self, method: str, path: str, data: Any) -> Any:
        raw = await self._request(method, path, data)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ServerError(
                self._scrub(f"not JSON from {self._shown(path)}: {_short(raw.decode('utf-8', 'replace'))}"),
                status=200,
            ) from None

    async def _request(self, method: str, path: str, data: Any) -> bytes:
        session = self._session or self._open()
        url = _join(self.base_url, path)
        headers = {"Content-Type": "application/json"} if isinstance(data, bytes) else None
        try:
            async with session.request(
                method, url, data=data, headers=headers, allow_redirects=False
            ) as resp:
                if resp.status < 300:
                    return await self._read(resp, path)
                raw = await resp.content.read(_MAX_ERROR_BODY)
                status = resp.status
        except TimeoutError:
            raise APITimeoutError(f"no answer from {self._shown(path)} in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise APIConnectionError(
                self._scrub(f"{method} {self._shown(path)} failed: {type(exc).__name__}: {exc}")
            ) from None
        raise self._http_error(status, raw, path)

    async def _read(self, resp: aiohttp.ClientResponse, path: str) -> bytes:
        chunks, size = [], 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_file_bytes:
                raise ResponseTooLarge(f"{self._shown(path)} sent more than {self._max_file_bytes:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _http_error(self, status: int, raw: bytes, path: str) -> LLMError:
        try:
            data = orjson.loads(raw)
            err = data.get("error", data) if isinstance(data, dict) else data
            message = err.get("message") if isinstance(err, dict) else str(err)
        except orjson.JSONDecodeError:
            message = raw.decode("utf-8", "replace")
        text = self._scrub(
            f"HTTP {status} from {self._shown(path)}: {_short(str(message or '')) or '(empty body)'}"
        )
        if status == 429:
            return RateLimitError(text, status=status)
        if status >= 500:
            return ServerError(text, status=status)
        if status in (401, 403):
            return AuthenticationError(
                text + (f" ({self._key_hint})" if self._key_hint else ""), status=status
            )
        if status in (404, 405):
            return NotFoundError(
                text + "; does this server offer the Batch API (/v1/files, /v1/batches)? run without --batch",
                status=status,
            )
        return BadRequestError(text, status=status)

    def _shown(self, path: str) -> str:
        return masked_url(_join(self.base_url, path.split("?")[0]))

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
