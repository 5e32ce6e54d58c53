"""SPaR's critic and refiner: the templates verbatim and the pure parsing, as exact strings."""

from __future__ import annotations

import pytest

from coevol.prompts.render import Sample
from coevol.prompts.templates import load_prompts
from coevol.roles.spar import (
    critic_messages,
    critic_prompt,
    derive_seed,
    extract_refined,
    label_of,
    majority_index,
    pass_rate,
    refine_messages,
    spar_label,
    strict_label,
    tied,
)

P = load_prompts()

# thu-coai/SPaR src/tasks/prompts.py judge_template.format("Say hi.", "hello"), as SPaR sends it.
SPAR_JUDGE = (
    "Please act an expert in evaluating the capabilities of instruction-following. In the "
    "instruction-following task, the Output needs to honestly/precisely/closely follow the given Prompt.\n"
    "Your task is to carefully judge whether the Output to honestly/precisely/closely follows the given "
    "Prompt. If there are any constraints in the Prompt that are not satisfied by the Output, please list "
    "all the constraints that are not satisfied.\n\n"
    "Prompt: \u201cSay hi.\u201d\n\n"
    "Output: \u201chello\u201d\n\n"
    "Please carefully judge if each constraint is perfectly satisfied and give a final judgement weather "
    "the Output accurately follows the Prompt in the following format:\n"
    "Step-by-step verification: xxx\n"
    "Final Judgement (if the Output accurately follows the Prompt): (Yes or No)"
)
SPAR_REFINE = (
    "Based on your judgement, refine the Output to make sure it can honestly/precisely/closely follows "
    "the given Prompt.\n\n\n"
    "Please carefully refine the Output to meet all the constraints in the Prompt. \n\n"
    "Please format like this:\n"
    "Reflection on how to refine the Output: xxx\n"
    "Final Refined Output: [[start]] xxx [[end]]"
)


def test_critic_message_is_spars_judge_template_verbatim() -> None:
    assert critic_messages(P, Sample("Say hi.", "", "hello"), "hello") == [
        {"role": "user", "content": SPAR_JUDGE}
    ]


def test_refine_conversation_is_spars_three_messages() -> None:
    assert refine_messages(P, Sample("Say hi.", "", "x"), "hello", "CRIT") == [
        {"role": "user", "content": SPAR_JUDGE},
        {"role": "assistant", "content": "CRIT"},
        {"role": "user", "content": SPAR_REFINE},
    ]


def test_critic_prompt_folds_a_real_input_and_drops_placeholders() -> None:
    assert critic_prompt(Sample("Translate.", "I miss you", "r")) == "Translate.\nI miss you"
    assert critic_prompt(Sample("Translate.", "<noinput>", "r")) == "Translate."


VERDICT = "Final Judgement (if the Output accurately follows the Prompt): "


@pytest.mark.parametrize(
    ("text", "strict", "spar"),
    [
        (f"Step-by-step verification: fine.\n{VERDICT}Yes", True, True),
        (f"Step-by-step verification: no.\n{VERDICT}No", False, False),
        (f"{VERDICT}**Yes**", True, True),
        (f"{VERDICT}(No)", False, False),
        (f"{VERDICT}yes.", True, None),  # SPaR's substrings are case-sensitive
        # SPaR reads the first of Yes/No after the FIRST marker: "Not" wins.
        (f"{VERDICT}Not sure, but Yes", None, False),
        # The critique quotes the format before its real verdict: strict reads the last one.
        (f"The format is '{VERDICT}(Yes or No)'.\nStep-by-step verification: bad.\n{VERDICT}No", False, True),
        ("Final judgment: Yes", True, None),
        ("The output is fine. Yes.", None, None),
        (f"{VERDICT}", None, None),
        (f"{VERDICT}Maybe", None, None),
        ("", None, None),
    ],
)
def test_labels(text: str, strict: bool | None, spar: bool | None) -> None:
    assert strict_label(text) is strict
    assert spar_label(text) is spar
    assert label_of(text) is strict
    assert label_of(text, "spar") is spar


def test_pass_rate_ties_and_majority() -> None:
    assert pass_rate([True, True, False, None, True]) == 0.75
    assert pass_rate([None, None]) is None
    assert pass_rate([False] * 5) == 0.0
    assert tied([True, False, None, None, None])
    assert tied([None] * 5)
    assert not tied([True, None, None, None, None])
    assert majority_index([None, False, True, False, True]) is None
    assert majority_index([None, True, False, True, True]) == 1
    assert majority_index([True, False, None, False, False]) == 1


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (
            "Reflection on how to refine the Output: add a name.\nFinal Refined Output: [[start]] Hi, Ann! [[end]]",
            "Hi, Ann!",
        ),
        # the reflection quotes the markers: the last [[start]] is the output
        (
            "Use [[start]] and [[end]].\nFinal Refined Output: [[start]]\nline 1\nline 2\n[[end]]",
            "line 1\nline 2",
        ),
        ("Final Refined Output: [[start]] cut off at max_tokens", None),
        ("Final Refined Output: Hi", None),
        ("[[start]]   [[end]]", None),
        ("[[end]] [[start]] x", None),
    ],
)
def test_extract_refined(text: str, found: str | None) -> None:
    assert extract_refined(text) == found


def test_seeds_are_stable_distinct_and_31_bit() -> None:
    assert derive_seed("s", "0.1", 2, 0) == derive_seed("s", "0.1", 2, 0)
    seeds = {derive_seed("s", "0", child, 0) for child in range(3)}
    assert len(seeds) == 3
    assert all(0 <= s < 2**31 for s in seeds)
    assert derive_seed("a", "bc") != derive_seed("ab", "c")
    assert derive_seed("sample", 1) == 346986554  # sha256("sample\\x1f1"), first 4 bytes, 31 bits
