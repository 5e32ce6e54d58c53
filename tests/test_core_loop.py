"""Never write a worse response (issue 7): attacks on the guard before the judge, and context length.

Every test runs the real loop against an in-process script (``tests/core_support.Agents``): the
judge, where one is scripted, is careless and always prefers the edit, so an edit that got past the
guard would be accepted and written. Each test asserts the judge was never asked and the response
stayed the previous one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from coevol.conversation import ConversationSettings
from coevol.domain import Example, Status, StopReason, Turn
from coevol.errors import ContextLengthError, ServerError
from coevol.loop import MODES, LoopSettings, Mode, coevolve, refine, unusable_edit
from coevol.multiturn import refine_example
from coevol.prompts.render import Sample
from coevol.prompts.templates import load_prompts
from coevol.testing import Reply

from .core_support import Agents, Script, debaters

PROMPTS = load_prompts()
PREVIOUS = "Nine is a prime number."
SAMPLE = Sample("Name a prime number.", "", PREVIOUS)
CONTEXT = ContextLengthError("HTTP 400: this model's maximum context length is 4096 tokens", status=400)

UNUSABLE: list[tuple[str, Script]] = [
    ("header only", "### Response:\n   "),
    ("cut off", Reply("Two is the only even prime, and it", finish_reason="length")),
    ("cut off, long", Reply("A much better answer. " * 50, finish_reason="length")),
]
SAME_AS: list[tuple[str, Callable[[str], str]]] = [
    ("identical", lambda previous: previous),
    ("extra whitespace", lambda previous: f"  {previous}\n\n"),
    ("reflowed", lambda previous: previous.replace(" ", "  \n\t", 2)),
    ("with the header", lambda previous: f"### Response:\n{previous}"),
]
UNCHANGED: list[tuple[str, Script]] = [(name, same(PREVIOUS)) for name, same in SAME_AS]


EMPTY: list[tuple[str, Script]] = [("empty", ""), ("whitespace", " \n\t  \n")]
"""No text at all: a failed call (issue 17), asked again, then the sample fails; see below."""


def careless(edits: list[Script], iterations: int = 3) -> Agents:
    agents = Agents({**debaters(iterations), "editor": edits})
    agents.judge = agents.prefers_the_edit
    return agents


# -- the pure guard ------------------------------------------------------------------------------


def test_unusable_edit_rules() -> None:
    from coevol.domain import Answer

    assert unusable_edit(Answer("", "stop"), "", "x") is StopReason.EDIT_UNUSABLE
    assert unusable_edit(Answer("  ", "stop"), "  ", "x") is StopReason.EDIT_UNUSABLE
    assert unusable_edit(Answer("better", "length"), "better", "x") is StopReason.EDIT_UNUSABLE
    assert unusable_edit(Answer("x  y", "stop"), "x  y", "x y") is StopReason.UNCHANGED
    assert unusable_edit(Answer("x y.", None), "x y.", "x y") is None  # punctuation is a change
    assert unusable_edit(Answer("better", None), "better", "x") is None  # no finish reason: usable


# -- the full loop -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "edit"), UNUSABLE, ids=[n for n, _ in UNUSABLE])
async def test_an_unusable_edit_is_never_judged_nor_written(name: str, edit: Script) -> None:
    agents = careless([edit])
    result = await coevolve(SAMPLE, agents, PROMPTS, LoopSettings())
    assert agents.of("judge") == 0
    assert (result.response, result.accepted_edits) == (PREVIOUS, 0)
    assert result.stop_reason is StopReason.EDIT_UNUSABLE and result.failure is None
    [it] = result.iterations
    assert (it.judge, it.accepted) == (None, False)
    assert it.edit is not None and it.edit.text == (edit.text if isinstance(edit, Reply) else edit)
    assert it.edit.truncated is isinstance(edit, Reply)
    assert set(it.usage) == {"positive", "critical", "advisor", "editor"}


@pytest.mark.parametrize(("name", "edit"), UNCHANGED, ids=[n for n, _ in UNCHANGED])
async def test_an_unchanged_edit_ends_the_iteration_without_judge_calls(name: str, edit: Script) -> None:
    agents = careless([edit])
    result = await coevolve(SAMPLE, agents, PROMPTS, LoopSettings())
    assert agents.of("judge") == 0
    assert (result.response, result.accepted_edits) == (PREVIOUS, 0)
    assert result.stop_reason is StopReason.UNCHANGED
    assert [it.judge for it in result.iterations] == [None]


BETTER = "Two is a prime number."
AFTER_BETTER = UNUSABLE + [(name, same(BETTER)) for name, same in SAME_AS]


@pytest.mark.parametrize(("name", "edit"), AFTER_BETTER, ids=[n for n, _ in AFTER_BETTER])
async def test_after_an_accepted_edit_a_bad_one_keeps_the_accepted_response(name: str, edit: Script) -> None:
    better = BETTER
    agents = careless([better, edit])
    result = await coevolve(SAMPLE, agents, PROMPTS, LoopSettings())
    assert agents.of("judge") == 2  # the first iteration's two orders only
    assert (result.response, result.accepted_edits) == (better, 1)
    assert result.stop_reason in (StopReason.EDIT_UNUSABLE, StopReason.UNCHANGED)
    assert [it.accepted for it in result.iterations] == [True, False]
    assert result.iterations[1].previous == better and result.iterations[1].judge is None


async def test_a_usable_edit_still_reaches_the_careless_judge() -> None:
    """The control: the same script with a real edit is judged and accepted K times."""
    agents = careless(["Two.", "Two is prime.", "Two is the only even prime."])
    result = await coevolve(SAMPLE, agents, PROMPTS, LoopSettings())
    assert agents.of("judge") == 6
    assert (result.response, result.accepted_edits) == ("Two is the only even prime.", 3)
    assert result.stop_reason is StopReason.MAX_ROUNDS


async def test_the_example_keeps_its_row_and_writes_no_pair_for_an_unusable_edit() -> None:
    example = Example(0, 1, "alpaca", [Turn("user", SAMPLE.instruction), Turn("assistant", PREVIOUS)], {})
    agents = careless([Reply("Two is", finish_reason="length")])
    outcome = await refine_example(example, agents, PROMPTS, LoopSettings(), ConversationSettings())
    assert agents.of("judge") == 0
    assert outcome.status is Status.KEPT and outcome.failure is None and outcome.pairs == []
    assert [t.content for t in outcome.turns] == [SAMPLE.instruction, PREVIOUS]
    [turn] = outcome.record.turns
    assert (turn.final, turn.stop_reason) == (PREVIOUS, StopReason.EDIT_UNUSABLE)
    edit = outcome.record.to_dict()["turns"][0]["iterations"][0]["edit"]
    assert edit == {"text": "Two is", "finish_reason": "length"}


# -- the single-pass ablations --------------------------------------------------------------------

SINGLE: list[Mode] = [m for m in MODES if m != "full"]


@pytest.mark.parametrize("mode", SINGLE)
@pytest.mark.parametrize(("name", "edit"), UNUSABLE, ids=[n for n, _ in UNUSABLE])
async def test_ablations_never_replace_with_an_unusable_edit(mode: Mode, name: str, edit: Script) -> None:
    agents = careless([edit], iterations=1)
    result = await refine(SAMPLE, agents, PROMPTS, LoopSettings(mode=mode))
    assert agents.of("judge") == 0 and agents.of("editor") == 1
    assert (result.response, result.accepted_edits) == (PREVIOUS, 0)
    assert result.stop_reason is StopReason.EDIT_UNUSABLE
    assert result.iterations[0].accepted is False


@pytest.mark.parametrize("mode", SINGLE)
async def test_ablations_keep_the_original_for_an_unchanged_edit_and_replace_otherwise(mode: Mode) -> None:
    same = await refine(SAMPLE, careless([f" {PREVIOUS} "], 1), PROMPTS, LoopSettings(mode=mode))
    assert (same.response, same.accepted_edits, same.stop_reason) == (PREVIOUS, 0, StopReason.UNCHANGED)
    changed = await refine(SAMPLE, careless(["Two."], 1), PROMPTS, LoopSettings(mode=mode))
    assert (changed.response, changed.accepted_edits, changed.stop_reason) == (
        "Two.",
        1,
        StopReason.SINGLE_PASS,
    )


# -- context length (issue 7) ----------------------------------------------------------------------

PER_ITERATION = 8  # 4 debate calls, advisor, editor, 2 judge orders


def growing(fail_at: int | None, error: Any = CONTEXT, iterations: int = 3) -> Agents:
    """Every edit appends " +" to the previous response; the careless judge accepts each one."""
    agents = Agents(debaters(iterations), edit=lambda previous: previous + " +", fail_at=fail_at, error=error)
    agents.judge = agents.prefers_the_edit
    return agents


def alpaca() -> Example:
    turns = [Turn("user", SAMPLE.instruction), Turn("assistant", PREVIOUS)]
    return Example(
        3, 4, "alpaca", turns, {"id": "c-1", "instruction": SAMPLE.instruction, "output": PREVIOUS}
    )


@pytest.mark.parametrize(("fail_at", "accepted"), [(9, 1), (14, 1), (17, 2), (24, 2)])
async def test_context_length_after_accepted_edits_keeps_the_last_accepted_response(
    fail_at: int, accepted: int
) -> None:
    agents = growing(fail_at)
    outcome = await refine_example(alpaca(), agents, PROMPTS, LoopSettings(), ConversationSettings())
    final = PREVIOUS + " +" * accepted
    assert fail_at <= len(agents.calls) <= fail_at + 1  # a debater's sibling call may have started
    assert outcome.status is Status.REFINED and outcome.accepted_edits == accepted
    assert outcome.failure is None  # the row is refined, not failed
    assert [t.content for t in outcome.turns] == [SAMPLE.instruction, final]
    [turn] = outcome.record.turns
    assert (turn.original, turn.final, turn.accepted_edits) == (PREVIOUS, final, accepted)
    assert turn.stop_reason is StopReason.CONTEXT_LENGTH
    assert turn.failure is not None and turn.failure.is_a(ContextLengthError)
    assert [it.accepted for it in turn.iterations] == [True] * accepted + [False]
    assert [p["chosen"][0]["content"] for p in outcome.pairs] == [
        PREVIOUS + " +" * (i + 1) for i in range(accepted)
    ]


@pytest.mark.parametrize("fail_at", [1, 2, 5, 6, 7, 8])
async def test_context_length_before_any_accepted_edit_rejects_the_row_unchanged(fail_at: int) -> None:
    agents = growing(fail_at)
    outcome = await refine_example(alpaca(), agents, PROMPTS, LoopSettings(), ConversationSettings())
    assert outcome.status is Status.REJECTED and outcome.accepted_edits == 0 and outcome.pairs == []
    assert outcome.failure is not None and outcome.failure.is_a(ContextLengthError)
    assert outcome.failure.message == str(CONTEXT)
    assert [t.content for t in outcome.turns] == [SAMPLE.instruction, PREVIOUS]
    [turn] = outcome.record.turns
    assert (turn.final, turn.stop_reason) == (PREVIOUS, StopReason.CONTEXT_LENGTH)


async def test_another_error_after_accepted_edits_fails_the_row_and_writes_it_unchanged() -> None:
    agents = growing(9, ServerError("HTTP 500 from fake://", status=500))
    outcome = await refine_example(alpaca(), agents, PROMPTS, LoopSettings(), ConversationSettings())
    assert outcome.status is Status.FAILED and outcome.accepted_edits == 0 and outcome.pairs == []
    assert outcome.failure is not None and outcome.failure.is_a(ServerError)
    assert not outcome.failure.is_a(ContextLengthError)
    assert [t.content for t in outcome.turns] == [SAMPLE.instruction, PREVIOUS]
    [turn] = outcome.record.turns
    assert turn.stop_reason is StopReason.ERROR and turn.final == PREVIOUS


CONVERSATION = [
    Turn("system", "Be terse."),
    Turn("user", "Q1"),
    Turn("assistant", "A1"),
    Turn("user", "Q2"),
    Turn("assistant", "A2"),
    Turn("user", "Q3"),
    Turn("assistant", "A3"),
]


def conversation() -> Example:
    return Example(0, 1, "messages", [Turn(t.role, t.content) for t in CONVERSATION], {"id": "conv"})


@pytest.mark.parametrize(("fail_at", "refined"), [(9, 1), (12, 1), (17, 2), (24, 2)])
async def test_context_length_in_a_conversation_keeps_the_earlier_refined_turns(
    fail_at: int, refined: int
) -> None:
    agents = growing(fail_at)
    settings = LoopSettings(max_rounds=1)  # one accepted edit per turn, 8 calls each
    outcome = await refine_example(conversation(), agents, PROMPTS, settings, ConversationSettings())
    expected = ["Be terse.", "Q1", "A1", "Q2", "A2", "Q3", "A3"]
    for i in [2, 4, 6][:refined]:
        expected[i] += " +"
    assert [t.content for t in outcome.turns] == expected
    assert outcome.status is Status.REFINED and outcome.accepted_edits == refined
    traces = outcome.record.turns
    assert [t.turn for t in traces] == [2, 4, 6][: refined + 1]  # later turns are not attempted
    assert [t.stop_reason for t in traces] == [StopReason.MAX_ROUNDS] * refined + [StopReason.CONTEXT_LENGTH]
    assert traces[-1].final == traces[-1].original and traces[-1].failure is not None
    assert traces[-1].failure.is_a(ContextLengthError)
    assert len(outcome.pairs) == refined


@pytest.mark.parametrize("fail_at", [1, 8])
async def test_context_length_in_a_conversations_first_turn_rejects_it(fail_at: int) -> None:
    outcome = await refine_example(
        conversation(), growing(fail_at), PROMPTS, LoopSettings(max_rounds=1), ConversationSettings()
    )
    assert outcome.status is Status.REJECTED
    assert [t.content for t in outcome.turns] == [t.content for t in CONVERSATION]


async def test_context_length_after_only_kept_turns_rejects_the_conversation() -> None:
    """Turn 1 is kept (the judge prefers the original), turn 2 hits the limit: nothing was accepted."""
    agents = Agents(
        {**debaters(3), "editor": ["A1 +"]}, judge=lambda a, b, n: "<equal>", fail_at=9, error=CONTEXT
    )
    outcome = await refine_example(
        conversation(), agents, PROMPTS, LoopSettings(max_rounds=1), ConversationSettings()
    )
    assert outcome.status is Status.REJECTED
    assert [t.stop_reason for t in outcome.record.turns] == [
        StopReason.TURNED_DOWN,
        StopReason.CONTEXT_LENGTH,
    ]
    assert [t.content for t in outcome.turns] == [t.content for t in CONVERSATION]


# -- an answer with no text is a failed call (issue 17) ----------------------------------------------


@pytest.mark.parametrize(("name", "empty"), EMPTY, ids=[n for n, _ in EMPTY])
@pytest.mark.parametrize("role", ["positive", "critical", "advisor", "editor"])
async def test_a_role_answering_no_text_is_asked_again_then_fails_the_sample(
    role: str, name: str, empty: str
) -> None:
    agents = careless([BETTER])
    agents.answers[role] = [empty]
    result = await coevolve(SAMPLE, agents, PROMPTS, LoopSettings())
    assert agents.of(role) == 3  # asked, then asked again twice, each as a new call (attempt 0, 1, 2)
    assert sorted(a for r, a in agents.calls if r == role) == [0, 1, 2]
    assert agents.of("judge") == 0
    assert (result.response, result.accepted_edits) == (PREVIOUS, 0)
    assert result.stop_reason is StopReason.ERROR and result.failure is not None
    assert result.failure.type == "UnusableAnswer"
    assert f"the {role} answered an empty text 3 times" in result.failure.message


@pytest.mark.parametrize("mode", SINGLE)
async def test_ablations_fail_the_sample_when_the_editor_answers_no_text(mode: Mode) -> None:
    agents = careless([""], iterations=1)
    result = await refine(SAMPLE, agents, PROMPTS, LoopSettings(mode=mode))
    assert agents.of("editor") == 3 and result.response == PREVIOUS
    assert result.failure is not None and result.failure.type == "UnusableAnswer"


async def test_one_empty_answer_then_a_usable_one_goes_on() -> None:
    agents = careless(["", BETTER])
    result = await coevolve(SAMPLE, agents, PROMPTS, LoopSettings(max_rounds=1))
    assert (result.response, result.accepted_edits, result.failure) == (BETTER, 1, None)


async def test_stored_empty_answers_are_replayed_then_asked_anew() -> None:
    """``--retry-failed`` after a server answered nothing: the stored empty answers cost nothing and
    do not count, so fresh re-asks follow instead of the same failure forever."""
    from collections.abc import Sequence
    from dataclasses import replace

    from coevol.llm.types import Completion, Message
    from coevol.roles.agents import edit

    agents = careless(["", "", "", "", BETTER])

    async def replaying(
        role: str, messages: Sequence[Message], *, attempt: int = 0, seed: int | None = None, n: int = 1
    ) -> Completion:
        answer = await agents(role, messages, attempt=attempt)
        return replace(answer, cached=attempt < 3)  # attempts 0-2 are in the store

    answer = await edit(replaying, PROMPTS, SAMPLE, "1. Be right.")
    assert answer.text == BETTER and sorted(a for _, a in agents.calls) == [0, 1, 2, 3, 4]
