"""The fake Files/Batches endpoints, through coevol's own Batch API client, and the pure line codec."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from coevol.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ContextLengthError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from coevol.llm.batch_api import BatchAPI, BatchInfo, input_line, parse_result_line
from coevol.llm.types import ChatRequest, Completion
from coevol.testing import FakeOpenAIServer
from coevol.testing.batches import BatchTimeline, FakeBatches, ManualClock


def answer(body: dict[str, Any]) -> str:
    return "answer to " + str(body["messages"][-1]["content"])


def requests(n: int) -> list[ChatRequest]:
    return [ChatRequest("e", "fake-model", ({"role": "user", "content": f"q{i}"},)) for i in range(n)]


def jsonl(reqs: list[ChatRequest]) -> bytes:
    return b"".join(input_line(str(i), r) for i, r in enumerate(reqs))


async def run_to_end(api: BatchAPI, info: BatchInfo, polls: int = 50) -> tuple[BatchInfo, list[str]]:
    seen = [f"{info.status} {info.completed}/{info.total}"]
    for _ in range(polls):
        if info.status in ("completed", "failed", "expired", "cancelled"):
            break
        info = await api.retrieve(info.id)
        seen.append(f"{info.status} {info.completed}/{info.total}")
    return info, seen


async def results(api: BatchAPI, file_id: str | None) -> list[tuple[str, Completion | Exception]]:
    if file_id is None:
        return []
    raw = await api.content(file_id)
    return [parse_result_line(line) for line in raw.splitlines()]


async def test_status_sequence_order_and_answers_of_the_chat_responder() -> None:
    async with FakeOpenAIServer(answer) as server:
        api = BatchAPI(server.base_url)
        try:
            file_id = await api.upload(jsonl(requests(4)), "in.jsonl")
            info, seen = await run_to_end(api, await api.create(file_id))
            out = await results(api, info.output_file_id)
        finally:
            await api.aclose()
    assert seen == [
        "validating 0/4",
        "in_progress 0/4",
        "in_progress 2/4",
        "finalizing 4/4",
        "completed 4/4",
    ]
    assert info.error_file_id is None
    ids = [cid for cid, _ in out]
    assert sorted(ids) == ["0", "1", "2", "3"] and ids != sorted(ids)  # another order than the input
    assert {cid: r.text for cid, r in out if isinstance(r, Completion)} == {
        str(i): f"answer to q{i}" for i in range(4)
    }
    assert server.requests == []  # nothing went through /v1/chat/completions


async def test_a_manual_clock_moves_only_when_the_test_moves_it() -> None:
    clock = ManualClock()
    batches = FakeBatches(clock=clock, timeline=BatchTimeline(validating=60, in_progress=600, finalizing=60))
    async with FakeOpenAIServer(answer, batches=batches) as server:
        api = BatchAPI(server.base_url)
        try:
            info = await api.create(await api.upload(jsonl(requests(10)), "in.jsonl"))
            assert (await api.retrieve(info.id)).status == "validating"
            assert (await api.retrieve(info.id)).status == "validating"
            clock.advance(360)
            mid = await api.retrieve(info.id)
            clock.advance(330)
            late = await api.retrieve(info.id)
            clock.advance(60)
            done = await api.retrieve(info.id)
        finally:
            await api.aclose()
    assert (mid.status, mid.completed, mid.total) == ("in_progress", 5, 10)
    assert late.status == "finalizing"
    assert (done.status, done.completed, done.failed) == ("completed", 10, 0)


async def test_failed_lines_go_to_the_error_file_with_their_status() -> None:
    batches = FakeBatches(line_faults=lambda cid, body, seen: 500 if cid in ("1", "3") else None)
    async with FakeOpenAIServer(answer, batches=batches) as server:
        api = BatchAPI(server.base_url)
        try:
            info, _ = await run_to_end(api, await api.create(await api.upload(jsonl(requests(4)), "x")))
            ok = await results(api, info.output_file_id)
            bad = await results(api, info.error_file_id)
        finally:
            await api.aclose()
    assert (info.completed, info.failed) == (2, 2)
    assert sorted(cid for cid, _ in ok) == ["0", "2"]
    assert sorted(cid for cid, _ in bad) == ["1", "3"]
    assert all(isinstance(r, ServerError) and "HTTP 500" in str(r) for _, r in bad)


async def test_a_batch_that_fails_whole_says_why() -> None:
    batches = FakeBatches(batch_faults=lambda n: "failed" if n == 0 else None)
    async with FakeOpenAIServer(answer, batches=batches) as server:
        api = BatchAPI(server.base_url)
        try:
            file_id = await api.upload(jsonl(requests(2)), "x")
            first, _ = await run_to_end(api, await api.create(file_id))
            second, _ = await run_to_end(api, await api.create(file_id))
        finally:
            await api.aclose()
    assert first.status == "failed" and first.output_file_id is None
    assert first.errors == ("server_error: the batch could not be run",)
    assert second.status == "completed"


async def test_an_expiring_batch_stalls_then_expires_with_half_its_lines() -> None:
    batches = FakeBatches(batch_faults=lambda n: "expire", timeline=BatchTimeline(window=8))
    async with FakeOpenAIServer(answer, batches=batches) as server:
        api = BatchAPI(server.base_url)
        try:
            info, seen = await run_to_end(api, await api.create(await api.upload(jsonl(requests(4)), "x")))
            ok = await results(api, info.output_file_id)
            bad = await results(api, info.error_file_id)
        finally:
            await api.aclose()
    assert seen[-3:] == ["in_progress 2/4", "in_progress 2/4", "expired 2/4"]
    assert sorted(cid for cid, _ in ok) == ["0", "1"]
    assert sorted(cid for cid, _ in bad) == ["2", "3"]
    assert all("batch_expired" in str(r) for _, r in bad)


async def test_cancel_keeps_what_was_done() -> None:
    async with FakeOpenAIServer(answer) as server:
        api = BatchAPI(server.base_url)
        try:
            info = await api.create(await api.upload(jsonl(requests(4)), "x"))
            await api.retrieve(info.id)
            await api.retrieve(info.id)  # in progress, 2 of 4 done
            assert (await api.cancel(info.id)).status == "cancelling"
            done, _ = await run_to_end(api, await api.retrieve(info.id))
            bad = await results(api, done.error_file_id)
        finally:
            await api.aclose()
    assert done.status == "cancelled" and done.completed == 2
    assert sorted(cid for cid, _ in bad) == ["2", "3"]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}\n' * 2,
         "duplicate custom_id 'a' (line 2)"),
        (b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}}\n',
         "does not match the batch's endpoint"),
        (b"not json\n", "invalid_request: not valid JSON (line 1)"),
        (b"\n\n", "empty_file"),
        (jsonl(requests(3)), "too_many_requests: 3 requests, max 2"),
    ],
)  # fmt: skip
async def test_an_invalid_input_file_fails_the_batch(content: bytes, error: str) -> None:
    async with FakeOpenAIServer(answer, batches=FakeBatches(max_lines=2)) as server:
        api = BatchAPI(server.base_url)
        try:
            info, _ = await run_to_end(api, await api.create(await api.upload(content, "x")))
        finally:
            await api.aclose()
    assert info.status == "failed"
    assert any(error in e for e in info.errors), info.errors


async def test_refusals_are_translated_once_and_never_show_the_key() -> None:
    async with FakeOpenAIServer(answer, api_key="sk-test-secret") as server:
        wrong = BatchAPI(server.base_url, api_key="sk-wrong-key", key_hint="the key came from $K")
        right = BatchAPI(server.base_url, api_key="sk-test-secret")
        try:
            with pytest.raises(AuthenticationError) as refused:
                await wrong.upload(b"x", "x")
            with pytest.raises(NotFoundError):
                await right.create("file-nope")
            file_id = await right.upload(jsonl(requests(1)), "x")
            raw = await server_post(
                server.base_url,
                "sk-test-secret",
                {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "1h"},
            )
        finally:
            await wrong.aclose()
            await right.aclose()
    assert "sk-wrong-key" not in str(refused.value) and "$K" in str(refused.value)
    assert raw[0] == 400 and "completion_window" in raw[1]


async def server_post(base_url: str, key: str, body: dict[str, Any]) -> tuple[int, str]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{base_url}/batches", data=orjson.dumps(body), headers={"Authorization": f"Bearer {key}"}
        ) as resp,
    ):
        return resp.status, await resp.text()


async def test_a_server_without_the_batch_api_is_refused_up_front() -> None:
    async with FakeOpenAIServer(answer, batch_api=False) as server:
        api = BatchAPI(server.base_url)
        try:
            with pytest.raises(ConfigError, match="does not offer the Batch API"):
                await api.probe()
        finally:
            await api.aclose()


async def test_find_returns_the_batch_created_from_a_file() -> None:
    async with FakeOpenAIServer(answer) as server:
        api = BatchAPI(server.base_url)
        try:
            first = await api.upload(jsonl(requests(1)), "a")
            second = await api.upload(jsonl(requests(2)), "b")
            made = await api.create(first)
            assert await api.find(second) is None
            found = await api.find(first)
        finally:
            await api.aclose()
    assert found is not None and found.id == made.id


# --- the pure codec -------------------------------------------------------------------------------


def line(response: Any = None, error: Any = None, cid: Any = "7") -> bytes:
    return orjson.dumps({"id": "r", "custom_id": cid, "response": response, "error": error})


def test_input_line_is_the_online_body() -> None:
    req = requests(1)[0]
    assert orjson.loads(input_line("c1", req)) == {
        "custom_id": "c1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": req.body(),
    }


def test_result_lines_become_completions_or_the_online_errors() -> None:
    body = {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1}}  # fmt: skip
    assert parse_result_line(line({"status_code": 200, "body": body})) == (
        "7",
        Completion("hi", 3, 1, "stop"),
    )

    def err(status: int, message: str, code: str | None = None) -> Exception:
        resp = {"status_code": status, "body": {"error": {"message": message, "code": code}}}
        return parse_result_line(line(resp))[1]  # type: ignore[return-value]

    assert isinstance(err(429, "slow down"), RateLimitError)
    assert isinstance(err(500, "boom"), ServerError)
    assert isinstance(err(400, "too long", "context_length_exceeded"), ContextLengthError)
    assert type(err(400, "bad")) is BadRequestError
    expired = parse_result_line(line(None, {"code": "batch_expired", "message": "window over"}))[1]
    assert isinstance(expired, ServerError) and "batch_expired: window over" in str(expired)


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1, 2]", line(cid=None), line(cid=5)],
)
def test_a_line_without_a_usable_custom_id_is_a_server_error(raw: bytes) -> None:
    with pytest.raises(ServerError, match="malformed batch result line"):
        parse_result_line(raw)


def test_a_malformed_or_hostile_completion_is_an_error_of_its_line_only() -> None:
    hostile = {"choices": [{"message": {"content": ["\x1b[31m", "[/b]"]}}]}
    cid, result = parse_result_line(line({"status_code": 200, "body": hostile}))
    assert cid == "7" and isinstance(result, ServerError) and "malformed completion" in str(result)
    cid, result = parse_result_line(line({"status_code": 200, "body": {"choices": []}}))
    assert isinstance(result, ServerError)
