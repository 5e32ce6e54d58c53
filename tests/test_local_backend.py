"""LlamaCppBackend: error mapping with a stand-in model, then the real embedded model (slow)."""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coevol.errors import ContextLengthError, FatalError, MissingExtra, ModelAssetError
from coevol.llm import local
from coevol.llm.local import LlamaCppBackend
from coevol.llm.model_asset import EMBEDDED_MODEL_SHA256
from coevol.llm.types import ChatRequest, GenParams

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
NO_LLAMA = "llama-cpp-python is not installed (pip install 'coevol[local]')"

SYSTEM_USER = (
    {"role": "system", "content": "You are a terse assistant. Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
)


def request(backend: LlamaCppBackend, messages: Any = SYSTEM_USER, **params: Any) -> ChatRequest:
    return ChatRequest(
        endpoint=backend.endpoint,
        model="local",
        messages=tuple(messages),
        params=GenParams(**params),
    )


class FakeLlama:
    """Stands in for ``llama_cpp.Llama``; records calls and the thread they ran on."""

    def __init__(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result = result
        self.error = error
        self.calls: list[dict[str, Any]] = []
        self.threads: set[int] = set()
        self.resets = 0
        self.closed = False

    def reset(self) -> None:
        self.resets += 1

    def create_chat_completion(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        self.threads.add(threading.get_ident())
        if self.error is not None:
            raise self.error
        return self.result

    def close(self) -> None:
        self.closed = True


ANSWER = {
    "choices": [{"message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 31, "completion_tokens": 3, "total_tokens": 34},
}


@pytest.fixture
def fake_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LlamaCppBackend, FakeLlama]]:
    monkeypatch.setattr(local, "_llama_cpp_available", lambda: True)
    backend = LlamaCppBackend(seed=7)
    fake = FakeLlama(ANSWER)
    backend._llama = fake
    yield backend, fake
    backend._executor.shutdown(wait=True)


# -- without llama.cpp ----------------------------------------------------------------------------


def test_missing_llama_cpp_is_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "_llama_cpp_available", lambda: False)
    with pytest.raises(MissingExtra, match=r"pip install 'coevol\[local\]'"):
        LlamaCppBackend()


def test_endpoint_names_the_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(local, "_llama_cpp_available", lambda: True)
    embedded = LlamaCppBackend()
    assert embedded.endpoint == (
        f"llama.cpp://qwen2.5-coder-0.5b-instruct-q4_k_m.gguf#{EMBEDDED_MODEL_SHA256[:16]}"
    )
    user = tmp_path / "mine.gguf"
    user.write_bytes(b"GGUF" + b"\x00" * 96)
    assert LlamaCppBackend(user).endpoint == "llama.cpp://mine.gguf#100"


def test_user_model_path_is_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(local, "_llama_cpp_available", lambda: True)
    with pytest.raises(ModelAssetError, match="not found"):
        LlamaCppBackend(tmp_path / "absent.gguf")
    bogus = tmp_path / "bogus.gguf"
    bogus.write_text("not a model")
    with pytest.raises(ModelAssetError, match="not a GGUF"):
        LlamaCppBackend(bogus)


async def test_maps_answer_and_parameters(fake_backend: tuple[LlamaCppBackend, FakeLlama]) -> None:
    backend, fake = fake_backend
    req = request(backend, max_tokens=50, temperature=0.0, top_p=0.9, stop=("###",))
    done = await backend.complete(req)
    assert (done.text, done.prompt_tokens, done.completion_tokens, done.finish_reason) == (
        "Paris.",
        31,
        3,
        "stop",
    )
    call = fake.calls[0]
    assert call["messages"] == list(SYSTEM_USER)
    assert (call["max_tokens"], call["temperature"], call["top_p"]) == (50, 0.0, 0.9)
    assert call["stop"] == ["###"]
    assert call["seed"] == 7  # the backend's seed when the request has none
    assert fake.resets == 1  # no KV-cache reuse between calls
    await backend.complete(request(backend, seed=123))
    assert fake.calls[1]["seed"] == 123
    assert fake.threads != {threading.get_ident()}  # ran off the event loop thread


@pytest.mark.parametrize(
    ("given", "tokens", "expected"),
    [
        ("stop", 3, "stop"),
        ("length", 50, "length"),
        (None, 50, "length"),
        (None, 49, "stop"),
        ("", 60, "length"),
    ],
)
async def test_finish_reason_is_recorded_length_when_cut_off(
    fake_backend: tuple[LlamaCppBackend, FakeLlama], given: str | None, tokens: int, expected: str
) -> None:
    backend, fake = fake_backend
    choice: dict[str, Any] = {"message": {"role": "assistant", "content": "Par"}}
    if given is not None:
        choice["finish_reason"] = given
    fake.result = {"choices": [choice], "usage": {"prompt_tokens": 5, "completion_tokens": tokens}}
    done = await backend.complete(request(backend, max_tokens=50))
    assert done.finish_reason == expected


async def test_calls_are_serialized_on_one_thread(fake_backend: tuple[LlamaCppBackend, FakeLlama]) -> None:
    backend, fake = fake_backend
    results = await asyncio.gather(*(backend.complete(request(backend)) for _ in range(8)))
    assert [r.text for r in results] == ["Paris."] * 8
    assert len(fake.threads) == 1


async def test_context_overflow_is_context_length_error(
    fake_backend: tuple[LlamaCppBackend, FakeLlama],
) -> None:
    backend, fake = fake_backend
    fake.error = ValueError("Requested tokens (5000) exceed context window of 4096")
    with pytest.raises(ContextLengthError, match="4096"):
        await backend.complete(request(backend))


@pytest.mark.parametrize("error", [ValueError("bad grammar"), RuntimeError("llama_decode returned -3")])
async def test_other_llama_errors_are_fatal(
    fake_backend: tuple[LlamaCppBackend, FakeLlama], error: Exception
) -> None:
    backend, fake = fake_backend
    fake.error = error
    with pytest.raises(FatalError) as info:
        await backend.complete(request(backend))
    assert not isinstance(info.value, ContextLengthError)
    assert str(error) in str(info.value)


async def test_aclose_frees_and_refuses(fake_backend: tuple[LlamaCppBackend, FakeLlama]) -> None:
    backend, fake = fake_backend
    await backend.aclose()
    assert fake.closed
    await backend.aclose()  # idempotent
    with pytest.raises(FatalError, match="closed"):
        await backend.complete(request(backend))


def test_extra_buffer_types_switched_off_only_during_load(monkeypatch: pytest.MonkeyPatch) -> None:
    class Params:
        use_extra_bufts = True

    fake = types.ModuleType("llama_cpp.llama_cpp")
    original = Params
    fake.llama_model_default_params = original  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp.llama_cpp", fake)
    with local._extra_buffer_types(False):
        assert fake.llama_model_default_params().use_extra_bufts is False
    assert fake.llama_model_default_params is original
    with local._extra_buffer_types(True):
        assert fake.llama_model_default_params is original


# -- the real embedded model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded() -> Iterator[LlamaCppBackend]:
    """One loaded embedded model for the module (assembled into the default cache dir once)."""
    if not HAVE_LLAMA:
        pytest.skip(NO_LLAMA)
    backend = LlamaCppBackend(n_ctx=2048, n_threads=2)
    asyncio.run(backend.load())
    yield backend
    asyncio.run(backend.aclose())


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_embedded_model_answers_deterministically(embedded: LlamaCppBackend) -> None:
    req = request(embedded, max_tokens=16, temperature=0.0)
    first = await embedded.complete(req)
    assert first.text.strip()
    assert first.prompt_tokens > 0
    assert 0 < first.completion_tokens <= 16
    assert first.finish_reason in ("stop", "length")
    second = await embedded.complete(req)
    assert second.text == first.text
    # a different request in between must not change the answer (no KV-cache carry-over)
    await embedded.complete(request(embedded, [{"role": "user", "content": "Say hi."}], max_tokens=4))
    third = await embedded.complete(req)
    assert third.text == first.text


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_embedded_model_context_limits() -> None:
    if not HAVE_LLAMA:
        pytest.skip(NO_LLAMA)
    backend = LlamaCppBackend(n_ctx=256, n_threads=2)
    try:
        long_prompt = [{"role": "user", "content": "alpha beta gamma delta " * 200}]
        with pytest.raises(ContextLengthError):
            await backend.complete(request(backend, long_prompt, max_tokens=16))
        # the prompt alone fits: max_tokens is cut to what is left instead of failing
        fits = [{"role": "user", "content": "Count upwards from one, forever: " + "one two three " * 50}]
        done = await backend.complete(request(backend, fits, max_tokens=1000))
        assert done.prompt_tokens + done.completion_tokens <= 256
        assert done.completion_tokens > 0
    finally:
        await backend.aclose()


@pytest.mark.parametrize("quiet", [True, False])
def test_a_process_that_loaded_llama_cpp_exits_without_resource_warnings(quiet: bool) -> None:
    """llama-cpp-python leaves two /dev/null files open at exit; coevol swaps them for files that
    never warn (the control run shows the warning the swap removes)."""
    if not HAVE_LLAMA:
        pytest.skip("pip install 'coevol[local]'")
    code = "import llama_cpp\nfrom coevol.llm.local import _quiet_devnull_files\n"
    code += "_quiet_devnull_files()\n_quiet_devnull_files()\n" if quiet else ""
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert ("ResourceWarning" in proc.stderr) is not quiet, proc.stderr


# -- --judge prob: logprobs ------------------------------------------------------------------------
LOGPROB_ANSWER = {
    "choices": [
        {
            "message": {"role": "assistant", "content": "<assistant 2>"},
            "finish_reason": "stop",
            # llama-cpp-python's chat shape; its numbers are numpy float32
            "logprobs": {
                "content": [
                    {"token": "2", "logprob": -0.25, "top_logprobs": [{"token": "2", "logprob": -0.25}]},
                ],
                "refusal": None,
            },
        }
    ],
    "usage": {"prompt_tokens": 31, "completion_tokens": 1, "total_tokens": 32},
}


async def test_logprobs_are_asked_and_read_only_when_built_for_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy

    from coevol.llm.types import TokenLogprob

    monkeypatch.setattr(local, "_llama_cpp_available", lambda: True)
    answer = copy.deepcopy(LOGPROB_ANSWER)
    entry = answer["choices"][0]["logprobs"]["content"][0]  # type: ignore[index]
    entry["logprob"] = numpy.float32(-0.25)
    for built in (True, False):
        backend = LlamaCppBackend(logprobs=built)
        fake = FakeLlama(answer)
        backend._llama = fake
        try:
            done = await backend.complete(request(backend, top_logprobs=10))
            plain = await backend.complete(request(backend))
        finally:
            backend._executor.shutdown(wait=True)
        if built:
            assert (fake.calls[0]["logprobs"], fake.calls[0]["top_logprobs"]) == (True, 10)
            assert done.logprobs == (TokenLogprob("2", -0.25, (("2", -0.25),)),)
        else:  # a model built without all logits cannot answer them: none asked, none returned
            assert "logprobs" not in fake.calls[0] and done.logprobs is None
        assert "logprobs" not in fake.calls[1] and plain.logprobs is None


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_embedded_model_returns_chat_logprobs() -> None:
    if not HAVE_LLAMA:
        pytest.skip(NO_LLAMA)
    backend = LlamaCppBackend(n_ctx=1024, n_threads=1, logprobs=True)
    try:
        done = await backend.complete(request(backend, max_tokens=4, top_logprobs=5))
    finally:
        await backend.aclose()
    assert done.logprobs is not None and len(done.logprobs) == done.completion_tokens
    assert all(t.logprob <= 0 and 1 <= len(t.top) <= 5 for t in done.logprobs)
    assert "".join(t.token for t in done.logprobs) == done.text
