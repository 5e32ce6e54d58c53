"""OpenAIHTTPBackend against real HTTP peers on loopback: the fake server, or a canned aiohttp app."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from email.utils import formatdate
from typing import Any

import orjson
import pytest
from aiohttp import web

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
from coevol.llm.openai_http import OpenAIHTTPBackend, parse_retry_after
from coevol.llm.types import ChatRequest, GenParams
from coevol.testing import FakeOpenAIServer, Fault, FaultKind, Reply, always

# Transport behaviour: every test runs through each HTTP client.
pytestmark = pytest.mark.usefixtures("http_transport")

SECRET = "sk-test-NEVER-LEAK-7f3a9c2e51"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_request(endpoint: str, text: str = "Rewrite: tell me a joke", **params: Any) -> ChatRequest:
    return ChatRequest(
        endpoint=endpoint,
        model="fake-model",
        messages=({"role": "system", "content": "be brief"}, {"role": "user", "content": text}),
        params=GenParams(**params),
    )


@asynccontextmanager
async def canned(handler: Handler) -> AsyncIterator[str]:
    """A one-route server answering /v1/chat/completions and /v1/models with ``handler``."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    app.router.add_get("/v1/models", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


def reply_with(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=raw, headers=headers, content_type="application/json")

    return handler


async def call(base_url: str, **kwargs: Any) -> Any:
    async with OpenAIHTTPBackend(base_url, **kwargs) as backend:
        return await backend.complete(make_request(backend.endpoint))


async def failure(base_url: str, **kwargs: Any) -> LLMError:
    with pytest.raises(LLMError) as info:
        await call(base_url, **kwargs)
    return info.value


# --- success path ---------------------------------------------------------------------------------


async def test_success_returns_text_usage_and_sends_the_body() -> None:
    reply = Reply("hello there", prompt_tokens=11, completion_tokens=2, finish_reason="length")
    async with (
        FakeOpenAIServer(lambda body: reply) as server,
        OpenAIHTTPBackend(server.base_url) as backend,
    ):
        request = make_request(backend.endpoint, max_tokens=77, temperature=0.7, top_p=0.9, seed=3)
        completion = await backend.complete(request)

    assert completion.text == "hello there"
    assert (completion.prompt_tokens, completion.completion_tokens) == (11, 2)
    assert completion.finish_reason == "length"
    assert not completion.cached
    [seen] = server.requests
    assert seen.body == request.body()
    assert seen.body["model"] == "fake-model"
    assert seen.body["messages"][1] == {"role": "user", "content": "Rewrite: tell me a joke"}
    assert (seen.body["max_tokens"], seen.body["temperature"], seen.body["top_p"]) == (77, 0.7, 0.9)
    assert seen.content_type == "application/json"
    assert not seen.has_auth


async def test_api_key_is_sent_as_bearer_token() -> None:
    async with FakeOpenAIServer(api_key=SECRET) as server:
        completion = await call(server.base_url, api_key=SECRET)
        assert completion.text == "ok"
        assert server.requests[-1].has_auth
        with pytest.raises(AuthenticationError):
            await call(server.base_url)
        with pytest.raises(AuthenticationError):
            await call(server.base_url, api_key="sk-wrong")


async def test_missing_usage_defaults_to_zero() -> None:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": ""}}]}
    async with canned(reply_with(200, body)) as url:
        completion = await call(url)
    assert completion.text == ""
    assert (completion.prompt_tokens, completion.completion_tokens) == (0, 0)
    assert completion.finish_reason is None


@pytest.mark.parametrize(
    ("message", "said"),
    [
        ({"role": "assistant", "content": None}, "content: null"),
        (
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function"}]},
            "tool calls instead of text",
        ),
        ({"role": "assistant", "content": "I'll look.", "tool_calls": [{"id": "c"}]}, "tool calls"),
    ],
)
async def test_null_content_or_tool_calls_is_an_unusable_answer(message: dict[str, Any], said: str) -> None:
    """Issue 17 (was: content null read as an empty text, which a role then kept): a retryable
    ``UnusableAnswer``, so the caller asks again and finally fails the sample with the reason."""
    from coevol.errors import RetryableError, UnusableAnswer

    async with canned(reply_with(200, {"choices": [{"index": 0, "message": message}]})) as url:
        error = await failure(url)
    assert isinstance(error, UnusableAnswer) and isinstance(error, RetryableError)
    assert said in str(error) and url in str(error)


async def test_base_url_trailing_slash_and_endpoint_without_key() -> None:
    async with FakeOpenAIServer() as server:
        backend = OpenAIHTTPBackend(server.base_url + "/", api_key=SECRET)
        async with backend:
            assert backend.endpoint == server.base_url
            assert SECRET not in backend.endpoint
            assert (await backend.complete(make_request(backend.endpoint))).text == "ok"
            assert await backend.list_models() == ["fake-model"]


async def test_session_is_reopened_after_aclose() -> None:
    async with FakeOpenAIServer() as server:
        backend = OpenAIHTTPBackend(server.base_url)
        await backend.complete(make_request(backend.endpoint))
        await backend.aclose()
        await backend.aclose()  # idempotent
        assert (await backend.complete(make_request(backend.endpoint))).text == "ok"
        await backend.aclose()
    assert len(server.requests) == 2


@pytest.mark.parametrize("url", ["127.0.0.1:8000/v1", "ftp://host/v1", "http:///v1", "http://u:pw@h/v1"])
def test_invalid_base_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        OpenAIHTTPBackend(url)


# --- error translation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected", "status"),
    [
        (FaultKind.RATE_LIMIT, RateLimitError, 429),
        (FaultKind.SERVER_ERROR, ServerError, 500),
        (FaultKind.DISCONNECT, APIConnectionError, None),
        (FaultKind.GARBAGE, ServerError, 200),
        (FaultKind.BAD_REQUEST, BadRequestError, 400),
        (FaultKind.AUTH, AuthenticationError, 401),
        (FaultKind.CONTEXT_LENGTH, ContextLengthError, 400),
    ],
)
async def test_fault_kinds_map_to_exception_classes(
    kind: FaultKind, expected: type[LLMError], status: int | None
) -> None:
    async with FakeOpenAIServer(faults=always(Fault(kind, retry_after=0.05))) as server:
        exc = await failure(server.base_url, api_key=SECRET)
    assert type(exc) is expected
    assert exc.status == status
    assert exc.retryable == (expected in (RateLimitError, ServerError, APIConnectionError))
    if status is not None and status >= 400:
        assert str(status) in str(exc)
    if isinstance(exc, RateLimitError):
        assert exc.retry_after == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [
        ("7", 7.0, 7.0),
        ("0.25", 0.25, 0.25),
        ("HTTP-DATE+30", 27.0, 31.0),
        ("soon", None, None),
        (None, None, None),
    ],
)
async def test_rate_limit_retry_after_is_parsed(
    header: str | None, low: float | None, high: float | None
) -> None:
    if header == "HTTP-DATE+30":
        header = formatdate(time.time() + 30, usegmt=True)
    async with FakeOpenAIServer(faults=always(Fault(FaultKind.RATE_LIMIT, retry_after=header))) as server:
        exc = await failure(server.base_url)
    assert isinstance(exc, RateLimitError)
    if low is None:
        assert exc.retry_after is None
    else:
        assert exc.retry_after is not None
        assert low <= exc.retry_after <= (high or low)


def test_parse_retry_after_edge_cases() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 3 ") == 3.0
    assert parse_retry_after("-1") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("inf") is None
    assert parse_retry_after("") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: go now
    now = 1_445_412_480.0  # 2015-10-21 07:28:00 UTC
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=now) == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (403, {"error": {"message": "forbidden"}}, AuthenticationError),
        (404, {"detail": "Not Found"}, NotFoundError),
        (413, b"<html>Request Entity Too Large</html>", BadRequestError),
        (422, {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]}, BadRequestError),
        (418, {"error": "teapot"}, BadRequestError),
        (503, b"upstream unavailable", ServerError),
        (502, b"", ServerError),
        # vLLM (older shape, fields at top level, no code)
        (
            400,
            {
                "object": "error",
                "message": "This model's maximum context length is 4096 tokens. However, you requested 5000",
                "type": "BadRequestError",
                "code": 400,
            },
            ContextLengthError,
        ),
        # llama.cpp server
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "the request exceeds the available context size, try increasing it",
                    "type": "exceed_context_size_error",
                }
            },
            ContextLengthError,
        ),
        (413, {"error": {"message": "too long", "code": "context_length_exceeded"}}, ContextLengthError),
        (
            422,
            {"error": {"message": "prompt is too long for the model's context window"}},
            ContextLengthError,
        ),
        (400, {"error": {"message": "temperature must be >= 0", "code": "invalid_value"}}, BadRequestError),
    ],
)
async def test_http_statuses_map_to_exception_classes(
    status: int, body: Any, expected: type[LLMError]
) -> None:
    async with canned(reply_with(status, body)) as url:
        exc = await failure(url)
    assert type(exc) is expected
    assert exc.status == status
    assert f"HTTP {status}" in str(exc)


async def test_error_message_carries_server_message_truncated() -> None:
    long_message = "quota exhausted " + "x" * 5000
    async with canned(reply_with(400, {"error": {"message": long_message}})) as url:
        exc = await failure(url)
    assert "quota exhausted" in str(exc)
    assert len(str(exc)) < 500


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        orjson.dumps({"object": "chat.completion", "choices": []}),
        orjson.dumps({"choices": [{"index": 0}]}),
        orjson.dumps({"choices": [{"message": {"content": ["a", "list"]}}]}),
        orjson.dumps({"error": {"message": "proxy says 200 but failed"}}),
        orjson.dumps(["choices"]),
    ],
)
async def test_malformed_200_is_a_retryable_server_error(body: bytes) -> None:
    async with canned(reply_with(200, body)) as url:
        exc = await failure(url)
    assert type(exc) is ServerError
    assert exc.retryable


async def test_connection_refused_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exc = await failure(f"http://127.0.0.1:{port}/v1", api_key=SECRET)
    assert type(exc) is APIConnectionError
    assert SECRET not in str(exc)


async def test_hanging_server_times_out_promptly_and_request_is_cancelled() -> None:
    async with FakeOpenAIServer(faults=always(Fault(FaultKind.HANG, hang_seconds=5.0))) as server:
        started = time.monotonic()
        exc = await failure(server.base_url, request_timeout=0.2)
        elapsed = time.monotonic() - started
        assert type(exc) is APITimeoutError
        assert exc.retryable
        assert elapsed >= 0.15  # it waited for the timeout; the hang itself (5 s) never answered
        # the client closed the connection, so the server cancelled the hanging handler
        for _ in range(50):
            if server.stats()["in_flight"] == 0:
                break
            await asyncio.sleep(0.01)
        assert server.stats()["in_flight"] == 0
        assert server.requests[0].end is None


# --- the key never leaks --------------------------------------------------------------------------


def test_repr_and_str_hide_the_key() -> None:
    backend = OpenAIHTTPBackend("http://127.0.0.1:9/v1", api_key=SECRET)
    for text in (repr(backend), str(backend), f"{backend}", repr([backend])):
        assert SECRET not in text
        assert "api_key=***" in text
        assert "http://127.0.0.1:9/v1" in text
    assert "***" not in repr(OpenAIHTTPBackend("http://127.0.0.1:9/v1"))


_ANSWERS = {FaultKind.EMPTY, FaultKind.TRUNCATED}  # they parse: answers, not errors


@pytest.mark.parametrize("kind", [k for k in FaultKind if k not in _ANSWERS])
async def test_key_absent_from_every_fault_error(kind: FaultKind) -> None:
    fault = Fault(kind, hang_seconds=2.0, message=f"echo {SECRET}")
    async with FakeOpenAIServer(faults=always(fault)) as server:
        exc = await failure(server.base_url, api_key=SECRET, request_timeout=0.2)
    for text in (str(exc), repr(exc), str(exc.args)):
        assert SECRET not in text


async def test_key_echoed_by_server_is_scrubbed() -> None:
    async def echo_auth(request: web.Request) -> web.Response:
        message = f"bad credentials: {request.headers.get('Authorization')}"
        return web.json_response({"error": {"message": message}}, status=401)

    async with canned(echo_auth) as url:
        exc = await failure(url, api_key=SECRET)
    assert type(exc) is AuthenticationError
    assert "bad credentials: Bearer ***" in str(exc)
    assert SECRET not in str(exc)
