"""The declared call plan is what the agents send: the real loop, recorded, for every mode."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from coevol.config import Config
from coevol.domain import COEVOL_ROLES, BadRow, Example, Turn
from coevol.llm.types import Message
from coevol.loop import MODES, LoopSettings, Mode, refine
from coevol.plan import PLANNED_ROLES, PlannedCall, call_plan, calls_per_turn, estimate_examples
from coevol.prompts.render import Sample
from coevol.prompts.templates import PromptSet, load_prompts
from coevol.roles.agents import JudgeKind
from coevol.testing import Recorder, ScriptedGenerate

BASE = load_prompts()
TAGGED = PromptSet({name: f"@{name}@\n{text}" for name, text in BASE.texts.items()})
"""Every template starts with its own name, so a recorded message says which template made it."""


def _tag(content: str) -> str:
    return content.split("@", 2)[1]


Seen = tuple[str, str, str, str | None]  # role, system template, task template, memory template


def _seen(role: str, messages: Sequence[Message]) -> Seen:
    system, *history, task = messages
    memory = _tag(history[0]["content"]) if history else None
    return role, _tag(system["content"]), _tag(task["content"]), memory


def _declared(plan: Sequence[PlannedCall]) -> list[Seen]:
    return [(c.role, f"{c.role}_system", c.template, c.memory) for c in plan]


def _judge_answer(template: str, kind: JudgeKind, prefer_edit: bool) -> str:
    """Forward shows the edit second; the judge's answer prefers the edit, or the previous one."""
    edit_first = template.endswith("_reverse")
    first_wins = edit_first == prefer_edit
    if kind == "score":
        return "9 2" if first_wins else "2 9"
    return "<assistant 1>" if first_wins else "<assistant 2>"


def _script(kind: JudgeKind, prefer_edit: bool) -> ScriptedGenerate:
    edits = iter(range(1, 100))

    def answer(role: str, messages: Sequence[Message], attempt: int) -> str:
        if role == "judge":
            return _judge_answer(_tag(messages[-1]["content"]), kind, prefer_edit)
        if role == "editor":
            return f"edit number {next(edits)}"  # never empty, never the previous response
        return f"{role} speaks"

    return ScriptedGenerate(answer)


async def _record(settings: LoopSettings, prefer_edit: bool = True) -> Recorder:
    recorder = Recorder(_script(settings.judge, prefer_edit))
    await refine(Sample("Name a prime.", "", "9"), recorder, TAGGED, settings)
    return recorder


@pytest.mark.parametrize("kind", ["verdict", "score"])
@pytest.mark.parametrize("mode", MODES)
async def test_the_loop_sends_the_declared_plan(mode: Mode, kind: JudgeKind) -> None:
    settings = LoopSettings(max_rounds=2, mode=mode, judge=kind)
    recorder = await _record(settings)
    plan = call_plan(mode, kind)
    iterations = 2 if mode == "full" else 1  # the judge accepts, so full mode runs K = 2 iterations
    assert [_seen(c.role, c.messages) for c in recorder.calls] == _declared(plan) * iterations
    calls = recorder.calls[: len(plan)]
    for i, (call, planned) in enumerate(zip(calls, plan, strict=True)):
        for j, (other, other_planned) in enumerate(zip(calls, plan, strict=True)):
            if i != j:
                declared = planned.concurrent_with == other_planned.template
                assert call.overlaps(other) is declared, (planned.template, other_planned.template)


async def test_early_exit_asks_the_judge_orders_in_turn_and_skips_only_the_skippable_one() -> None:
    plan = call_plan("full")
    rejected = await _record(LoopSettings(max_rounds=1, judge_early_exit=True), prefer_edit=False)
    assert [_seen(c.role, c.messages) for c in rejected.calls] == _declared(
        [c for c in plan if not c.skippable]
    )
    accepted = await _record(LoopSettings(max_rounds=1, judge_early_exit=True), prefer_edit=True)
    assert [_seen(c.role, c.messages) for c in accepted.calls] == _declared(plan)
    forward, reverse = accepted.of("judge")
    assert not forward.overlaps(reverse)


async def test_an_unchanged_edit_ends_the_iteration_before_the_judge_stage() -> None:
    generate = ScriptedGenerate(lambda role, messages, attempt: "9" if role == "editor" else "fine")
    recorder = Recorder(generate)
    await refine(Sample("Name a prime.", "", "9"), recorder, TAGGED, LoopSettings())
    assert [_seen(c.role, c.messages) for c in recorder.calls] == _declared(
        [c for c in call_plan("full") if c.stage != "judge"]
    )


def test_the_plan_reads_like_algorithm_1() -> None:
    stages = [(c.stage, c.role, c.template) for c in call_plan("full")]
    assert stages == [
        ("debate-1", "positive", "positive_round1"),
        ("debate-1", "critical", "critical_round1"),
        ("debate-2", "positive", "positive_round2"),
        ("debate-2", "critical", "critical_round2"),
        ("advise", "advisor", "advisor"),
        ("edit", "editor", "editor"),
        ("judge", "judge", "judge"),
        ("judge", "judge", "judge_reverse"),
    ]
    assert [c.template for c in call_plan("full", "score")][-2:] == ["judge_score", "judge_score_reverse"]
    assert [c.template for c in call_plan("edit")] == ["editor_nosugg"]
    assert [c.template for c in call_plan("advise")] == ["advisor_resp", "editor"]
    assert [c.template for c in call_plan("advise-noresp")] == ["advisor_noresp", "editor"]
    assert [c.template for c in call_plan("debate")] == [c for _, _, c in stages[:6]]
    assert COEVOL_ROLES == PLANNED_ROLES  # the loop's roles are the plan's, in the same order
    assert calls_per_turn("full", 3) == (8, 24)
    assert calls_per_turn("full", 2, early_exit=True) == (7, 16)
    assert calls_per_turn("debate", 3) == (6, 6)


def test_the_estimator_takes_parsed_examples_and_reads_them_once() -> None:
    examples: list[Example | BadRow] = [
        Example(
            index=0,
            line=1,
            fmt="alpaca",
            turns=[Turn("user", "Name a prime."), Turn("assistant", "9")],
            raw={},
        ),
        BadRow(line=2, error="bad", raw="{"),
    ]
    seen: list[Example | BadRow] = []

    def stream() -> Iterator[Example | BadRow]:
        for e in examples:
            seen.append(e)
            yield e

    est = estimate_examples(Config(max_rounds=2), stream(), BASE)
    assert seen == examples
    assert (est.rows, est.examples, est.rejected, est.turns) == (2, 1, 1, 1)
    assert (est.calls_min, est.calls_max) == (8, 16)
    assert est.roles["judge"].completion_tokens_max == 1000 * (2 * 2 + est.reask_calls_max)
