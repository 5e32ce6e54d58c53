"""The lean HTTP/1.1 transport against real loopback peers: keep-alive, the pool, framing, hostile bytes.

Raw-socket peers send exactly the bytes a test needs (no Content-Length, 1xx, garbage, a byte too
many), so framing is tested as the wire has it; where both transports should agree, both run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import orjson
import pytest
from aiohttp import web

from coevol.config import Config
from coevol.errors import APIConnectionError, ConfigError, ResponseTooLarge, ServerError
from coevol.llm import lean_http
from coevol.llm.openai_http import OpenAIHTTPBackend, choose_transport
from coevol.llm.transport import TransportName
from coevol.llm.types import ChatRequest, GenParams
from coevol.testing import FakeOpenAIServer, ThreadedServer

MSGS = ({"role": "user", "content": "hi"},)
OK = orjson.dumps({"choices": [{"message": {"content": "fine"}, "finish_reason": "stop"}]})

Raw = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def request(backend: OpenAIHTTPBackend) -> ChatRequest:
    return ChatRequest(backend.endpoint, "m", MSGS, GenParams(max_tokens=8))


async def ask(backend: OpenAIHTTPBackend) -> str:
    return (await backend.complete(request(backend))).text


@asynccontextmanager
async def peers(keepalive: float = 75.0, close: bool = False) -> AsyncIterator[tuple[str, list[int]]]:
    """An aiohttp server that records each request's client port (one port per connection)."""
    ports: list[int] = []

    async def chat(req: web.Request) -> web.Response:
        assert req.transport is not None
        ports.append(req.transport.get_extra_info("peername")[1])
        await asyncio.sleep(0.02)
        headers = {"Connection": "close"} if close else None
        return web.Response(body=OK, content_type="application/json", headers=headers)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=keepalive, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1", ports
    finally:
        await runner.cleanup()


@asynccontextmanager
async def raw_peer(handler: Raw) -> AsyncIterator[str]:
    """A TCP peer that reads one request head and body, then runs ``handler`` to answer it."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        await reader.readexactly(length)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    finally:
        server.close()


def sends(*parts: bytes, delay: float = 0.0) -> Raw:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()
            if delay:
                await asyncio.sleep(delay)

    return handler


# --- which transport ----------------------------------------------------------------------------


def test_auto_is_lean_for_http_and_aiohttp_for_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_proxy_env(monkeypatch)
    assert choose_transport("auto", "http") == "lean"
    assert choose_transport("auto", "https") == "aiohttp"
    assert choose_transport("aiohttp", "http") == "aiohttp"
    assert choose_transport("auto", "http", proxied=True) == "aiohttp"
    assert choose_transport("lean", "http", proxied=True) == "lean"
    with pytest.raises(ConfigError, match="plain http only"):
        choose_transport("lean", "https")
    assert OpenAIHTTPBackend("http://127.0.0.1:9/v1").transport == "lean"
    assert OpenAIHTTPBackend("https://api.example/v1").transport == "aiohttp"
    assert OpenAIHTTPBackend("http://127.0.0.1:9/v1", transport="aiohttp").transport == "aiohttp"
    assert Config(transport="aiohttp").transport == "aiohttp"
    with pytest.raises(ConfigError):
        Config.from_mapping({"transport": "curl"})


def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "no_proxy",
        "NO_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


async def test_a_proxy_in_the_environment_sends_auto_through_aiohttp_and_the_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_proxy_env(monkeypatch)
    async with FakeOpenAIServer() as proxy:  # it answers what it is sent: enough to see it was used
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        backend = OpenAIHTTPBackend("http://upstream.invalid:9/v1")
        assert backend.transport == "aiohttp"
        async with backend:
            assert await ask(backend) == "ok"
        assert len(proxy.requests) == 1
        monkeypatch.setenv("NO_PROXY", "upstream.invalid")
        assert OpenAIHTTPBackend("http://upstream.invalid:9/v1").transport == "lean"


@pytest.mark.parametrize("key", ["sk-x\r\nX-Evil: 1", "sk-x\nHost: evil", "sk-x\x00", "sk-x\u2028z"])
@pytest.mark.parametrize("transport", ["lean", "aiohttp"])
def test_a_key_with_a_line_break_cannot_smuggle_headers(key: str, transport: TransportName) -> None:
    with pytest.raises(ConfigError) as info:
        OpenAIHTTPBackend("http://127.0.0.1:9/v1", api_key=key, transport=transport)
    assert "sk-x" not in str(info.value) and "Authorization" in str(info.value)


# --- keep-alive and the pool --------------------------------------------------------------------


async def test_sequential_requests_reuse_one_connection() -> None:
    async with peers() as (url, ports), OpenAIHTTPBackend(url, transport="lean") as backend:
        for _ in range(5):
            assert await ask(backend) == "fine"
    assert len(ports) == 5 and len(set(ports)) == 1


async def test_the_pool_never_opens_more_than_max_connections() -> None:
    async with (
        FakeOpenAIServer(latency=0.05) as server,
        OpenAIHTTPBackend(server.base_url, transport="lean", max_connections=2) as backend,
    ):
        texts = await asyncio.gather(*(ask(backend) for _ in range(10)))
        assert texts == ["ok"] * 10
        assert server.stats()["max_in_flight"] == 2


async def test_a_connection_the_server_closed_while_idle_is_not_used_and_nothing_fails() -> None:
    async with peers(keepalive=0.1) as (url, ports), OpenAIHTTPBackend(url, transport="lean") as backend:
        assert await ask(backend) == "fine"
        await asyncio.sleep(0.5)  # the server closes the idle connection meanwhile
        assert await ask(backend) == "fine"
    assert len(set(ports)) == 2


async def test_an_idle_connection_past_its_expiry_is_not_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lean_http, "KEEPALIVE_EXPIRY", 0.0)
    async with peers() as (url, ports), OpenAIHTTPBackend(url, transport="lean") as backend:
        for _ in range(3):
            assert await ask(backend) == "fine"
    assert len(set(ports)) == 3


async def test_connection_close_is_obeyed() -> None:
    async with peers(close=True) as (url, ports), OpenAIHTTPBackend(url, transport="lean") as backend:
        for _ in range(3):
            assert await ask(backend) == "fine"
    assert len(set(ports)) == 3


async def test_a_cancelled_request_closes_its_connection_and_the_next_one_works() -> None:
    async with (
        FakeOpenAIServer(latency=5.0) as server,
        OpenAIHTTPBackend(server.base_url, transport="lean", max_connections=1) as backend,
    ):
        task = asyncio.create_task(ask(backend))
        for _ in range(200):
            if server.stats()["in_flight"]:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):  # the closed connection cancelled the server's handler
            if not server.stats()["in_flight"]:
                break
            await asyncio.sleep(0.01)
        assert server.stats()["in_flight"] == 0
        server.latency = 0.0
        assert await ask(backend) == "ok"  # the pool's one slot was given back


async def test_a_backend_used_after_aclose_opens_a_new_pool() -> None:
    async with peers() as (url, ports):
        backend = OpenAIHTTPBackend(url, transport="lean")
        assert await ask(backend) == "fine"
        await backend.aclose()
        assert await ask(backend) == "fine"
        await backend.aclose()
    assert len(set(ports)) == 2


# --- framing, from raw bytes --------------------------------------------------------------------


def _head(extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra


@pytest.mark.parametrize("transport", ["lean", "aiohttp"])
async def test_a_body_without_length_or_chunks_ends_with_the_connection(transport: TransportName) -> None:
    async with (
        raw_peer(sends(_head(b"Connection: close\r\n\r\n"), OK)) as url,
        OpenAIHTTPBackend(url, transport=transport) as backend,
    ):
        assert await ask(backend) == "fine"


@pytest.mark.parametrize("transport", ["lean", "aiohttp"])
async def test_a_chunked_body_in_tiny_pieces_is_put_back_together(transport: TransportName) -> None:
    chunks = [b"%x\r\n%s\r\n" % (len(OK[i : i + 3]), OK[i : i + 3]) for i in range(0, len(OK), 3)]
    parts = [_head(b"Transfer-Encoding: chunked\r\n\r\n"), *chunks, b"0\r\n\r\n"]
    async with (
        raw_peer(sends(*parts, delay=0.001)) as url,
        OpenAIHTTPBackend(url, transport=transport) as backend,
    ):
        assert await ask(backend) == "fine"


@pytest.mark.parametrize("transport", ["lean", "aiohttp"])
async def test_an_interim_100_continue_is_skipped(transport: TransportName) -> None:
    answer = _head(b"Content-Length: %d\r\n\r\n" % len(OK)) + OK
    async with (
        raw_peer(sends(b"HTTP/1.1 100 Continue\r\n\r\n" + answer)) as url,
        OpenAIHTTPBackend(url, transport=transport) as backend,
    ):
        assert await ask(backend) == "fine"


@pytest.mark.parametrize("transport", ["lean", "aiohttp"])
@pytest.mark.parametrize(
    "garbage",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello",
    ],
)
async def test_bytes_that_are_not_http_are_a_connection_error(
    transport: TransportName, garbage: bytes
) -> None:
    async with raw_peer(sends(garbage)) as url, OpenAIHTTPBackend(url, transport=transport) as backend:
        with pytest.raises(APIConnectionError):
            await ask(backend)


async def test_an_unsupported_content_encoding_is_a_connection_error() -> None:
    answer = _head(b"Content-Encoding: br\r\nContent-Length: %d\r\n\r\n" % len(OK)) + OK
    async with raw_peer(sends(answer)) as url, OpenAIHTTPBackend(url, transport="lean") as backend:
        with pytest.raises(APIConnectionError, match="unsupported Content-Encoding"):
            await ask(backend)


async def test_a_declared_length_past_the_cap_is_refused_before_its_body_is_read() -> None:
    answer = _head(b"Content-Length: 5000000\r\n\r\n") + b"x" * 1000
    async with (
        raw_peer(sends(answer)) as url,
        OpenAIHTTPBackend(url, transport="lean", max_answer_bytes=100_000) as backend,
    ):
        with pytest.raises(ResponseTooLarge):
            await ask(backend)


async def test_a_byte_after_a_complete_answer_spoils_the_connection_for_reuse() -> None:
    answer = _head(b"Content-Length: %d\r\n\r\n" % len(OK)) + OK

    async def twice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer + b"X")  # one byte nobody asked for
        await writer.drain()
        await asyncio.sleep(0.3)

    async with raw_peer(twice) as url, OpenAIHTTPBackend(url, transport="lean") as backend:
        assert await ask(backend) == "fine"
        assert await ask(backend) == "fine"  # a new connection, not the spoiled one


@pytest.mark.parametrize("transport", ["lean", "aiohttp"])
async def test_an_error_body_is_read_only_for_its_message(transport: TransportName) -> None:
    message = b'{"error": {"message": "out of memory"}}'
    huge_error = (
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5000000\r\n\r\n" + message + b" " * 200_000
    )
    async with raw_peer(sends(huge_error)) as url, OpenAIHTTPBackend(url, transport=transport) as backend:
        with pytest.raises(ServerError) as info:
            await ask(backend)
    assert str(info.value).endswith("/v1/chat/completions: out of memory")


def test_a_backend_used_from_a_second_event_loop_opens_a_new_pool() -> None:
    async def ask_and_close(backend: OpenAIHTTPBackend) -> str:
        try:
            return await ask(backend)
        finally:
            await backend.aclose()

    with ThreadedServer() as server:
        backend = OpenAIHTTPBackend(server.base_url, transport="lean")
        assert asyncio.run(ask_and_close(backend)) == "ok"
        assert asyncio.run(ask_and_close(backend)) == "ok"
    assert len(server.requests) == 2
