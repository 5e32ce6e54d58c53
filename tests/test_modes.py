"""The paper's ablations (Section 4.1, Table 3) and the score judge, against the fake server.

Per iteration: edit = 1 request (the editor answers from the request alone), advise-noresp = 2 (the
advisor sees only instruction and input), advise = 2, debate = 6 (no judge), full = 8 (judged loop).
The first four run once and keep their edit without a judge.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coevol.domain import Answer, StopReason
from coevol.loop import LoopSettings, Mode, refine
from coevol.prompts.render import Sample
from coevol.testing import FakeOpenAIServer, RecordedRequest
from coevol.testing.responders import EDIT_MARK, CoEvolResponder, accept_up_to, identify_role

from .conftest import coevol_cli, make_engine, read_jsonl

RESPONSE = "Nine is a prime number."
SAMPLE = Sample("Name a prime number.", "Pick one below ten.", RESPONSE)
REQUEST = "### Instruction:\nName a prime number.\n\n### Input:\nPick one below ten."
SAMPLE_TEXT = f"{REQUEST}\n\n### Response:\n{RESPONSE}"
INTRO = "Below is an instruction that describes a task, paired with an input that provides further context."
SUGGESTIONS = "1. Be more specific.\n2. Check the facts.\n3. Add an example."
EDITOR_SYSTEM = (
    "You are a professional editor who possesses a high level of expertise in refining and improving "
    "writing content."
)
ADVISOR_SYSTEM = (
    "You are an experienced advisor who possesses a high level of expertise in summarizing and giving advice."
)
EDITOR_TASK = (
    f"### Writing Suggestions:\n{SUGGESTIONS}\n\n### Previous Response:\n{RESPONSE}\n\n{INTRO}\n\n"
    f"{SAMPLE_TEXT}\n\nReferring to the above writing suggestions (MUST ignore suggestions beyond your "
    "capabilities), modify the previous response and make sure that it appropriately completes the "
    f"request.\n\n{REQUEST}\n\n### Response:"
)


def roles(requests: list[RecordedRequest]) -> list[str]:
    return [identify_role(r.body["messages"]) for r in sorted(requests, key=lambda r: r.start)]


def sent(requests: list[RecordedRequest], role: str) -> list[list[dict[str, str]]]:
    return [r.body["messages"] for r in requests if identify_role(r.body["messages"]) == role]


async def run(server: FakeOpenAIServer, settings: LoopSettings, sample: Sample = SAMPLE) -> Any:
    engine = await make_engine(server)
    try:
        return await refine(sample, engine.dispatcher, engine.prompts, settings)
    finally:
        await engine.aclose()


@pytest.mark.parametrize(
    ("mode", "order"),
    [
        ("edit", ["editor"]),
        ("advise-noresp", ["advisor", "editor"]),
        ("advise", ["advisor", "editor"]),
        ("debate", ["debaters", "debaters", "debaters", "debaters", "advisor", "editor"]),
        ("full", ["debaters"] * 4 + ["advisor", "editor", "judge", "judge"]),
    ],
)
async def test_requests_per_iteration(mode: Mode, order: list[str]) -> None:
    # The judge would accept every edit: only the full loop asks it, and it iterates K times.
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(9))) as server:
        result = await run(server, LoopSettings(max_rounds=3, mode=mode))
        iterations = 3 if mode == "full" else 1
        assert len(server.requests) == len(order) * iterations
        got = [("debaters" if r in ("positive", "critical") else r) for r in roles(server.requests)]
        assert got == order * iterations
        assert len(result.iterations) == iterations
        assert all(it.accepted for it in result.iterations)
    if mode == "full":
        assert (result.stop_reason, result.accepted_edits) == (StopReason.MAX_ROUNDS, 3)
        assert result.response == RESPONSE + EDIT_MARK * 3
    else:
        assert (result.stop_reason, result.accepted_edits) == (StopReason.SINGLE_PASS, 1)
        assert result.iterations[0].judge is None
        assert result.response == ("A fresh answer." if mode == "edit" else RESPONSE + EDIT_MARK)


@pytest.mark.parametrize("mode", ["edit", "advise-noresp", "advise", "debate"])
async def test_ablations_keep_their_edit_even_when_the_judge_would_reject_it(mode: Mode) -> None:
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(0))) as server:
        result = await run(server, LoopSettings(mode=mode))
        assert "judge" not in roles(server.requests)
    assert result.accepted_edits == 1 and result.response != RESPONSE


async def test_full_mode_stops_at_the_first_rejected_edit() -> None:
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as server:
        result = await run(server, LoopSettings(mode="full"))
        assert len(server.requests) == 8 * 2
    assert (result.response, result.stop_reason) == (RESPONSE + EDIT_MARK, StopReason.TURNED_DOWN)


async def test_edit_mode_sends_the_editor_the_request_alone() -> None:
    async with FakeOpenAIServer(CoEvolResponder()) as server:
        result = await run(server, LoopSettings(mode="edit"))
        [messages] = [r.body["messages"] for r in server.requests]
    assert messages == [
        {"role": "system", "content": EDITOR_SYSTEM},
        {
            "role": "user",
            "content": f"{INTRO} Write a response that appropriately completes the request.\n\n"
            f"{REQUEST}\n\n### Response:",
        },
    ]
    assert RESPONSE not in json.dumps(messages)
    it = result.iterations[0]
    assert (it.debate, it.suggestions, it.edited, it.previous) == (None, None, "A fresh answer.", RESPONSE)


async def test_advise_noresp_never_shows_the_advisor_the_response() -> None:
    async with FakeOpenAIServer(CoEvolResponder()) as server:
        result = await run(server, LoopSettings(mode="advise-noresp"))
        [advisor] = sent(server.requests, "advisor")
        [editor] = sent(server.requests, "editor")
    assert advisor == [
        {"role": "system", "content": ADVISOR_SYSTEM},
        {
            "role": "user",
            "content": f"{INTRO}\n\n{REQUEST}\n\nPropose no more than 3 writing suggestions for others to "
            "better complete the request. Directly output these suggestions in separate lines without "
            "any foreword or explanation.",
        },
    ]
    assert RESPONSE not in json.dumps(advisor) and "Nine" not in json.dumps(advisor)
    # Paper Section 4.1: only the advisor is restricted; the editor then modifies the response.
    assert editor == [{"role": "system", "content": EDITOR_SYSTEM}, {"role": "user", "content": EDITOR_TASK}]
    assert result.iterations[0].suggestions == Answer(SUGGESTIONS, "stop")


async def test_advise_shows_the_advisor_the_response() -> None:
    async with FakeOpenAIServer(CoEvolResponder()) as server:
        await run(server, LoopSettings(mode="advise"))
        [advisor] = sent(server.requests, "advisor")
        [editor] = sent(server.requests, "editor")
    assert advisor == [
        {"role": "system", "content": ADVISOR_SYSTEM},
        {
            "role": "user",
            "content": f"{INTRO}\n\n{SAMPLE_TEXT}\n\nPropose no more than 3 writing suggestions for "
            "improving the given response. Directly output these suggestions in separate lines without "
            "any foreword or explanation.",
        },
    ]
    assert editor[1]["content"] == EDITOR_TASK


async def test_debate_mode_feeds_the_debate_to_the_advisor() -> None:
    async with FakeOpenAIServer(CoEvolResponder()) as server:
        result = await run(server, LoopSettings(mode="debate"))
        [advisor] = sent(server.requests, "advisor")
    d = result.iterations[0].debate
    assert d is not None
    pos_pred, crt_pred = d.positive_stage1.text, d.critical_stage1.text
    pos_free, crt_free = d.positive_stage2.text, d.critical_stage2.text
    assert pos_pred == "positive round 1 on a response with 0 edits."
    assert crt_free == "critical round 2: the other review has merit in part."
    assert advisor[1]["content"] == (
        f"{INTRO}\n\n{SAMPLE_TEXT}\n\nThe following is a discussion about the given request and response "
        f"by two reviewers.\n\n### Reviewer 1:\n{pos_pred}\n\n### Reviewer 2:\n{crt_pred}\n\n"
        f"### Reviewer 1:\n{pos_free}\n\n### Reviewer 2:\n{crt_free}\n\nExtract and summarize credible "
        "ideas from the above dialogue and rewrite them into no more than 3 writing suggestions for "
        "improving the given response. Directly output these suggestions in separate lines without any "
        "foreword or explanation."
    )


# -- the score judge -----------------------------------------------------------------------------


async def test_score_judge_asks_for_two_scores_and_averages_both_orders() -> None:
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as server:
        result = await run(server, LoopSettings(judge="score"))
        judges = sent(server.requests, "judge")
    assert (result.response, result.accepted_edits, result.stop_reason) == (
        RESPONSE + EDIT_MARK,
        1,
        StopReason.TURNED_DOWN,
    )
    assert len(judges) == 4
    edited = RESPONSE + EDIT_MARK

    def score_task(first: str, second: str) -> str:
        return (
            f"{INTRO}\n\n{REQUEST}\n\n[The Start of Assistant 1's Response]\n{first}\n"
            f"[The End of Assistant 1's Response]\n\n[The Start of Assistant 2's Response]\n{second}\n"
            "[The End of Assistant 2's Response]\n\n[System]\nWe would like to request your feedback on "
            "the performance of two AI assistants in response to the user request displayed above. Please "
            "rate the helpfulness, relevance, accuracy, and level of detail of their responses. Each "
            "assistant receives an overall score on a scale of 1 to 10, where a higher score indicates "
            "better overall performance. Please first output a single line containing only two values "
            "indicating the scores for Assistant 1 and 2, respectively, separated by a space. In the "
            "subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any "
            "potential bias and ensuring that the order in which the responses were presented does not "
            "affect your judgment."
        )

    # Both orders of the first iteration: previous first, then edited first.
    assert sorted(m[1]["content"] for m in judges[:2]) == sorted(
        [score_task(RESPONSE, edited), score_task(edited, RESPONSE)]
    )

    first, second = result.iterations
    j1, j2 = first.judge, second.judge
    assert j1 is not None and j2 is not None
    # The edit wins 8 to 4 in both orders; the next one loses 4 to 8 in both.
    assert [o.verdict for o in j1.orders] == ["4 8", "8 4"]
    assert [o.scores for o in j1.orders] == [(4.0, 8.0), (4.0, 8.0)]
    assert (j1.score_previous, j1.score_edited, first.accepted) == (4.0, 8.0, True)
    assert [o.verdict for o in j2.orders] == ["8 4", "4 8"]
    assert (j2.score_previous, j2.score_edited, second.accepted) == (8.0, 4.0, False)
    trace = first.to_dict()["judge"]
    assert trace["orders"][0]["scores"] == {"previous": 4.0, "edited": 8.0}
    assert (trace["score_previous"], trace["score_edited"]) == (4.0, 8.0)


@pytest.mark.parametrize(
    ("forward", "reverse", "accepted"),
    [
        ("9 3", "9 3", False),  # always prefers Assistant 1: position bias averages to a tie
        ("7 7", "7 7", False),  # a tie is not a win (Eq. 4 is strict)
        ("6 9", "5 8", False),  # edit 9 and 5, previous 6 and 8: 7 each on average
        ("6 9", "9 7", True),  # edit 9 and 9, previous 6 and 7
        ("**Scores:** 6.5, 7", "7, 6.5", True),  # decorated first lines still parse
    ],
)
async def test_score_judge_averages_both_orders_with_the_strict_rule(
    forward: str, reverse: str, accepted: bool
) -> None:
    def responder(body: dict[str, Any]) -> str:
        if identify_role(body["messages"]) == "judge":
            task = body["messages"][-1]["content"]
            assert "scale of 1 to 10" in task
            edited_first = f"Assistant 1's Response]\n{RESPONSE}{EDIT_MARK}\n" in task
            return f"{reverse if edited_first else forward}\nAn explanation naming Assistant 2."
        return CoEvolResponder()(body)

    async with FakeOpenAIServer(responder) as server:
        result = await run(server, LoopSettings(judge="score", max_rounds=1))
    assert result.iterations[0].accepted is accepted
    assert result.response == (RESPONSE + EDIT_MARK if accepted else RESPONSE)


# -- the command line ----------------------------------------------------------------------------

ROWS: list[dict[str, Any]] = [
    {"id": "r1", "instruction": "Name a prime number.", "input": "", "output": "9"},
    {"id": "r2", "instruction": "Name a colour.", "input": "", "output": "Blue", "extra": [1]},
]


@pytest.mark.parametrize(
    ("mode", "per_row", "outputs"),
    [
        ("edit", 1, ["A fresh answer.", "A fresh answer."]),
        ("advise-noresp", 2, ["9" + EDIT_MARK, "Blue" + EDIT_MARK]),
        ("advise", 2, ["9" + EDIT_MARK, "Blue" + EDIT_MARK]),
        ("debate", 6, ["9" + EDIT_MARK, "Blue" + EDIT_MARK]),
        ("full", 8 * 2, ["9" + EDIT_MARK, "Blue" + EDIT_MARK]),
    ],
)
async def test_cli_mode_flag(tmp_path: Path, mode: str, per_row: int, outputs: list[str]) -> None:
    src = tmp_path / "data.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "out.jsonl"
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as server:
        code, _, err = await coevol_cli(
            "refine", str(src), "-o", str(out), "--base-url", server.base_url, "--model", "m", "-q",
            "--mode", mode,
        )  # fmt: skip
        assert code == 0, err
        assert len(server.requests) == per_row * len(ROWS)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [{**r, "output": o} for r, o in zip(ROWS, outputs, strict=True)]
    trace = read_jsonl(Path(f"{out}.trace.jsonl"))
    stop = "rejected" if mode == "full" else "single_pass"
    assert [t["turns"][0]["stop_reason"] for t in trace] == [stop, stop]
    assert [t["status"] for t in trace] == ["refined", "refined"]


async def test_cli_score_judge(tmp_path: Path) -> None:
    src = tmp_path / "data.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "out.jsonl"
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(2))) as server:
        code, _, err = await coevol_cli(
            "refine", str(src), "-o", str(out), "--base-url", server.base_url, "--model", "m", "-q",
            "--judge", "score",
        )  # fmt: skip
        assert code == 0, err
        judges = sent(server.requests, "judge")
        assert len(judges) == 2 * 3 * 2
        assert all("scale of 1 to 10" in m[-1]["content"] for m in judges)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["output"] for r in rows] == ["9" + EDIT_MARK * 2, "Blue" + EDIT_MARK * 2]
    trace = read_jsonl(Path(f"{out}.trace.jsonl"))
    judge = trace[0]["turns"][0]["iterations"][0]["judge"]
    assert [o["verdict"] for o in judge["orders"]] == ["4 8", "8 4"]
    assert (judge["score_previous"], judge["score_edited"]) == (4.0, 8.0)
