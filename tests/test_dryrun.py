"""``--dry-run`` estimates: call ranges per mode, and token counts that match the real prompts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from coevol.cli.dryrun import calls_per_turn, estimate, format_estimate
from coevol.config import Config, Price, RoleConfig
from coevol.conversation import ConversationSettings, estimate_tokens
from coevol.domain import Example, Role
from coevol.io.readers import read_examples
from coevol.llm.types import Completion, Message
from coevol.loop import LoopSettings, Mode
from coevol.multiturn import refine_example
from coevol.prompts.templates import load_prompts

from .engine_support import write_jsonl

ROWS: list[dict[str, Any] | str] = [
    {"instruction": "Explain {braces} in Python f-strings.", "input": "", "output": "Use {{ and }}."},
    {"instruction": "Translate to French.", "input": "I miss you very much", "output": "Tu me manques."},
    {
        "conversations": [
            {"from": "system", "value": "You are terse."},
            {"from": "human", "value": "Name a prime."},
            {"from": "gpt", "value": "7"},
            {"from": "human", "value": "And an even one?"},
            {"from": "gpt", "value": "2, the only even prime."},
        ]
    },
]


EDIT = "abcd"
"""The editor's answer: an empty edit is never judged, and four characters add exactly one token to
each judge prompt that quotes it."""


class Recorder:
    """A ``generate`` that answers "" (so no model text enters a prompt) but for the editor, and
    records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Sequence[Message], int]] = []

    async def __call__(
        self, role: str, messages: Sequence[Message], *, attempt: int = 0, seed: int | None = None, n: int = 1
    ) -> Completion:
        self.calls.append((role, messages, attempt))
        return Completion(EDIT if role == "editor" else "")


def tokens(messages: Sequence[Message]) -> int:
    return sum(estimate_tokens(m["content"]) for m in messages)


@pytest.mark.parametrize("mode", ["full", "debate", "advise", "advise-noresp", "edit"])
async def test_prompt_tokens_match_the_prompts_the_loop_sends(
    tmp_path: Path, mode: Mode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lower bound is the prompts with no model text in them: empty answers are taken as they
    # come here, not asked again as a real run does (issue 17).
    from coevol.roles import agents

    monkeypatch.setattr(agents, "_ask", lambda generate, role, msgs: generate(role, msgs))
    # A single pass always keeps its edit, so a later turn would see it; compare first turns there.
    config = Config(mode=mode, conversation={"max_turns": None if mode == "full" else 1})  # type: ignore[arg-type]
    prompts = load_prompts()
    conversation = ConversationSettings(max_turns=config.conversation.max_turns)
    for i, row in enumerate(ROWS):
        data = write_jsonl(tmp_path / f"row{i}.jsonl", [row])
        est = estimate(config, data, prompts=prompts)
        (example,) = [e for e in read_examples(data) if isinstance(e, Example)]
        recorder = Recorder()
        await refine_example(example, recorder, prompts, LoopSettings(mode=mode), conversation)
        per_turn = calls_per_turn(mode, 3)[0]
        first_pass = [c for c in recorder.calls if c[2] == 0]  # the verdicts "" are re-asked: skip those
        sent: Counter[str] = Counter()
        count: Counter[str] = Counter()
        for turn in range(est.turns):  # every turn's first pass, in order
            for role, messages, _ in first_pass[turn * per_turn : (turn + 1) * per_turn]:
                sent[role] += tokens(messages)
                count[role] += 1
        assert est.turns == (2 if "conversations" in row and mode == "full" else 1)
        sent["judge"] -= count["judge"]  # the quoted edit: its one token is not in the lower bound
        assert {r: e.prompt_tokens_min for r, e in est.roles.items() if e.calls_min} == +sent
        assert {r: e.calls_min for r, e in est.roles.items() if e.calls_min} == dict(count)


def test_call_ranges_rejects_and_money(tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "in.jsonl", [*ROWS[:2], "{broken", {"instruction": "x", "output": ""}, ROWS[2]]
    )
    config = Config(max_rounds=3, price=Price(prompt=1.0, completion=2.0), judge_reasks=2)
    est = estimate(config, data, prompts=load_prompts())
    # The ShareGPT row is rejected too: a file holds one format.
    assert (est.rows, est.examples, est.rejected, est.turns) == (5, 2, 3, 2)
    assert (est.calls_min, est.calls_max) == (8 * 2, 24 * 2)
    assert est.reask_calls_max == 2 * 3 * 2 * 2
    judge = est.roles["judge"]
    assert judge.completion_tokens_max == 1000 * (2 * 3 * 2 + est.reask_calls_max)
    assert est.cost_min == pytest.approx(est.prompt_tokens_min / 1e6)
    assert est.cost_max == pytest.approx((est.prompt_tokens_max + 2 * est.completion_tokens_max) / 1e6)
    assert est.prompt_tokens_max > est.prompt_tokens_min
    assert est.seconds is None
    text = format_estimate(est)
    assert "rows 5: 2 to refine, 3 rejected; 2 turns" in text
    assert "calls 16 to 48" in text and "time: not estimated" in text


def test_early_exit_offset_limit_and_a_given_rate(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [ROWS[0]] * 10)
    config = Config(judge_early_exit=True, roles={Role.JUDGE: RoleConfig(price=Price(prompt=3.0))})
    est = estimate(config, data, prompts=load_prompts(), offset=2, limit=5, calls_per_second=10)
    assert est.rows == 5
    assert (est.calls_min, est.calls_max) == (7 * 5, 24 * 5)
    assert est.roles["judge"].calls_min == 5 and est.roles["judge"].cost_max is not None
    assert set(est.unpriced_roles) == {"positive", "critical", "advisor", "editor"}
    assert est.seconds == (3.5, 12.0)
    assert "at 10 calls/s" in format_estimate(est)


def test_single_pass_modes_have_fixed_call_counts() -> None:
    assert calls_per_turn("full", 3) == (8, 24)
    assert calls_per_turn("full", 2, early_exit=True) == (7, 16)
    assert [calls_per_turn(m, 3) for m in ("debate", "advise", "advise-noresp", "edit")] == [
        (6, 6),
        (2, 2),
        (2, 2),
        (1, 1),
    ]
