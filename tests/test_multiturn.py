"""Multi-turn conversations (paper Section 3.2, Appendix B).

Every assistant turn is refined in order; turn t is refined with the already-refined turns before it,
and the agents see the system message plus only the most recent rounds (3 by default). Tool and
function turns are shown but never rewritten. The pure planning functions are pinned with exact
strings; the integration tests run real requests against the deterministic fake server, whose editor
marks every edit with " [edit]" so refined history is visible in the prompts.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from coevol.conversation import ConversationSettings, estimate_tokens, refinable_turns, window_sample
from coevol.domain import StopReason, Turn
from coevol.io.formats import parse_example
from coevol.loop import LoopSettings
from coevol.multiturn import refine_example
from coevol.prompts.render import Sample
from coevol.prompts.templates import load_prompts
from coevol.testing import FakeOpenAIServer, RecordedRequest
from coevol.testing.responders import EDIT_MARK, CoEvolResponder, accept_up_to, identify_role

from .conftest import coevol_cli, make_engine, read_jsonl

PROMPTS = load_prompts()

SYSTEM = "You are a terse math tutor."
CALL = '{"name": "lookup", "arguments": {"q": "pi"}}'
RESULT = '{"pi": 3.14159}'
CONVERSATIONS: list[dict[str, Any]] = [
    {"from": "system", "value": SYSTEM},
    {"from": "human", "value": "round-1 question: what is 1+1?"},
    {"from": "gpt", "value": "round-1 answer: 2", "markdown": False},
    {"from": "human", "value": "round-2 question: and 2+2?"},
    {"from": "gpt", "value": "round-2 answer: 4"},
    {"from": "human", "value": "round-3 question: look up pi"},
    {"from": "function_call", "value": CALL},
    {"from": "observation", "value": RESULT},
    {"from": "gpt", "value": "round-3 answer: 3.14159"},
    {"from": "human", "value": "round-4 question: round it"},
    {"from": "gpt", "value": "round-4 answer: 3.14"},
    {"from": "human", "value": "round-5 question: thanks"},
    {"from": "gpt", "value": "round-5 answer: you are welcome", "markdown": True},
]
ROW: dict[str, Any] = {"id": "conv-1", "conversations": CONVERSATIONS, "source": "unit", "tools": "[]"}
ASSISTANT_AT = [2, 4, 8, 10, 12]  # indices of the gpt turns in the parsed conversation


def turns_of(row: dict[str, Any]) -> list[Turn]:
    return parse_example(row, None, index=0, line=1).turns


def user(n: int) -> str:
    return str(CONVERSATIONS[{1: 1, 2: 3, 3: 5, 4: 9, 5: 11}[n]]["value"])


def answer(n: int, edits: int = 0) -> str:
    return str(CONVERSATIONS[ASSISTANT_AT[n - 1]]["value"]) + EDIT_MARK * edits


def window(t: int, edits: int = 0, rounds: int = 3) -> str:
    """The expected instruction for assistant turn ``t`` (1-based round), earlier answers with ``edits``."""
    lines = {
        1: [f"USER: {user(1)}"],
        2: [f"USER: {user(2)}"],
        3: [f"USER: {user(3)}", f"FUNCTION_CALL: {CALL}", f"OBSERVATION: {RESULT}"],
        4: [f"USER: {user(4)}"],
        5: [f"USER: {user(5)}"],
    }
    shown: list[str] = []
    for r in range(max(1, t - rounds + 1), t):
        shown += [*lines[r], f"ASSISTANT: {answer(r, edits)}"]
    return "\n".join([f"SYSTEM: {SYSTEM}", *shown, *lines[t]])


# -- pure planning -----------------------------------------------------------------------------


def test_refinable_turns_are_the_assistant_turns_after_a_user_turn() -> None:
    turns = turns_of(ROW)
    assert refinable_turns(turns, ConversationSettings()) == ASSISTANT_AT
    opening = [Turn("system", "s"), Turn("assistant", "Hello, how can I help?"), *turns[1:3]]
    assert refinable_turns(opening, ConversationSettings()) == [3]  # a greeting before any user turn
    tool_only = [Turn("user", "q"), Turn("assistant", ""), Turn("tool", "42"), Turn("assistant", "a")]
    assert refinable_turns(tool_only, ConversationSettings()) == [3]


def test_refinable_turns_bounds() -> None:
    # Every text is 4 characters, one estimated token, so the conversation up to turn i has i + 1.
    turns = [Turn(r, "abcd") for r in ["system", "user", "assistant"] + ["user", "assistant"] * 3]
    assert estimate_tokens("abcd") == 1 and estimate_tokens("abcde") == 2 and estimate_tokens("") == 0
    assert refinable_turns(turns, ConversationSettings()) == [2, 4, 6, 8]
    assert refinable_turns(turns, ConversationSettings(max_turns=2)) == [2, 4]
    assert refinable_turns(turns, ConversationSettings(max_turns=1)) == [2]
    assert refinable_turns(turns, ConversationSettings(max_tokens=5)) == [2, 4]  # 5 tokens is not past 5
    assert refinable_turns(turns, ConversationSettings(max_tokens=6)) == [2, 4]
    assert refinable_turns(turns, ConversationSettings(max_tokens=7)) == [2, 4, 6]
    assert refinable_turns(turns, ConversationSettings(max_tokens=2)) == []
    assert refinable_turns(turns, ConversationSettings(max_turns=3, max_tokens=100)) == [2, 4, 6]
    # An alpaca input is part of the conversation's length.
    alpaca = [Turn("user", "abcd", input="x" * 40), Turn("assistant", "abcd")]
    assert refinable_turns(alpaca, ConversationSettings(max_tokens=11)) == []
    assert refinable_turns(alpaca, ConversationSettings(max_tokens=12)) == [1]


def test_first_round_without_system_is_the_papers_single_turn_sample() -> None:
    turns = [Turn("user", "Sum.", input="1, 2"), Turn("assistant", "3")]
    assert window_sample(PROMPTS, turns, 1) == Sample("Sum.", "1, 2", "3")
    turns = [Turn("user", "Q1"), Turn("assistant", "A1"), Turn("user", "Q2"), Turn("assistant", "A2")]
    assert window_sample(PROMPTS, turns, 1) == Sample("Q1", "", "A1")
    # A window of one round shows only the current user turn: the single-turn sample again.
    assert window_sample(PROMPTS, turns, 3, window_rounds=1) == Sample("Q2", "", "A2")


@pytest.mark.parametrize("t", [1, 2, 3, 4, 5])
def test_window_shows_system_and_the_last_three_rounds(t: int) -> None:
    turns = turns_of(ROW)
    sample = window_sample(PROMPTS, turns, ASSISTANT_AT[t - 1])
    assert sample == Sample(window(t), "", answer(t))


def test_window_exact_text_for_round_four() -> None:
    sample = window_sample(PROMPTS, turns_of(ROW), 10)
    assert sample.instruction == (
        "SYSTEM: You are a terse math tutor.\n"
        "USER: round-2 question: and 2+2?\n"
        "ASSISTANT: round-2 answer: 4\n"
        "USER: round-3 question: look up pi\n"
        'FUNCTION_CALL: {"name": "lookup", "arguments": {"q": "pi"}}\n'
        'OBSERVATION: {"pi": 3.14159}\n'
        "ASSISTANT: round-3 answer: 3.14159\n"
        "USER: round-4 question: round it"
    )
    assert "round-1" not in sample.instruction


@pytest.mark.parametrize(("rounds", "oldest"), [(1, 5), (2, 4), (3, 3), (4, 2), (5, 1), (9, 1)])
def test_window_rounds_is_configurable(rounds: int, oldest: int) -> None:
    sample = window_sample(PROMPTS, turns_of(ROW), 12, window_rounds=rounds)
    assert sample.instruction == window(5, rounds=rounds)
    assert sample.instruction.startswith(f"SYSTEM: {SYSTEM}\nUSER: round-{oldest} question")


def test_history_lines_use_the_history_turn_template(tmp_path: Path) -> None:
    (tmp_path / "history_turn.txt").write_text("<{role}> {content}")
    prompts = load_prompts(tmp_path)
    turns = [Turn("user", "Q1"), Turn("assistant", "A1"), Turn("user", "Q2"), Turn("assistant", "A2")]
    assert window_sample(prompts, turns, 3) == Sample("<USER> Q1\n<ASSISTANT> A1\n<USER> Q2", "", "A2")


def test_alpaca_history_keeps_the_input_apart() -> None:
    row = {
        "instruction": "Now add 1.",
        "input": "use the last result",
        "output": "6",
        "history": [["Add 2 and 3.", "5"]],
    }
    sample = window_sample(PROMPTS, parse_example(row, None, index=0, line=1).turns, 3)
    assert sample == Sample("USER: Add 2 and 3.\nASSISTANT: 5\nUSER: Now add 1.", "use the last result", "6")


# -- against the fake server ---------------------------------------------------------------------


def by_turn(requests: list[RecordedRequest], per_turn: int) -> list[list[RecordedRequest]]:
    """Turns are refined one after another, so in arrival order each turn's requests are contiguous."""
    reqs = sorted(requests, key=lambda r: r.start)
    assert len(reqs) % per_turn == 0
    return [reqs[i : i + per_turn] for i in range(0, len(reqs), per_turn)]


def text_of(request: RecordedRequest) -> str:
    return "\n".join(m["content"] for m in request.body["messages"])


async def test_each_turn_is_refined_with_the_refined_turns_before_it() -> None:
    example = parse_example(ROW, None, index=0, line=1)
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as server:
        engine = await make_engine(server)
        try:
            outcome = await refine_example(
                example, engine.dispatcher, engine.prompts, LoopSettings(), ConversationSettings()
            )
        finally:
            await engine.aclose()
        # Each turn: one accepted iteration and one rejected one, 8 requests each.
        turns = by_turn(server.requests, 16)

    assert len(turns) == 5
    for t, reqs in enumerate(turns, 1):
        positive = [r for r in reqs if identify_role(r.body["messages"]) == "positive"]
        first = positive[0].body["messages"][1]["content"]
        # Earlier turns are already refined (one edit each); this turn starts from its original text.
        assert first.startswith(
            f"### Instruction:\n{window(t, edits=1)}\n\n### Response:\n{answer(t)}\n\nIn your opinion"
        )
        second_iteration = positive[2].body["messages"][1]["content"]
        assert f"### Response:\n{answer(t, 1)}\n\nIn your opinion" in second_iteration
        for r in reqs:  # every agent of every iteration sees the same window
            text = text_of(r)
            assert f"SYSTEM: {SYSTEM}" in text
            if t >= 4:
                assert "round-1" not in text, "the oldest round left the window"
            if t == 5:
                assert "round-2" not in text
            if t > 1:
                assert f"ASSISTANT: {answer(t - 1, 1)}" in text

    assert outcome.status == "refined" and outcome.accepted_edits == 5
    original = turns_of(ROW)
    assert [t.role for t in outcome.turns] == [t.role for t in original]
    for i, (before, after) in enumerate(zip(original, outcome.turns, strict=True)):
        assert after.content == (before.content + EDIT_MARK if i in ASSISTANT_AT else before.content)
    assert [tt.turn for tt in outcome.record.turns] == ASSISTANT_AT
    for tt in outcome.record.turns:
        assert (tt.accepted_edits, tt.stop_reason) == (1, StopReason.TURNED_DOWN)
        assert [it.accepted for it in tt.iterations] == [True, False]
        assert tt.iterations[0].edited == original[tt.turn].content + EDIT_MARK
        assert (tt.original, tt.final) == (original[tt.turn].content, original[tt.turn].content + EDIT_MARK)
    assert [tt.instruction for tt in outcome.record.turns] == [window(t, edits=1) for t in range(1, 6)]


async def test_window_rounds_setting_reaches_the_agents() -> None:
    example = parse_example(ROW, None, index=0, line=1)
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(0))) as server:
        engine = await make_engine(server)
        try:
            await refine_example(
                example,
                engine.dispatcher,
                engine.prompts,
                LoopSettings(),
                ConversationSettings(window_rounds=2, max_turns=5),
            )
        finally:
            await engine.aclose()
        turns = by_turn(server.requests, 8)
    for t, reqs in enumerate(turns, 1):
        positive = next(r for r in reqs if identify_role(r.body["messages"]) == "positive")
        assert positive.body["messages"][1]["content"].startswith(
            f"### Instruction:\n{window(t, rounds=2)}\n\n### Response:\n{answer(t)}\n\n"
        )


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


MESSAGES_ROW: dict[str, Any] = {
    "id": "m-1",
    "messages": [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi, I am Ann.", "name": "ann"},
        {"role": "assistant", "content": "Hello Ann.", "weight": 0},
        {"role": "user", "content": "What is 6 x 7?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "mul", "arguments": '{"a": 6, "b": 7}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "assistant", "content": "It is 42.", "weight": 1},
    ],
    "split": "train",
}


async def test_cli_keeps_shape_roles_ids_and_extra_fields(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "chat.jsonl", [ROW, MESSAGES_ROW])
    out = tmp_path / "refined.jsonl"
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as server:
        code, _, err = await coevol_cli(
            "refine", str(src), "-o", str(out), "--format", "sharegpt", "--base-url", server.base_url,
            "--model", "m", "-q",
        )  # fmt: skip
        assert code == 0, err
        assert len(server.requests) == 16 * 5  # the messages row is rejected: it is not sharegpt

    expected = copy.deepcopy(ROW)
    for i in ASSISTANT_AT:
        expected["conversations"][i]["value"] += EDIT_MARK
    written = out.read_text().splitlines()
    assert len(written) == 1
    assert json.dumps(json.loads(written[0])) == json.dumps(expected)  # key order too
    rejects = read_jsonl(Path(f"{out}.rejects.jsonl"))
    assert [(r["line"], r["error"]) for r in rejects] == [(2, "row is in messages format, expected sharegpt")]
    trace = read_jsonl(Path(f"{out}.trace.jsonl"))
    assert [(t["id"], t["status"], t["accepted_rounds"]) for t in trace] == [("conv-1", "refined", 5)]
    assert [tt["turn"] for tt in trace[0]["turns"]] == ASSISTANT_AT
    assert [len(tt["iterations"]) for tt in trace[0]["turns"]] == [2] * 5


async def test_cli_messages_with_tool_calls_refines_only_the_answers(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "chat.jsonl", [MESSAGES_ROW])
    out = tmp_path / "refined.jsonl"
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as server:
        code, _, err = await coevol_cli(
            "refine", str(src), "-o", str(out), "--base-url", server.base_url, "--model", "m", "-q"
        )
        assert code == 0, err
        first, second = by_turn(server.requests, 16)  # two answers; the tool call is not refined
    positive = next(r for r in second if identify_role(r.body["messages"]) == "positive")
    assert positive.body["messages"][1]["content"].startswith(
        "### Instruction:\n"
        "SYSTEM: Be kind.\n"
        "USER: Hi, I am Ann.\n"
        f"ASSISTANT: Hello Ann.{EDIT_MARK}\n"
        "USER: What is 6 x 7?\n"
        'FUNCTION_CALL: {"name":"mul","arguments":"{\\"a\\": 6, \\"b\\": 7}"}\n'
        "TOOL: 42\n\n"
        "### Response:\nIt is 42.\n\n"
    )
    assert all("It is 42." not in text_of(r) for r in first)

    expected = copy.deepcopy(MESSAGES_ROW)
    expected["messages"][2]["content"] += EDIT_MARK
    expected["messages"][6]["content"] += EDIT_MARK
    assert json.dumps(json.loads(out.read_text())) == json.dumps(expected)
    trace = read_jsonl(Path(f"{out}.trace.jsonl"))
    assert [tt["turn"] for tt in trace[0]["turns"]] == [2, 6]
    assert trace[0]["id"] == "m-1"


# Up to and including the round-2 answer the conversation is this long (estimated tokens).
THROUGH_ROUND_2 = sum(estimate_tokens(c["value"]) for c in CONVERSATIONS[:5])


@pytest.mark.parametrize(
    ("flags", "refined"),
    [
        (["--max-turns", "2"], [2, 4]),
        (["--max-turns", "1"], [2]),
        (["--window-rounds", "1", "--max-turns", "9"], ASSISTANT_AT),
        (["--max-conv-tokens", str(THROUGH_ROUND_2)], [2, 4]),  # exactly the bound is not past it
        (["--max-conv-tokens", str(THROUGH_ROUND_2 - 1)], [2]),
        (["--max-conv-tokens", "1"], []),
    ],
)
async def test_cli_bounds_the_work_per_conversation(
    tmp_path: Path, flags: list[str], refined: list[int]
) -> None:
    src = write_jsonl(tmp_path / "chat.jsonl", [ROW])
    out = tmp_path / "refined.jsonl"
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as server:
        code, _, err = await coevol_cli(
            "refine", str(src), "-o", str(out), "--base-url", server.base_url, "--model", "m", "-q", *flags
        )
        assert code == 0, err
        assert len(server.requests) == 16 * len(refined)
    row = json.loads(out.read_text())
    expected = copy.deepcopy(ROW)
    for i in refined:
        expected["conversations"][i]["value"] += EDIT_MARK
    assert row == expected
    trace = read_jsonl(Path(f"{out}.trace.jsonl"))
    assert [tt["turn"] for tt in trace[0]["turns"]] == refined
    assert trace[0]["status"] == ("refined" if refined else "kept")
