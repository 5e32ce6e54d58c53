"""The in-process fakes shipped in ``coevol.testing``: scripted generate, recorder, responder, backend.

The equivalence tests pin that an in-process fake behaves like the fake server seen through the HTTP
client: same messages for Algorithm 1, same error class for each fault, same answer for each
answer-shaped fault. Without that, a test moved off HTTP could pass while the real path fails.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import coevol.testing
from coevol.api import arefine_file
from coevol.config import Config
from coevol.domain import StopReason
from coevol.engine.build import build_engine
from coevol.engine.dispatch import Dispatcher, RetryPolicy, Route
from coevol.errors import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    LLMError,
    RateLimitError,
    ServerError,
)
from coevol.llm.openai_http import OpenAIHTTPBackend
from coevol.llm.types import Backend, ChatRequest, Completion, Generate, GenParams, Message
from coevol.loop import LoopSettings, coevolve
from coevol.prompts.render import Sample
from coevol.prompts.templates import load_prompts
from coevol.roles.verdict import SCORE_RANGE
from coevol.testing import (
    EDIT_MARK,
    HOSTILE_TEXT,
    CoEvolResponder,
    FakeOpenAIServer,
    Fault,
    FaultKind,
    GarbleFirstJudge,
    Recorder,
    Reply,
    ResponderBackend,
    ResponderGenerate,
    ScriptedBackend,
    ScriptedGenerate,
    ScriptExhausted,
    accept_up_to,
    always,
    batches,
    cli,
    fakes,
    faults,
    first_attempt_faults,
    identify_role,
    responders,
    server,
)

from .conftest import make_engine

SAMPLE = Sample("Name a prime number.", "", "9")
MSGS: list[Message] = [{"role": "user", "content": "two words"}]
PROMPTS = load_prompts()


def test_every_public_name_of_the_submodules_is_exported_once() -> None:
    names = coevol.testing.__all__
    assert len(names) == len(set(names))
    modules = [batches, cli, fakes, faults, responders, server]
    public = {n for m in modules for n in m.__all__} - {"main", "responder"}  # the CLI's own entries
    assert set(names) == public
    for name in names:
        assert getattr(coevol.testing, name) is not None


def test_the_fakes_satisfy_the_protocols() -> None:
    generates: list[Generate] = [
        ScriptedGenerate(["x"]),
        Recorder(ScriptedGenerate(["x"])),
        ResponderGenerate(CoEvolResponder()),
        CoEvolResponder().as_generate(),
    ]
    backends: list[Backend] = [ScriptedBackend(), ResponderBackend(CoEvolResponder())]
    assert len(generates) == 4 and len(backends) == 2


# --- ScriptedGenerate ----------------------------------------------------------------------------


async def test_a_list_script_answers_in_call_order_then_refuses() -> None:
    generate = ScriptedGenerate(["one", Reply("cut", finish_reason="length", completion_tokens=7)])
    first = await generate("editor", MSGS)
    second = await generate("judge", MSGS, attempt=1)
    assert first == Completion("one", 2, 1, "stop")
    assert second == Completion("cut", 2, 7, "length")
    with pytest.raises(ScriptExhausted, match="2 answers; call 3"):
        await generate("judge", MSGS)


async def test_a_mapping_script_answers_per_role() -> None:
    generate = ScriptedGenerate({"judge": ["<assistant 2>", "<assistant 1>"], "editor": ["new"]})
    assert (await generate("judge", MSGS)).text == "<assistant 2>"
    assert (await generate("editor", MSGS)).text == "new"
    assert (await generate("judge", MSGS)).text == "<assistant 1>"
    with pytest.raises(ScriptExhausted, match="'advisor'"):
        await generate("advisor", MSGS)
    with pytest.raises(ScriptExhausted, match="role 'editor'"):
        await generate("editor", MSGS)


async def test_a_function_script_sees_role_messages_and_attempt_and_may_raise() -> None:
    def script(role: str, messages: Sequence[Message], attempt: int) -> Any:
        if attempt:
            return RateLimitError("HTTP 429", retry_after=2.0)
        return Completion(f"{role}:{messages[-1]['content']}", 1, 2, "stop", cached=True)

    generate = ScriptedGenerate(script)
    assert await generate("advisor", MSGS) == Completion("advisor:two words", 1, 2, "stop", cached=True)
    with pytest.raises(RateLimitError) as info:
        await generate("advisor", MSGS, attempt=1)
    assert info.value.retry_after == 2.0


async def test_scripted_calls_yield_so_concurrent_calls_overlap() -> None:
    calls = Recorder(ScriptedGenerate(["a", "b"]))
    await asyncio.gather(calls("positive", MSGS), calls("critical", MSGS))
    first, second = calls.calls
    assert first.overlaps(second) and calls.peak == 2
    after = Recorder(ScriptedGenerate(["a", "b"]))
    await after("positive", MSGS)
    await after("critical", MSGS)
    assert not after.calls[0].overlaps(after.calls[1]) and after.peak == 1


# --- Recorder ------------------------------------------------------------------------------------


async def test_recorder_keeps_every_call_with_its_answer_or_error() -> None:
    calls = Recorder(ScriptedGenerate(["fine", ServerError("HTTP 500", status=500)]))
    messages: list[Message] = [{"role": "user", "content": "first"}]
    await calls("judge", messages, attempt=2)
    messages.append({"role": "assistant", "content": "later"})  # the caller reuses its list
    with pytest.raises(ServerError):
        await calls("editor", messages)
    ok, failed = calls.calls
    assert (ok.role, ok.attempt, ok.text, ok.error) == ("judge", 2, "fine", None)
    assert ok.messages == ({"role": "user", "content": "first"},)
    assert failed.text is None and isinstance(failed.error, ServerError)
    assert len(failed.messages) == 2
    assert calls.roles() == ["judge", "editor"]
    assert calls.of("editor") == [failed]
    assert calls.in_flight == 0


# --- Algorithm 1 in-process ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "rounds", "stop"), [(0, 0, "rejected"), (1, 1, "rejected"), (5, 3, "max_rounds")]
)
async def test_coevolve_on_the_responder_in_process(accept: int, rounds: int, stop: str) -> None:
    calls = Recorder(CoEvolResponder(accept_up_to(accept)).as_generate())
    result = await coevolve(SAMPLE, calls, PROMPTS, LoopSettings(max_rounds=3))
    assert result.response == "9" + EDIT_MARK * rounds
    assert result.accepted_edits == rounds
    assert result.stop_reason == stop
    iterations = len(result.iterations)
    assert Counter(calls.roles()) == {
        "positive": 2 * iterations,
        "critical": 2 * iterations,
        "advisor": iterations,
        "editor": iterations,
        "judge": 2 * iterations,
    }
    # The roles the loop named are the roles the prompts play.
    assert all(identify_role(list(c.messages)) == c.role for c in calls.calls)
    pos, crt = calls.of("positive")[0], calls.of("critical")[0]
    assert pos.overlaps(crt), "the two debaters are asked together"
    judges = calls.of("judge")
    assert judges[0].overlaps(judges[1]), "both judge orders are asked together"


async def test_in_process_and_http_runs_send_the_same_messages() -> None:
    responder = CoEvolResponder(accept_up_to(1))
    calls = Recorder(responder.as_generate())
    local = await coevolve(SAMPLE, calls, PROMPTS, LoopSettings())
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as server:
        engine = await make_engine(server)
        try:
            remote = await coevolve(SAMPLE, engine.dispatcher, engine.prompts, LoopSettings())
        finally:
            await engine.aclose()
    assert (local.response, local.accepted_edits, local.stop_reason) == (
        remote.response,
        remote.accepted_edits,
        remote.stop_reason,
    )

    def key(messages: Sequence[Message]) -> str:
        return repr([sorted(m.items()) for m in messages])

    assert sorted(key(c.messages) for c in calls.calls) == sorted(
        key(r.body["messages"]) for r in server.requests
    )


async def test_a_re_ask_reaches_the_responder_as_the_same_body() -> None:
    calls = Recorder(ResponderGenerate(GarbleFirstJudge(CoEvolResponder(accept_up_to(0)))))
    result = await coevolve(SAMPLE, calls, PROMPTS, LoopSettings())
    assert result.stop_reason == "rejected"
    assert [c.attempt for c in calls.of("judge")] == [0, 0, 1, 1]


async def test_judge_early_exit_in_score_mode_skips_the_reverse_order_only_when_decided() -> None:
    def run(forward: str, reverse: str | None) -> ScriptedGenerate:
        judge = [forward] if reverse is None else [forward, reverse]
        return ScriptedGenerate(
            {
                "positive": ["fine", "still fine"],
                "critical": ["weak", "still weak"],
                "advisor": ["1. Say 7."],
                "editor": ["7"],
                "judge": judge,
            }
        )

    settings = LoopSettings(max_rounds=1, judge="score", judge_early_exit=True)
    lo, hi = SCORE_RANGE
    # forward shows the previous response first: the widest lead the scale allows leaves no way
    # for the edit to win.
    decided = Recorder(run(f"{hi:g} {lo:g}", None))
    result = await coevolve(SAMPLE, decided, PROMPTS, settings)
    judge = result.iterations[0].judge
    assert judge is not None and judge.skipped_reverse
    assert (result.response, result.stop_reason) == ("9", StopReason.TURNED_DOWN)
    assert decided.roles().count("judge") == 1
    # A lead two points short of that, the reverse order can still overturn: it must be asked, and
    # here it wins.
    open_ = Recorder(run(f"{hi - 1:g} {lo + 1:g}", f"{hi:g} {lo:g}"))
    result = await coevolve(SAMPLE, open_, PROMPTS, settings)
    judge = result.iterations[0].judge
    assert judge is not None and not judge.skipped_reverse
    assert open_.roles().count("judge") == 2
    assert (judge.score_previous, judge.score_edited) == ((hi - 1 + lo) / 2, (lo + 1 + hi) / 2)
    assert (result.response, result.stop_reason) == ("7", StopReason.MAX_ROUNDS)


async def test_a_failing_call_in_process_is_recorded_not_raised() -> None:
    generate = ScriptedGenerate(
        {
            "positive": ["fine", "fine"],
            "critical": ["weak", "weak"],
            "advisor": [ContextLengthError("HTTP 400: maximum context length", status=400)],
        }
    )
    result = await coevolve(SAMPLE, generate, PROMPTS, LoopSettings())
    assert result.response == "9"
    assert result.stop_reason is StopReason.CONTEXT_LENGTH
    assert result.failure is not None


# --- faults: in-process equals HTTP --------------------------------------------------------------

ERROR_FAULTS = [
    Fault(FaultKind.RATE_LIMIT, retry_after=7),
    Fault(FaultKind.RATE_LIMIT, retry_after=None),
    Fault(FaultKind.SERVER_ERROR),
    Fault(FaultKind.BAD_REQUEST),
    Fault(FaultKind.AUTH),
    Fault(FaultKind.CONTEXT_LENGTH),
    Fault(FaultKind.HOSTILE_ERROR),
    Fault(FaultKind.HOSTILE_ERROR, status=502),
    Fault(FaultKind.HOSTILE_ERROR, status=404),
    Fault(FaultKind.GARBAGE),
    Fault(FaultKind.DISCONNECT),
    Fault(FaultKind.ENDLESS, hang_seconds=0.05),
]
ANSWER_FAULTS = [
    Fault(FaultKind.EMPTY),
    Fault(FaultKind.TRUNCATED),
    Fault(FaultKind.TRUNCATED, keep=2),
    Fault(FaultKind.HUGE, size=1001),
    Fault(FaultKind.STALL, hang_seconds=0.01),
    Fault(FaultKind.HANG, hang_seconds=0.01),
    Fault(FaultKind.DRIP, interval=0.0005),
]


def request_for(endpoint: str) -> ChatRequest:
    return ChatRequest(endpoint, "fake-model", ({"role": "user", "content": "say something long"},))


def words(body: dict[str, Any]) -> str:
    return "the answer has several words"


async def outcome(backend: Backend) -> Completion | LLMError:
    try:
        return await backend.complete(request_for(backend.endpoint))
    except LLMError as exc:
        return exc


@pytest.mark.parametrize("fault", ERROR_FAULTS + ANSWER_FAULTS, ids=lambda f: f"{f.kind}-{f.status}")
async def test_a_fault_in_process_is_what_the_http_client_makes_of_it(fault: Fault) -> None:
    local = await outcome(ResponderBackend(words, faults=always(fault)))
    async with FakeOpenAIServer(words, faults=always(fault)) as server:
        http = OpenAIHTTPBackend(server.base_url)
        try:
            remote = await outcome(http)
        finally:
            await http.aclose()
    assert type(local) is type(remote)
    if isinstance(local, LLMError):
        assert isinstance(remote, LLMError)
        assert local.status == remote.status
        assert local.retryable == remote.retryable
        if isinstance(local, RateLimitError):
            assert isinstance(remote, RateLimitError)
            assert local.retry_after == remote.retry_after
    else:
        assert local == remote


async def test_hostile_error_text_reaches_the_error_in_process() -> None:
    local = await outcome(ResponderBackend(words, faults=always(FaultKind.HOSTILE_ERROR)))
    assert isinstance(local, BadRequestError) and HOSTILE_TEXT in str(local)
    auth = await outcome(ResponderBackend(words, faults=always(Fault(FaultKind.HOSTILE_ERROR, status=401))))
    assert isinstance(auth, AuthenticationError)


async def test_a_raising_responder_is_a_server_error_in_process() -> None:
    def broken(body: dict[str, Any]) -> str:
        raise KeyError("template")

    error = await outcome(ResponderBackend(broken))
    assert isinstance(error, ServerError) and "KeyError" in str(error)


async def test_first_attempt_faults_let_the_retry_through_in_process() -> None:
    generate = Recorder(
        ResponderGenerate(words, faults=first_attempt_faults([FaultKind.DISCONNECT], rate=1.0))
    )
    with pytest.raises(APIConnectionError):
        await generate("judge", MSGS)
    assert (await generate("judge", MSGS, attempt=1)).text == "the answer has several words"
    with pytest.raises(APIConnectionError):  # another body: its own first attempt
        await generate("judge", [{"role": "user", "content": "other"}])
    assert [c.error is None for c in generate.calls] == [False, True, False]


# --- backends under the dispatcher, and a whole engine without sockets ---------------------------


async def test_dispatcher_retries_faults_on_the_in_process_backend() -> None:
    faults = first_attempt_faults(
        [Fault(FaultKind.RATE_LIMIT, retry_after=0.001), FaultKind.SERVER_ERROR], rate=1.0
    )
    backend = ResponderBackend(words, faults=faults)
    routes = {"judge": Route(backend, "fake-model", GenParams(max_tokens=20))}
    dispatcher = Dispatcher(routes, retry=RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.005))
    answers = await asyncio.gather(
        *(dispatcher("judge", [{"role": "user", "content": str(i)}]) for i in range(6))
    )
    assert {a.text for a in answers} == {"the answer has several words"}
    assert len(backend.calls) == 12  # every body failed once, then passed
    sent = [call.request.body() for call in backend.calls]
    assert all(body["max_tokens"] == 20 for body in sent)
    assert dispatcher.stats.retries == 6


async def test_a_whole_engine_runs_on_an_in_process_backend() -> None:
    base_url = "http://in-process.invalid/v1"
    backend = ResponderBackend(CoEvolResponder(accept_up_to(2)), endpoint=base_url)
    engine = await build_engine(Config(base_url=base_url, model="fake-model"), backends={base_url: backend})
    try:
        result = await coevolve(SAMPLE, engine.dispatcher, engine.prompts, LoopSettings())
    finally:
        await engine.aclose()
    assert result.response == "9" + EDIT_MARK * 2
    assert len(backend.calls) == 8 * 3
    assert backend.closed
    assert {call.request.model for call in backend.calls} == {"fake-model"}


async def test_scripted_backend_defaults_and_counts() -> None:
    backend = ScriptedBackend(delay=0.001)
    answers = await asyncio.gather(*(backend.complete(request_for("x")) for _ in range(3)))
    assert sorted(a.text for a in answers) == ["answer 0", "answer 1", "answer 2"]
    assert answers[0] == Completion("answer 0", 10, 5, "stop")
    assert backend.peak == 3 and backend.in_flight == 0
    times = [at for _, at in backend.calls]
    assert times == sorted(times)
    scripted = ScriptedBackend(lambda request, n: "text" if n == 0 else ServerError("HTTP 503", status=503))
    assert (await scripted.complete(request_for("x"))).text == "text"
    with pytest.raises(ServerError):
        await scripted.complete(request_for("x"))


async def test_a_whole_file_run_needs_no_socket(tmp_path: Path) -> None:
    base_url = "http://in-process.invalid/v1"
    backend = ResponderBackend(CoEvolResponder(accept_up_to(1)), endpoint=base_url)
    rows: list[dict[str, Any]] = [
        {"id": 1, "instruction": "Name a prime number.", "input": "", "output": "9"},
        {"id": 2, "instruction": "Name a colour.", "input": "", "output": "Sky"},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    config = Config(base_url=base_url, model="fake-model")
    run = await arefine_file(src, out, config, backends={base_url: backend})
    assert [json.loads(line) for line in out.read_text("utf-8").splitlines()] == [
        {**r, "output": r["output"] + EDIT_MARK} for r in rows
    ]
    assert (run.summary.rows, run.summary.refined, run.summary.accepted_edits) == (2, 2, 2)
    assert len(backend.calls) == 2 * 16  # two iterations a row: one accepted, one rejected
