"""The fake OpenAI server: responses, faults, capacity model, recording and subprocess mode."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from coevol.errors import (
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    LLMError,
    RateLimitError,
    ServerError,
)
from coevol.llm.openai_http import OpenAIHTTPBackend
from coevol.llm.types import ChatRequest
from coevol.testing import (
    HOSTILE_TEXT,
    FakeOpenAIServer,
    Fault,
    FaultKind,
    RecordedRequest,
    Reply,
    ThreadedServer,
    always,
    fetch_stats,
    first_attempt_faults,
    mentioning,
    reset_stats,
    serve_in_subprocess,
)


def body(i: int | str, **extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": f"question {i}"}], **extra}


async def post(base_url: str, payload: Any, session: aiohttp.ClientSession) -> tuple[int, Any]:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    async with session.post(f"{base_url}/chat/completions", data=data) as resp:
        raw = await resp.read()
        try:
            return resp.status, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return resp.status, raw


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def slot_interval(rec: RecordedRequest) -> tuple[float, float]:
    assert rec.slot_start is not None and rec.end is not None
    return rec.slot_start, rec.end


# --- responses ------------------------------------------------------------------------------------


async def test_default_response_is_openai_shaped() -> None:
    async with FakeOpenAIServer() as server, aiohttp.ClientSession() as session:
        status, data = await post(server.base_url, body(1, max_tokens=5), session)
    assert status == 200
    assert data["object"] == "chat.completion"
    assert data["model"] == "fake-model"
    assert isinstance(data["id"], str) and isinstance(data["created"], int)
    assert data["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ]
    assert data["usage"] == {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}


async def test_responder_sees_body_and_reply_token_counts_are_used_or_estimated() -> None:
    def responder(payload: dict[str, Any]) -> str | Reply:
        question = payload["messages"][-1]["content"]
        if question.endswith("exact"):
            return Reply("x", prompt_tokens=100, completion_tokens=9, finish_reason="length")
        return f"you asked: {question}"

    async with FakeOpenAIServer(responder) as server, aiohttp.ClientSession() as session:
        _, estimated = await post(server.base_url, body("a b c"), session)
        _, exact = await post(server.base_url, body("exact"), session)
    assert estimated["choices"][0]["message"]["content"] == "you asked: question a b c"
    assert estimated["usage"]["prompt_tokens"] == 4
    assert estimated["usage"]["completion_tokens"] == 6
    assert exact["usage"] == {"prompt_tokens": 100, "completion_tokens": 9, "total_tokens": 109}
    assert exact["choices"][0]["finish_reason"] == "length"


async def test_raising_responder_gives_500_and_is_counted() -> None:
    def broken(payload: dict[str, Any]) -> str:
        raise KeyError("missing template")

    async with FakeOpenAIServer(broken) as server, aiohttp.ClientSession() as session:
        status, data = await post(server.base_url, body(1), session)
        assert server.stats()["responder_errors"] == 1
    assert status == 500
    assert "KeyError" in data["error"]["message"]


async def test_non_json_body_is_a_400() -> None:
    async with FakeOpenAIServer() as server, aiohttp.ClientSession() as session:
        status, data = await post(server.base_url, b"{nope", session)
        status_list, _ = await post(server.base_url, [1, 2], session)
    assert (status, status_list) == (400, 400)
    assert data["error"]["type"] == "invalid_request_error"


async def test_models_stats_and_reset_routes() -> None:
    async with FakeOpenAIServer(model="m-7b") as server, aiohttp.ClientSession() as session:
        async with session.get(f"{server.base_url}/models") as resp:
            models = await resp.json()
        await post(server.base_url, body(1), session)
        root = server.base_url.removesuffix("/v1")
        async with session.get(f"{root}/stats") as resp:
            stats = await resp.json()
        assert stats == server.stats()
        assert stats["requests"] == 1 and stats["completed"] == 1
        async with session.post(f"{root}/reset") as resp:
            assert resp.status == 200
        assert server.stats()["requests"] == 0
        assert server.requests == []
    assert [m["id"] for m in models["data"]] == ["m-7b"]


async def test_record_false_keeps_counters_but_no_bodies() -> None:
    async with FakeOpenAIServer(record=False) as server, aiohttp.ClientSession() as session:
        for i in range(3):
            await post(server.base_url, body(i), session)
    assert server.requests == []
    assert server.stats()["requests"] == 3


# --- faults ---------------------------------------------------------------------------------------


def test_first_attempt_faults_is_deterministic_and_first_attempt_only() -> None:
    kinds = [FaultKind.RATE_LIMIT, FaultKind.SERVER_ERROR, FaultKind.DISCONNECT]
    bodies = [body(i) for i in range(2000)]
    policy = first_attempt_faults(kinds, rate=0.25, seed=7)
    first = [policy(b, 0) for b in bodies]
    again = [first_attempt_faults(kinds, rate=0.25, seed=7)(b, 0) for b in bodies]
    assert first == again
    hit = [f for f in first if f is not None]
    assert 0.2 < len(hit) / len(bodies) < 0.3
    assert {f.kind for f in hit} == set(kinds)
    assert all(policy(b, seen) is None for b in bodies for seen in (1, 2))
    other_seed = [first_attempt_faults(kinds, rate=0.25, seed=8)(b, 0) for b in bodies]
    assert other_seed != first
    assert all(first_attempt_faults(kinds, rate=0.0)(b, 0) is None for b in bodies[:50])
    assert all(first_attempt_faults(kinds, rate=1.0)(b, 0) is not None for b in bodies[:50])
    # key order does not change the decision: identity is the canonical JSON
    reordered = {"messages": bodies[0]["messages"], "model": "fake-model"}
    assert policy(reordered, 0) == first[0]
    with pytest.raises(ValueError):
        first_attempt_faults(kinds, rate=1.5)


async def test_server_counts_identical_bodies_for_retries() -> None:
    policy = first_attempt_faults([Fault(FaultKind.SERVER_ERROR)], rate=1.0)
    async with FakeOpenAIServer(faults=policy) as server, aiohttp.ClientSession() as session:
        first, _ = await post(server.base_url, body(1), session)
        # same content, different key order and formatting: still the same body
        retry, data = await post(
            server.base_url,
            b'{"messages":[{"content":"question 1","role":"user"}], "model": "fake-model"}',
            session,
        )
        other, _ = await post(server.base_url, body(2), session)
    assert (first, retry, other) == (500, 200, 500)
    assert data["choices"][0]["message"]["content"] == "ok"
    assert [r.fault.kind if r.fault else None for r in server.requests] == [
        FaultKind.SERVER_ERROR,
        None,
        FaultKind.SERVER_ERROR,
    ]
    stats = server.stats()
    assert stats["faults"] == {"server_error": 2}
    assert stats["distinct_bodies"] == 2


@pytest.mark.usefixtures("http_transport")
async def test_backend_retrying_by_hand_gets_fault_then_answer() -> None:
    faults = [Fault(FaultKind.RATE_LIMIT, retry_after=0.05)]
    async with (
        FakeOpenAIServer(faults=first_attempt_faults(faults, rate=1.0)) as server,
        OpenAIHTTPBackend(server.base_url) as backend,
    ):
        request = ChatRequest(backend.endpoint, "fake-model", ({"role": "user", "content": "hi"},))
        with pytest.raises(RateLimitError) as info:
            await backend.complete(request)
        assert info.value.retry_after == pytest.approx(0.05)
        assert (await backend.complete(request)).text == "ok"


async def test_rate_limit_fault_wire_format() -> None:
    fault = Fault(FaultKind.RATE_LIMIT, retry_after=2)
    async with FakeOpenAIServer(faults=always(fault)) as server, aiohttp.ClientSession() as session:
        url = f"{server.base_url}/chat/completions"
        async with session.post(url, data=orjson.dumps(body(1))) as resp:
            status, retry_after = resp.status, resp.headers.get("Retry-After")
            error = (await resp.json())["error"]
    assert status == 429
    assert retry_after == "2"
    assert set(error) == {"message", "type", "code"}
    assert error["type"] == "rate_limit_error"


async def test_disconnect_and_garbage_faults_on_the_wire() -> None:
    async with (
        FakeOpenAIServer(faults=always(FaultKind.DISCONNECT)) as server,
        aiohttp.ClientSession() as session,
    ):
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await post(server.base_url, body(1), session)
    async with (
        FakeOpenAIServer(faults=always(FaultKind.GARBAGE)) as server,
        aiohttp.ClientSession() as session,
    ):
        status, raw = await post(server.base_url, body(1), session)
    assert status == 200
    assert isinstance(raw, bytes)


async def test_hang_does_not_block_other_requests() -> None:
    hang = Fault(FaultKind.HANG, hang_seconds=30.0)
    arrived = asyncio.Event()

    def policy(payload: dict[str, Any], seen: int) -> Fault | None:
        if payload["messages"][0]["content"] != "question slow":
            return None
        arrived.set()
        return hang

    async with FakeOpenAIServer(faults=policy) as server, aiohttp.ClientSession() as session:
        slow = asyncio.create_task(post(server.base_url, body("slow"), session))
        await arrived.wait()  # the slow request is hanging inside the server ...
        fast_status, data = await post(server.base_url, body("fast"), session)
        assert not slow.done()  # ... and the fast one was answered meanwhile
        slow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slow
    assert fast_status == 200 and data["choices"][0]["message"]["content"] == "ok"


# --- capacity model -------------------------------------------------------------------------------


async def test_two_concurrent_requests_overlap_with_two_slots() -> None:
    async with FakeOpenAIServer(latency=0.2, slots=2) as server, aiohttp.ClientSession() as session:
        await asyncio.gather(*(post(server.base_url, body(i), session) for i in range(2)))
    a, b = server.requests
    assert a.end is not None and b.end is not None
    assert overlaps((a.start, a.end), (b.start, b.end))
    assert overlaps(slot_interval(a), slot_interval(b))  # in parallel, not one after the other


async def test_one_slot_serialises_requests() -> None:
    async with FakeOpenAIServer(latency=0.1, slots=1) as server, aiohttp.ClientSession() as session:
        started = time.monotonic()
        await asyncio.gather(*(post(server.base_url, body(i), session) for i in range(3)))
        elapsed = time.monotonic() - started
    intervals = sorted(slot_interval(r) for r in server.requests)
    assert all(not overlaps(x, y) for x, y in itertools.pairwise(intervals))
    assert elapsed >= 0.3
    stats = server.stats()
    assert stats["max_active"] == 1
    assert stats["max_in_flight"] == 3


async def test_slots_cap_active_requests_and_utilization_is_sane() -> None:
    slots, n, latency = 3, 12, 0.05
    async with (
        FakeOpenAIServer(latency=latency, slots=slots) as server,
        aiohttp.ClientSession() as session,
    ):
        statuses = await asyncio.gather(*(post(server.base_url, body(i), session) for i in range(n)))
        stats = server.stats()
    assert [s for s, _ in statuses] == [200] * n
    assert stats["max_active"] == slots
    assert stats["max_in_flight"] == n
    assert stats["busy_slot_seconds"] >= n * latency * 0.9
    assert stats["wall_seconds"] >= (n / slots) * latency * 0.9
    assert 0 < stats["utilization"] <= 1.0
    # at no instant did more than `slots` requests hold a slot
    events = sorted(
        [(r.slot_start, 1) for r in server.requests] + [(r.end, -1) for r in server.requests],
        key=lambda e: (e[0], e[1]),
    )
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak <= slots


async def test_latency_may_depend_on_the_body() -> None:
    def latency(payload: dict[str, Any]) -> float:
        return 0.2 if payload["messages"][0]["content"] == "question slow" else 0.0

    async with FakeOpenAIServer(latency=latency) as server, aiohttp.ClientSession() as session:
        await asyncio.gather(
            post(server.base_url, body("slow"), session), post(server.base_url, body(1), session)
        )
    by_content = {r.body["messages"][0]["content"]: r for r in server.requests}
    slow, fast = by_content["question slow"], by_content["question 1"]
    assert slow.end is not None and fast.end is not None
    assert slow.end - slow.start >= 0.19
    assert fast.end - fast.start < slow.end - slow.start
    assert server.stats()["utilization"] is None  # unlimited slots


# --- separate process -----------------------------------------------------------------------------


def test_subprocess_mode_answers_faults_and_reports_stats() -> None:
    args = ["--fault-rate", "1", "--fault-kinds", "rate_limit", "--retry-after", "0.05", "--no-record"]
    with serve_in_subprocess(*args, "--responder", "json:dumps", "--slots", "4") as base_url:
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        payload = orjson.dumps(body(1))
        request = urllib.request.Request(
            f"{base_url}/chat/completions", data=payload, headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 429
        assert info.value.headers["Retry-After"] == "0.05"
        info.value.close()
        with urllib.request.urlopen(request, timeout=5) as resp:
            answer = json.loads(resp.read())
        # json:dumps as responder: the answer is the request body serialised
        assert json.loads(answer["choices"][0]["message"]["content"]) == body(1)
        stats = fetch_stats(base_url)
        assert stats["requests"] == 2
        assert stats["faults"] == {"rate_limit": 1}
        assert stats["slots"] == 4
        reset_stats(base_url)
        assert fetch_stats(base_url)["requests"] == 0


def reply_responder(payload: dict[str, Any]) -> Reply:
    """Imported by the child process in the test below."""
    return Reply("from a Reply", completion_tokens=42)


def test_subprocess_accepts_a_responder_returning_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    here = Path(__file__).resolve().parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(here), os.environ.get("PYTHONPATH")])))
    with serve_in_subprocess("--responder", f"{Path(__file__).stem}:reply_responder") as base_url:
        request = urllib.request.Request(f"{base_url}/chat/completions", data=orjson.dumps(body(1)))
        with urllib.request.urlopen(request, timeout=5) as resp:
            answer = json.loads(resp.read())
    assert answer["choices"][0]["message"]["content"] == "from a Reply"
    assert answer["usage"]["completion_tokens"] == 42


def test_subprocess_that_cannot_start_raises() -> None:
    with (
        pytest.raises(RuntimeError, match="exited before READY"),
        serve_in_subprocess("--responder", "no_such_module_xyz:f"),
    ):
        pass


@pytest.mark.usefixtures("http_transport")
async def test_backend_against_subprocess_server() -> None:
    with serve_in_subprocess("--latency", "0.01") as base_url:
        async with OpenAIHTTPBackend(base_url) as backend:
            request = ChatRequest(backend.endpoint, "fake-model", ({"role": "user", "content": "hi"},))
            results = await asyncio.gather(*(backend.complete(request) for _ in range(20)))
        assert {r.text for r in results} == {"ok"}
        assert fetch_stats(base_url)["completed"] == 20


@pytest.mark.usefixtures("http_transport")
async def test_server_error_from_responder_reaches_backend_as_server_error() -> None:
    def broken(payload: dict[str, Any]) -> str:
        raise RuntimeError("boom")

    async with FakeOpenAIServer(broken) as server, OpenAIHTTPBackend(server.base_url) as backend:
        with pytest.raises(ServerError, match="boom"):
            await backend.complete(ChatRequest(backend.endpoint, "m", ({"role": "user", "content": "x"},)))


# --- faults for attack tests ----------------------------------------------------------------------


def content_of(data: dict[str, Any]) -> tuple[str, str]:
    choice = data["choices"][0]
    return choice["message"]["content"], choice["finish_reason"]


async def test_empty_fault_is_a_well_formed_empty_answer() -> None:
    async with FakeOpenAIServer(faults=always(FaultKind.EMPTY)) as server, aiohttp.ClientSession() as session:
        status, data = await post(server.base_url, body(1), session)
    assert status == 200
    assert content_of(data) == ("", "stop")
    assert data["usage"]["completion_tokens"] == 0
    assert server.stats()["faults"] == {"empty": 1}


async def test_truncated_fault_cuts_the_responders_text_and_says_length() -> None:
    def responder(payload: dict[str, Any]) -> str:
        return "abcdefgh ijkl"

    half = Fault(FaultKind.TRUNCATED)
    three = Fault(FaultKind.TRUNCATED, keep=3)

    def policy(payload: dict[str, Any], seen: int) -> Fault:
        return three if payload["messages"][0]["content"] == "question 3" else half

    async with (
        FakeOpenAIServer(responder, faults=policy) as server,
        aiohttp.ClientSession() as session,
    ):
        _, default = await post(server.base_url, body(1), session)
        _, kept = await post(server.base_url, body(3), session)
    assert content_of(default) == ("abcdef", "length")
    assert content_of(kept) == ("abc", "length")
    assert default["usage"]["completion_tokens"] == 1


async def test_huge_fault_ignores_max_tokens() -> None:
    huge = Fault(FaultKind.HUGE, size=1_000_003)
    async with FakeOpenAIServer(faults=always(huge)) as server, aiohttp.ClientSession() as session:
        status, data = await post(server.base_url, body(1, max_tokens=5), session)
    text, finish = content_of(data)
    assert status == 200 and finish == "stop"
    assert len(text.encode()) == 1_000_003
    assert text == ("huge " * 200_001)[:1_000_003]
    assert data["usage"]["completion_tokens"] == len(text.split()) > 5


async def test_huge_fault_defaults_to_ten_megabytes() -> None:
    assert len(Fault(FaultKind.HUGE).huge_text().encode()) == 10_000_000


async def test_stall_sends_headers_then_nothing_until_the_body() -> None:
    stall = Fault(FaultKind.STALL, hang_seconds=0.3)
    async with FakeOpenAIServer(faults=always(stall)) as server, aiohttp.ClientSession() as session:
        url = f"{server.base_url}/chat/completions"
        async with session.post(url, data=orjson.dumps(body(1))) as resp:
            assert resp.status == 200
            # The status line arrived while the handler is still inside its stall ...
            (rec,) = server.requests
            assert rec.end is None
            data = orjson.loads(await resp.read())
        # ... and the body only after it.
        assert rec.end is not None
    assert content_of(data) == ("ok", "stop")


async def test_hang_sends_no_headers_before_the_answer() -> None:
    hang = Fault(FaultKind.HANG, hang_seconds=0.1)
    async with FakeOpenAIServer(faults=always(hang)) as server, aiohttp.ClientSession() as session:
        url = f"{server.base_url}/chat/completions"
        async with session.post(url, data=orjson.dumps(body(1))) as resp:
            (rec,) = server.requests
            assert rec.end is not None  # the handler had finished before any header was sent
            assert resp.status == 200


@pytest.mark.usefixtures("http_transport")
async def test_stall_past_the_clients_timeout_is_a_timeout_error() -> None:
    stall = Fault(FaultKind.STALL, hang_seconds=5.0)
    async with (
        FakeOpenAIServer(faults=always(stall)) as server,
        OpenAIHTTPBackend(server.base_url, request_timeout=0.2) as backend,
    ):
        request = ChatRequest(backend.endpoint, "fake-model", ({"role": "user", "content": "hi"},))
        with pytest.raises(APITimeoutError):
            await backend.complete(request)


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [
        (86400, "86400"),
        (0.25, "0.25"),
        ("Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ("soon", "soon"),
        (None, None),
    ],
)
async def test_rate_limit_retry_after_is_configurable(
    retry_after: float | str | None, header: str | None
) -> None:
    fault = Fault(FaultKind.RATE_LIMIT, retry_after=retry_after)
    async with FakeOpenAIServer(faults=always(fault)) as server, aiohttp.ClientSession() as session:
        url = f"{server.base_url}/chat/completions"
        async with session.post(url, data=orjson.dumps(body(1))) as resp:
            status, value = resp.status, resp.headers.get("Retry-After")
    assert status == 429
    assert value == header


@pytest.mark.usefixtures("http_transport")
@pytest.mark.parametrize(("status", "error"), [(400, BadRequestError), (503, ServerError)])
async def test_hostile_error_body_carries_markup_and_escapes_verbatim(
    status: int, error: type[LLMError]
) -> None:
    fault = Fault(FaultKind.HOSTILE_ERROR, status=status)
    async with FakeOpenAIServer(faults=always(fault)) as server, aiohttp.ClientSession() as session:
        code, data = await post(server.base_url, body(1), session)
        async with OpenAIHTTPBackend(server.base_url) as backend:
            request = ChatRequest(backend.endpoint, "fake-model", ({"role": "user", "content": "hi"},))
            with pytest.raises(error) as info:
                await backend.complete(request)
    assert code == status
    assert data["error"]["message"] == HOSTILE_TEXT
    for piece in ("[/b]", "\x1b]0;pwn\x07", "\x1b[2J", "\x1b]8;;"):
        assert piece in HOSTILE_TEXT
        assert piece in str(info.value)  # the client passes it on: rendering it safely is the UI's job


def test_fault_fields_are_checked() -> None:
    with pytest.raises(ValueError):
        Fault(FaultKind.HUGE, size=-1)
    with pytest.raises(ValueError):
        Fault(FaultKind.HOSTILE_ERROR, status=200)
    assert Fault(FaultKind.HOSTILE_ERROR, message="plain").error_message() == "plain"


@pytest.mark.usefixtures("http_transport")
async def test_each_server_records_the_authorization_header_it_received() -> None:
    async with (
        FakeOpenAIServer() as first,
        FakeOpenAIServer() as second,
        FakeOpenAIServer() as third,
        OpenAIHTTPBackend(first.base_url, api_key="sk-test-first") as a,
        OpenAIHTTPBackend(second.base_url, api_key="sk-test-second") as b,
        OpenAIHTTPBackend(third.base_url) as c,
    ):
        for backend in (a, b, c):
            await backend.complete(ChatRequest(backend.endpoint, "m", ({"role": "user", "content": "x"},)))
    assert [r.authorization for r in first.requests] == ["Bearer sk-test-first"]
    assert [r.authorization for r in second.requests] == ["Bearer sk-test-second"]
    assert [r.authorization for r in third.requests] == [None]
    assert not third.requests[0].has_auth
    assert first.requests[0].headers["Content-Type"] == "application/json"
    assert "sk-test-first" not in repr(first.requests[0])


@pytest.mark.usefixtures("http_transport")
async def test_api_key_server_refuses_a_wrong_key() -> None:
    async with (
        FakeOpenAIServer(api_key="sk-test-right") as server,
        OpenAIHTTPBackend(server.base_url, api_key="sk-test-wrong") as wrong,
        OpenAIHTTPBackend(server.base_url, api_key="sk-test-right") as right,
    ):
        request = ChatRequest(server.base_url, "m", ({"role": "user", "content": "x"},))
        with pytest.raises(AuthenticationError):
            await wrong.complete(request)
        assert (await right.complete(request)).text == "ok"
    assert [r.authorization for r in server.requests] == ["Bearer sk-test-wrong", "Bearer sk-test-right"]


def test_mentioning_aims_a_fault_at_matching_messages() -> None:
    policy = mentioning("ROW-7", FaultKind.SERVER_ERROR)
    hit = policy(body("about ROW-7"), 3)
    assert hit is not None and hit.kind is FaultKind.SERVER_ERROR
    assert policy(body("about ROW-8"), 0) is None
    assert policy({"messages": "not a list"}, 0) is None
    assert mentioning("ROW-7", None)(body("about ROW-7"), 0) is None


def test_subprocess_cli_new_options() -> None:
    args = [
        "--fault-rate",
        "1",
        "--fault-kinds",
        "rate_limit",
        "--retry-after",
        "Wed, 21 Oct 2015 07:28:00 GMT",
    ]
    with serve_in_subprocess(*args, "--api-key", "sk-test-cli") as base_url:
        request = urllib.request.Request(
            f"{base_url}/chat/completions",
            data=orjson.dumps(body(1)),
            headers={"Authorization": "Bearer sk-test-cli"},
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 429
        assert info.value.headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
        info.value.close()
        keyless = urllib.request.Request(f"{base_url}/chat/completions", data=orjson.dumps(body(2)))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(keyless, timeout=5)
        assert refused.value.code == 401
        refused.value.close()


def test_threaded_server_answers_blocking_clients_and_waits_for_conditions() -> None:
    with ThreadedServer(model="m-thread") as server:
        request = urllib.request.Request(f"{server.base_url}/chat/completions", data=orjson.dumps(body(1)))
        with urllib.request.urlopen(request, timeout=5) as resp:
            answer = json.loads(resp.read())
        server.wait_for(lambda: server.count() == 1)
        assert answer["model"] == "fake-model"  # the body's model wins over the server's default
        assert [r.body["messages"][0]["content"] for r in server.requests] == ["question 1"]
        with pytest.raises(TimeoutError):
            server.wait_for(lambda: server.count() == 2, timeout=0.05)
