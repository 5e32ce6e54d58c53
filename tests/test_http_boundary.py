"""The HTTP boundary under attack: URL secrets, huge answers, stalls, setup advice, closed sessions."""

from __future__ import annotations

import gc
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from coevol.config import Config
from coevol.engine.build import build_engine, key_hint
from coevol.errors import (
    APITimeoutError,
    AuthenticationError,
    ConfigError,
    NotFoundError,
    ResponseTooLarge,
    ServerError,
)
from coevol.llm.openai_http import OpenAIHTTPBackend
from coevol.llm.types import ChatRequest, GenParams
from coevol.testing import FakeOpenAIServer, Fault, FaultKind, always

# Transport behaviour: every test runs through each HTTP client.
pytestmark = pytest.mark.usefixtures("http_transport")

QSECRET = "qs-SECRET-9d8e7f6a5b"
MSGS = ({"role": "user", "content": "hi"},)


def request(backend: OpenAIHTTPBackend, model: str = "fake-model") -> ChatRequest:
    return ChatRequest(backend.endpoint, model, MSGS, GenParams(max_tokens=8))


@asynccontextmanager
async def app_server(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a loopback port; yields ``http://127.0.0.1:PORT`` (no /v1)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def ok_body(text: str = "fine") -> dict[str, Any]:
    return {"choices": [{"message": {"content": text}, "finish_reason": "stop"}], "usage": {}}


# --- secrets in the base URL ---------------------------------------------------------------------


async def test_a_query_string_key_is_sent_but_never_shown() -> None:
    seen: list[str] = []

    async def chat(req: web.Request) -> web.Response:
        seen.append(f"{req.path}?{req.query_string}")
        if len(seen) == 1:
            return web.json_response(ok_body())
        return web.json_response({"error": {"message": f"bad key {req.query_string}"}}, status=500)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with app_server(app) as root:
        base = f"{root}/v1?api-key={QSECRET}&api-version=2024-06-01"
        async with OpenAIHTTPBackend(base) as backend:
            assert (await backend.complete(request(backend))).text == "fine"
            with pytest.raises(ServerError) as info:
                await backend.complete(request(backend))
    assert seen[0] == f"/v1/chat/completions?api-key={QSECRET}&api-version=2024-06-01"
    assert backend.endpoint == f"{root}/v1?api-key=***&api-version=2024-06-01"
    for text in (backend.endpoint, backend.base_url, repr(backend), str(info.value), request(backend).key()):
        assert QSECRET not in text
    assert "bad key api-key=***" in str(info.value)


async def test_a_query_key_is_scrubbed_from_connection_errors_too() -> None:
    base = f"http://127.0.0.1:9/v1?token={QSECRET}"
    async with OpenAIHTTPBackend(base, request_timeout=2) as backend:
        with pytest.raises(Exception) as info:
            await backend.complete(request(backend))
    assert QSECRET not in str(info.value) and QSECRET not in repr(info.value)


@pytest.mark.parametrize("url", ["http://user:pw-SECRET@127.0.0.1:9/v1", "http://:pw-SECRET@h/v1"])
def test_userinfo_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        OpenAIHTTPBackend(url)
    assert "pw-SECRET" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        Config.from_mapping({"roles": {"judge": {"base_url": url}}})
    assert "pw-SECRET" not in str(info.value) and "user name or password" in str(info.value)
    with pytest.raises(ValueError) as direct:
        Config(base_url=url)
    assert "pw-SECRET" not in str(direct.value)


def test_an_invalid_url_is_refused_with_its_secrets_masked() -> None:
    with pytest.raises(ConfigError) as info:
        OpenAIHTTPBackend(f"ftp://h/v1?key={QSECRET}")
    assert QSECRET not in str(info.value) and "ftp://h/v1?key=***" in str(info.value)


# --- answers too large to keep, servers that stall -----------------------------------------------


async def test_a_huge_answer_is_an_error_for_that_call_and_is_not_read_whole() -> None:
    huge = Fault(FaultKind.HUGE, size=3_000_000)
    async with FakeOpenAIServer(faults=always(huge)) as server:
        backend = OpenAIHTTPBackend(server.base_url, max_answer_bytes=1_000_000)
        async with backend:
            with pytest.raises(ResponseTooLarge) as info:
                await backend.complete(request(backend))
    assert "1,000,000 bytes" in str(info.value)


async def test_a_chunked_answer_without_length_is_cut_off_at_the_cap() -> None:
    sent: list[int] = []

    async def chat(req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(req)
        try:
            await resp.write(b'{"choices": [{"message": {"content": "')
            for _ in range(400):
                await resp.write(b"x" * 65536)
                sent.append(1)
            await resp.write(b'"}}]}')
        except (ConnectionError, RuntimeError):
            pass
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with app_server(app) as root, OpenAIHTTPBackend(f"{root}/v1", max_answer_bytes=1 << 20) as backend:
        with pytest.raises(ResponseTooLarge):
            await backend.complete(request(backend))
    assert len(sent) < 400  # the client hung up; the 26 MB were never all read


async def test_under_the_cap_an_answer_is_read_normally() -> None:
    async with FakeOpenAIServer(faults=always(Fault(FaultKind.HUGE, size=200_000))) as server:
        backend = OpenAIHTTPBackend(server.base_url, max_answer_bytes=1_000_000)
        async with backend:
            assert len((await backend.complete(request(backend))).text) == 200_000


async def test_a_stalled_body_times_out() -> None:
    async with FakeOpenAIServer(faults=always(Fault(FaultKind.STALL, hang_seconds=5))) as server:
        backend = OpenAIHTTPBackend(server.base_url, request_timeout=0.3)
        async with backend:
            with pytest.raises(APITimeoutError):
                await backend.complete(request(backend))


# --- setup advice ----------------------------------------------------------------------------------


def test_key_hints_name_the_variable_never_the_key() -> None:
    assert key_hint("OPENAI_API_KEY", True, "roles.judge") == "the key came from $OPENAI_API_KEY"
    assert key_hint("JUDGE_KEY", False, "roles.judge") == "no key was sent: $JUDGE_KEY is not set"
    assert key_hint(None, False, "roles.judge") == (
        "no key was sent: set api_key_env for roles.judge (the top-level key goes only to the "
        "top-level base_url)"
    )


async def test_a_401_says_where_the_key_came_from() -> None:
    async with FakeOpenAIServer(api_key="right") as server:
        backend = OpenAIHTTPBackend(server.base_url, api_key="wrong", key_hint="the key came from $K")
        async with backend:
            with pytest.raises(AuthenticationError) as info:
                await backend.complete(request(backend))
    assert str(info.value).endswith("(the key came from $K)")
    assert "wrong" not in str(info.value)


async def test_a_wrong_model_lists_the_models_the_server_offers() -> None:
    async def chat(req: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "The model `nope` does not exist."}}, status=404)

    async def models(req: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "qwen-7b"}, {"id": "llama-8b"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    async with app_server(app) as root, OpenAIHTTPBackend(f"{root}/v1") as backend:
        with pytest.raises(NotFoundError) as info:
            await backend.complete(request(backend, "nope"))
    assert str(info.value).endswith(
        "model 'nope' is not served there; the server offers: 'qwen-7b', 'llama-8b'"
    )


def _v1_app() -> web.Application:
    async def models(req: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "m"}]})

    async def chat(req: web.Request) -> web.Response:
        return web.json_response(ok_body())

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def test_a_base_url_missing_v1_says_so_on_the_first_404() -> None:
    async with app_server(_v1_app()) as root, OpenAIHTTPBackend(root) as backend:
        with pytest.raises(NotFoundError) as info:
            await backend.complete(request(backend, "m"))
    assert str(info.value).endswith(f"base_url {root} is missing /v1: the server answers at {root}/v1")


async def test_a_base_url_missing_v1_is_refused_before_any_work() -> None:
    async with app_server(_v1_app()) as root:
        with pytest.raises(ConfigError, match="is missing /v1"):
            await build_engine(Config(base_url=root, model="m"))


async def test_a_refused_key_is_found_at_build_time_with_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(req: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "invalid api key"}}, status=401)

    app = web.Application()
    app.router.add_get("/v1/models", refuse)
    app.router.add_post("/v1/chat/completions", refuse)
    monkeypatch.delenv("COEVOL_TEST_KEY", raising=False)
    async with app_server(app) as root:
        with pytest.raises(AuthenticationError) as info:
            await build_engine(Config(base_url=f"{root}/v1", model="m", api_key_env="COEVOL_TEST_KEY"))
    assert "no key was sent: $COEVOL_TEST_KEY is not set" in str(info.value)


async def test_a_failed_build_leaves_no_unclosed_session() -> None:
    async def two_models(req: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "a"}, {"id": "b"}]})

    app = web.Application()
    app.router.add_get("/v1/models", two_models)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with app_server(_v1_app()) as root, app_server(app) as other:
            with pytest.raises(ConfigError, match="missing /v1"):
                await build_engine(Config(base_url=root, model="m"))
            with pytest.raises(ConfigError, match="no model given"):  # two models, none chosen
                await build_engine(Config(base_url=f"{other}/v1"))
        gc.collect()
    assert [str(w.message) for w in caught if "Unclosed" in str(w.message)] == []


async def test_a_redirect_is_not_followed_so_the_key_stays_home() -> None:
    elsewhere: list[str | None] = []

    async def third_party(req: web.Request) -> web.Response:
        elsewhere.append(req.headers.get("Authorization"))
        return web.json_response(ok_body())

    other = web.Application()
    other.router.add_post("/v1/chat/completions", third_party)
    async with app_server(other) as other_root:

        async def redirect(req: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(f"{other_root}/v1/chat/completions?key={QSECRET}")

        app = web.Application()
        app.router.add_post("/v1/chat/completions", redirect)
        async with app_server(app) as root:
            backend = OpenAIHTTPBackend(f"{root}/v1", api_key="sk-home-key")
            async with backend:
                with pytest.raises(NotFoundError) as info:
                    await backend.complete(request(backend))
    assert elsewhere == []
    assert "redirects to" in str(info.value) and "key=***" in str(info.value)
    assert QSECRET not in str(info.value)


def test_role_urls_are_masked_in_the_printed_config() -> None:
    config = Config.from_mapping(
        {"base_url": "http://a/v1", "roles": {"judge": {"base_url": f"http://b/v1?api-key={QSECRET}"}}}
    )
    text = config.to_yaml()
    assert QSECRET not in text and "base_url: http://b/v1?api-key=***" in text


async def test_a_key_that_may_chat_but_not_list_models_is_not_refused_at_build() -> None:
    async def forbidden(req: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "missing scope model.read"}}, status=403)

    async def chat(req: web.Request) -> web.Response:
        return web.json_response(ok_body("chatted"))

    app = web.Application()
    app.router.add_get("/v1/models", forbidden)
    app.router.add_post("/v1/chat/completions", chat)
    async with app_server(app) as root:
        engine = await build_engine(Config(base_url=f"{root}/v1", model="m"))
        try:
            assert (await engine.dispatcher("judge", list(MSGS))).text == "chatted"
        finally:
            await engine.aclose()
