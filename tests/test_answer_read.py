"""How an answer body is read: one bounded read when its length is declared, chunks otherwise.

The one-read path must not open a hole in the size cap: a compressed body that declares a small
``Content-Length`` but inflates past ``max_answer_bytes`` is still refused, a body exactly at the
cap is read, and one that stops short of its declared length is a connection error.
"""

from __future__ import annotations

import gzip

import orjson
import pytest
from aiohttp import web

from coevol.errors import APIConnectionError, ResponseTooLarge
from coevol.llm.openai_http import OpenAIHTTPBackend
from coevol.llm.types import ChatRequest, GenParams
from tests.test_openai_http import canned

# Transport behaviour: every test runs through each HTTP client.
pytestmark = pytest.mark.usefixtures("http_transport")

MSGS = ({"role": "user", "content": "hi"},)


def body(text: str) -> bytes:
    return orjson.dumps({"choices": [{"message": {"content": text}, "finish_reason": "stop"}]})


async def ask(base_url: str, cap: int) -> str:
    async with OpenAIHTTPBackend(base_url, max_answer_bytes=cap) as backend:
        req = ChatRequest(backend.endpoint, "m", MSGS, GenParams(max_tokens=8))
        return (await backend.complete(req)).text


async def test_a_gzip_body_that_inflates_past_the_cap_is_refused() -> None:
    packed = gzip.compress(body("x" * 2_000_000))
    assert len(packed) < 100_000

    async def chat(req: web.Request) -> web.Response:
        return web.Response(
            body=packed, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async with canned(chat) as url:
        with pytest.raises(ResponseTooLarge):
            await ask(url, 1_000_000)


async def test_a_gzip_body_under_the_cap_is_read_inflated() -> None:
    packed = gzip.compress(body("y" * 50_000))

    async def chat(req: web.Request) -> web.Response:
        return web.Response(
            body=packed, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async with canned(chat) as url:
        assert await ask(url, 1_000_000) == "y" * 50_000


async def test_a_body_exactly_at_the_cap_is_read_and_one_byte_more_is_not() -> None:
    raw = body("z" * 1000)

    async def chat(req: web.Request) -> web.Response:
        return web.Response(body=raw, content_type="application/json")

    async with canned(chat) as url:
        assert await ask(url, len(raw)) == "z" * 1000
        with pytest.raises(ResponseTooLarge):
            await ask(url, len(raw) - 1)


async def test_a_body_shorter_than_its_declared_length_is_a_connection_error() -> None:
    raw = body("w" * 1000)

    async def chat(req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Length": str(len(raw) + 500)})
        await resp.prepare(req)
        await resp.write(raw)
        assert req.transport is not None
        req.transport.close()
        return resp

    async with canned(chat) as url:
        with pytest.raises(APIConnectionError):
            await ask(url, 1_000_000)
