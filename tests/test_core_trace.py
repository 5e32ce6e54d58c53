"""The typed trace of a small handcrafted run, pinned exactly, and its round trips.

One alpaca example, K = 2: iteration 1's judge answers the forward order unparseably first (a
cut-off answer, re-asked) and then both orders prefer the edit; iteration 2's edit equals the
accepted response, so it ends as ``unchanged`` without a judge call. Every call's finish reason is
in the trace, and the store's replay goes through the same schema.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from coevol.conversation import ConversationSettings
from coevol.domain import Example, RoleRoute, Status, TraceRecord, Turn
from coevol.errors import TraceSchemaError
from coevol.loop import LoopSettings
from coevol.multiturn import ExampleOutcome, refine_example
from coevol.prompts.templates import load_prompts
from coevol.testing import Reply

from .core_support import Agents, Script

PROMPTS = load_prompts()
ROW = {"id": "p-1", "instruction": "Name a prime number.", "input": "", "output": "Nine."}
EXAMPLE = Example(4, 5, "alpaca", [Turn("user", "Name a prime number."), Turn("assistant", "Nine.")], ROW)
ROLES = {"judge": RoleRoute("gpt-judge", "http://judge.example/v1"), "editor": RoleRoute("m", "http://a/v1")}


def judge(first: str, second: str, attempt: int) -> Script:
    if first == "Nine.":  # forward: the previous response first
        return Reply("Let me think", finish_reason="length") if attempt == 0 else "<assistant 2>\nShorter."
    return "<assistant 1>\nRight."


def script() -> Agents:
    return Agents(
        {
            "positive": ["pos 1.1", "pos 1.2", "pos 2.1", "pos 2.2"],
            "critical": ["crt 1.1", Reply("crt 1.2 cut", finish_reason="length"), "crt 2.1", "crt 2.2"],
            "advisor": ["  1. Say two.\n", Reply("1. Keep it.", finish_reason=None)],  # type: ignore[arg-type]
            "editor": ["### Response:\nTwo.", "Two. "],
        },
        judge=judge,
    )


def a(text: str, finish: str | None = "stop") -> dict[str, Any]:
    return {"text": text, "finish_reason": finish}


def u(calls: int) -> dict[str, int]:
    return {"prompt_tokens": 10 * calls, "completion_tokens": calls, "calls": calls}


EXPECTED: dict[str, Any] = {
    "schema": "coevol.trace/3",
    "index": 4,
    "line": 5,
    "status": "refined",
    "accepted_rounds": 1,
    "turns": [
        {
            "turn": 1,
            "instruction": "Name a prime number.",
            "input": "",
            "original": "Nine.",
            "final": "Two.",
            "accepted_rounds": 1,
            "stop_reason": "unchanged",
            "iterations": [
                {
                    "iteration": 1,
                    "previous": "Nine.",
                    "debate": {
                        "positive_stage1": a("pos 1.1"),
                        "critical_stage1": a("crt 1.1"),
                        "positive_stage2": a("pos 1.2"),
                        "critical_stage2": a("crt 1.2 cut", "length"),
                    },
                    "suggestions": a("1. Say two."),
                    "edit": a("### Response:\nTwo."),
                    "edited": "Two.",
                    "judge": {
                        "orders": [
                            {
                                "order": "forward",
                                "attempts": [a("Let me think", "length"), a("<assistant 2>\nShorter.")],
                                "verdict": "assistant 2",
                                "scores": {"previous": 0.0, "edited": 1.0},
                                "error": None,
                            },
                            {
                                "order": "reverse",
                                "attempts": [a("<assistant 1>\nRight.")],
                                "verdict": "assistant 1",
                                "scores": {"previous": 0.0, "edited": 1.0},
                                "error": None,
                            },
                        ],
                        "score_previous": 0.0,
                        "score_edited": 1.0,
                        "skipped_reverse": False,
                    },
                    "accepted": True,
                    "usage": {
                        "positive": u(2),
                        "critical": u(2),
                        "advisor": u(1),
                        "editor": u(1),
                        "judge": u(3),
                    },
                },
                {
                    "iteration": 2,
                    "previous": "Two.",
                    "debate": {
                        "positive_stage1": a("pos 2.1"),
                        "critical_stage1": a("crt 2.1"),
                        "positive_stage2": a("pos 2.2"),
                        "critical_stage2": a("crt 2.2"),
                    },
                    "suggestions": a("1. Keep it.", None),
                    "edit": a("Two. "),
                    "edited": "Two.",
                    "judge": None,
                    "accepted": False,
                    "usage": {"positive": u(2), "critical": u(2), "advisor": u(1), "editor": u(1)},
                },
            ],
            "failure": None,
        }
    ],
    "usage": {"positive": u(4), "critical": u(4), "advisor": u(2), "editor": u(2), "judge": u(3)},
    "failure": None,
    "roles": {
        "judge": {"model": "gpt-judge", "endpoint": "http://judge.example/v1"},
        "editor": {"model": "m", "endpoint": "http://a/v1"},
    },
    "id": "p-1",
}


async def run() -> ExampleOutcome:
    return await refine_example(
        EXAMPLE, script(), PROMPTS, LoopSettings(max_rounds=2), ConversationSettings(), roles=ROLES
    )


async def test_the_trace_of_a_handcrafted_run_is_exactly_this() -> None:
    outcome = await run()
    assert outcome.record.to_dict() == EXPECTED
    assert outcome.status is Status.REFINED and outcome.accepted_edits == 1 and outcome.failure is None
    assert [t.content for t in outcome.turns] == ["Name a prime number.", "Two."]
    assert outcome.pairs == [
        {
            "prompt": [{"role": "user", "content": "Name a prime number."}],
            "chosen": [{"role": "assistant", "content": "Two."}],
            "rejected": [{"role": "assistant", "content": "Nine."}],
            "judge": EXPECTED["turns"][0]["iterations"][0]["judge"]["orders"],
        }
    ]


async def test_round_trips_through_json_the_dict_and_the_store_payload() -> None:
    outcome = await run()
    line = orjson.dumps(outcome.record.to_dict())
    assert TraceRecord.from_dict(orjson.loads(line)) == outcome.record
    assert TraceRecord.from_dict(EXPECTED).to_dict() == EXPECTED
    payload = orjson.loads(orjson.dumps(outcome.to_payload()))
    assert ExampleOutcome.from_payload(payload) == outcome


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        {"status": "refined", "turns": [], "trace": {"index": 0}, "pairs": []},  # a coevol 0.1 payload
        {"record": {**EXPECTED, "schema": "coevol.trace/1"}, "turns": [], "pairs": []},
        {"record": EXPECTED, "turns": "abc", "pairs": []},
        {"record": EXPECTED, "turns": [["assistant", "x"]], "pairs": []},
        {"record": EXPECTED, "turns": [["assistant", None, ""]], "pairs": []},
    ],
)
def test_a_stored_payload_of_another_shape_is_refused(payload: Any) -> None:
    with pytest.raises(TraceSchemaError):
        ExampleOutcome.from_payload(payload)


def mutate(path: list[Any], value: Any) -> dict[str, Any]:
    record = copy.deepcopy(EXPECTED)
    target: Any = record
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return record


IT = ["turns", 0, "iterations", 0]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["schema"], None),
        (["status"], "great"),
        (["index"], "4"),
        (["turns"], {"0": {}}),
        (["turns", 0, "stop_reason"], "bored"),
        (["turns", 0, "final"], 5),
        ([*IT, "debate", "positive_stage1", "text"], ["x"]),
        ([*IT, "debate"], ["x"]),
        ([*IT, "judge", "orders", 0, "order"], "sideways"),
        ([*IT, "judge", "orders", 0], ["x"]),
        ([*IT, "judge", "score_edited"], "1.0"),
        ([*IT, "judge", "margin"], "0"),
        ([*IT, "judge", "orders", 0, "probs"], {"token": "2", "p1": "0.1", "p2": 0.9}),
        ([*IT, "judge", "orders", 0, "probs"], {"token": 2, "p1": 0.1, "p2": 0.9}),
        ([*IT, "usage"], [1]),
        (["roles"], ["judge"]),
        (["failure"], {"type": "ServerError"}),
    ],
)
def test_a_malformed_trace_line_is_refused_as_a_whole(path: list[Any], value: Any) -> None:
    with pytest.raises(TraceSchemaError):
        TraceRecord.from_dict(mutate(path, value))


def test_a_version_2_line_still_reads_and_is_rewritten_as_version_3() -> None:
    """0.2 wrote coevol.trace/2; schema 3 only added the tree, so such a line reads as it was."""
    record = TraceRecord.from_dict({**EXPECTED, "schema": "coevol.trace/2"})
    assert record.to_dict() == EXPECTED and record.turns[0].tree is None


@pytest.mark.parametrize(
    "tree",
    [
        {"settings": {}, "nodes": [{"id": "0", "parent": None, "depth": 0}]},
        {"settings": {}, "nodes": [{"id": 0, "parent": None, "depth": 0, "critiques": [{"answer": "x"}]}]},
        {"settings": {}, "nodes": [{"id": 0, "depth": 0, "value": "high"}]},
        {"settings": {}, "nodes": [{"id": 0, "depth": 0, "critiques": [], "shown": True}]},
        {"settings": [], "nodes": []},
        {"settings": {}, "nodes": [], "path": ["0"]},
    ],
)
def test_a_malformed_tree_is_refused_as_a_whole(tree: dict[str, Any]) -> None:
    with pytest.raises(TraceSchemaError):
        TraceRecord.from_dict(mutate(["turns", 0, "tree"], tree))


def test_the_judge_prob_fields_round_trip_and_are_left_out_when_unused() -> None:
    """``--judge prob``'s fields are written only when set, so a verdict run's lines keep their bytes."""
    record = mutate([*IT, "judge", "margin"], 0.1)
    record["turns"][0]["iterations"][0]["judge"]["orders"][0]["probs"] = {
        "token": "2",
        "p1": 0.25,
        "p2": 0.75,
        "top": [["2", -0.29], ["1", -1.39]],
        "line": "<assistant 2>",
    }
    parsed = TraceRecord.from_dict(record)
    judge = parsed.turns[0].iterations[0].judge
    assert judge is not None and judge.margin == 0.1
    probs = judge.orders[0].probs
    assert probs is not None and probs.position1 == 0.25 and probs.top == (("2", -0.29), ("1", -1.39))
    assert parsed.to_dict() == record
    assert "probs" not in EXPECTED["turns"][0]["iterations"][0]["judge"]["orders"][0]
