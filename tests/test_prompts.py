"""Rendered prompts against the paper's texts (Appendix A, Tables 6-9), as exact strings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coevol.errors import ConfigError
from coevol.prompts.render import Sample, merge_system_prompt, render_request, render_sample
from coevol.prompts.templates import TEMPLATE_NAMES, fill, load_prompts

P = load_prompts()
WITH_INPUT = Sample("Translate to French.", "I miss you", "Je t'aime")
NO_INPUT = Sample("What is the area of a circle of radius 4?", "<noinput>", "The area is 16.")

JUDGE_TAIL = (
    "[System]\n"
    "We would like to request your comparison of the performance of two AI assistants in response to "
    "the user request displayed above. Please compare the helpfulness, relevance, accuracy, and level of "
    "detail of their responses. Please first output a single line containing a name indicating whose "
    "response is better, <assistant 1> or <assistant 2> or <equal>. In the subsequent line, please "
    "provide a comprehensive explanation of your comparison, avoiding any potential bias and ensuring "
    "that the order in which the responses were presented does not affect your judgment."
)


def test_table6_sample_with_and_without_input() -> None:
    assert render_sample(P, WITH_INPUT) == (
        "### Instruction:\nTranslate to French.\n\n### Input:\nI miss you\n\n### Response:\nJe t'aime"
    )
    assert render_sample(P, NO_INPUT) == (
        "### Instruction:\nWhat is the area of a circle of radius 4?\n\n### Response:\nThe area is 16."
    )
    assert render_request(P, WITH_INPUT) == "### Instruction:\nTranslate to French.\n\n### Input:\nI miss you"
    assert render_request(P, NO_INPUT) == "### Instruction:\nWhat is the area of a circle of radius 4?"


@pytest.mark.parametrize("placeholder", ["", "  ", "<noinput>", "<No Input>", "N/A"])
def test_placeholder_inputs_use_the_template_without_input(placeholder: str) -> None:
    assert "### Input" not in render_sample(P, Sample("Say hi.", placeholder, "hi"))


def test_table7_role_play_prompts() -> None:
    assert P["positive_system"] == (
        "You are an optimistic person who embodies a mindset that looks for the best in every situation, "
        "maintains a positive attitude, and embraces challenges as opportunities for growth and success."
    )
    assert P["critical_system"] == (
        "You are a critical person who tends to view things through critical thinking and provide "
        "feedback for improvement or identify areas of concern."
    )


def test_table7_debate_task_prompts() -> None:
    s = render_sample(P, NO_INPUT)
    assert P.render("positive_round1", sample=s) == (
        f"{s}\n\nIn your opinion, the above response accurately answers the instruction and the input. "
        "Please state reasons why the response is accurate if it is used for supervised fine-tuning."
    )
    assert P.render("critical_round1", sample=s) == (
        f"{s}\n\nIn your opinion, the above response does not accurately answer the instruction and the "
        "input. Please offer suggestions on how to improve the response if it is used for supervised "
        "fine-tuning."
    )
    tail = (
        "Above is another review from others, please evaluate the plausibility of each point according to "
        "the given instruction and input."
    )
    assert P.render("positive_round2", crt_pred="CRT") == f"### Review from others:\nCRT\n\n{tail}"
    assert P.render("critical_round2", pos_pred="POS") == f"### Review from others:\nPOS\n\n{tail}"


def test_table8_advisor_prompt() -> None:
    assert P["advisor_system"] == (
        "You are an experienced advisor who possesses a high level of expertise in summarizing and giving "
        "advice."
    )
    s = render_sample(P, WITH_INPUT)
    got = P.render("advisor", sample=s, pos_pred="P1", crt_pred="C1", pos_free="P2", crt_free="C2")
    assert got == (
        "Below is an instruction that describes a task, paired with an input that provides further "
        f"context.\n\n{s}\n\n"
        "The following is a discussion about the given request and response by two reviewers.\n\n"
        "### Reviewer 1:\nP1\n\n### Reviewer 2:\nC1\n\n### Reviewer 1:\nP2\n\n### Reviewer 2:\nC2\n\n"
        "Extract and summarize credible ideas from the above dialogue and rewrite them into no more than 3 "
        "writing suggestions for improving the given response. Directly output these suggestions in "
        "separate lines without any foreword or explanation."
    )


def test_table8_editor_prompt() -> None:
    assert P["editor_system"] == (
        "You are a professional editor who possesses a high level of expertise in refining and improving "
        "writing content."
    )
    s, req = render_sample(P, WITH_INPUT), render_request(P, WITH_INPUT)
    got = P.render("editor", adv_sugg="1. Fix it.", pre_resp="Je t'aime", sample=s, sample_request=req)
    assert got == (
        "### Writing Suggestions:\n1. Fix it.\n\n### Previous Response:\nJe t'aime\n\n"
        "Below is an instruction that describes a task, paired with an input that provides further "
        f"context.\n\n{s}\n\n"
        "Referring to the above writing suggestions (MUST ignore suggestions beyond your capabilities), "
        "modify the previous response and make sure that it appropriately completes the request.\n\n"
        f"{req}\n\n### Response:"
    )


def test_table9_judge_prompts_both_orders() -> None:
    assert (
        P["judge_system"]
        == "You are a helpful and precise assistant for checking the quality of the response."
    )
    req = render_request(P, NO_INPUT)
    head = (
        "Below is an instruction that describes a task, paired with an input that provides further "
        f"context.\n\n{req}\n\n"
    )
    forward = P.render("judge", sample_request=req, pre_resp="OLD", new_resp="NEW")
    reverse = P.render("judge_reverse", sample_request=req, pre_resp="OLD", new_resp="NEW")
    assert forward == (
        head + "[The Start of Assistant 1's Response]\nOLD\n[The End of Assistant 1's Response]\n\n"
        "[The Start of Assistant 2's Response]\nNEW\n[The End of Assistant 2's Response]\n\n" + JUDGE_TAIL
    )
    assert reverse == (
        head + "[The Start of Assistant 1's Response]\nNEW\n[The End of Assistant 1's Response]\n\n"
        "[The Start of Assistant 2's Response]\nOLD\n[The End of Assistant 2's Response]\n\n" + JUDGE_TAIL
    )


def test_user_text_with_braces_is_not_reinterpreted() -> None:
    s = Sample("Write JSON {like} this", "", 'print("{sample}")')
    text = P.render("positive_round1", sample=render_sample(P, s))
    assert 'print("{sample}")' in text and "{like}" in text
    assert fill("{a} {b}", {"a": "{b}"}) == "{b} {b}"


def test_merge_system_prompt_appendix_a2() -> None:
    msgs = [
        {"role": "system", "content": "ROLE"},
        {"role": "user", "content": "TASK1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "TASK2"},
    ]
    assert merge_system_prompt(msgs) == [
        {"role": "user", "content": "ROLE\n\nTASK1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "TASK2"},
    ]
    assert merge_system_prompt(msgs[1:]) == msgs[1:]


def test_templates_ship_with_attribution_comments_that_are_never_sent() -> None:
    for name in TEMPLATE_NAMES:
        assert "#:" not in P[name], name
        assert P[name] == P[name].rstrip("\n")


def test_override_folder(tmp_path: Path) -> None:
    (tmp_path / "judge_system.txt").write_text("#: mine\nYou are strict.\n")
    prompts = load_prompts(tmp_path)
    assert prompts["judge_system"] == "You are strict."
    assert prompts["editor_system"] == P["editor_system"]


def test_override_with_unknown_slot_or_name_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "advisor.txt").write_text("{smaple}")
    with pytest.raises(ConfigError, match=r"unknown slot\(s\) \{smaple\}"):
        load_prompts(tmp_path)
    (tmp_path / "advisor.txt").unlink()
    (tmp_path / "advisr.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"unknown prompt template 'advisr\.txt'"):
        load_prompts(tmp_path)


def test_override_must_hold_every_slot_be_utf8_and_say_something(tmp_path: Path) -> None:
    """Issue 17: a judge template without ``{new_resp}`` would never show the edit; a template of
    comments only, or not UTF-8, is refused with its name (never "internal error")."""
    judge = tmp_path / "judge.txt"
    judge.write_text("Question: {sample_request}\nAnswer: {pre_resp}\nWhich is better?")
    with pytest.raises(ConfigError, match=r"judge.txt: missing slot\(s\) \{new_resp\}"):
        load_prompts(tmp_path)
    judge.write_text("#: only a comment\n#: {new_resp}\n")
    with pytest.raises(ConfigError, match=r"judge.txt: the template is empty \(only comment lines\?\)"):
        load_prompts(tmp_path)
    judge.write_bytes("Frage: {sample_request} {pre_resp} {new_resp} \u00fcber".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"judge.txt: not UTF-8 text \(byte 46\)"):
        load_prompts(tmp_path)
    judge.unlink()
    os.mkfifo(tmp_path / "editor.txt")
    with pytest.raises(ConfigError, match=r"editor\.txt: a prompt template must be a regular file"):
        load_prompts(tmp_path)
    (tmp_path / "editor.txt").unlink()
    full = "{sample_request} {pre_resp} {new_resp}"
    judge.write_text(full)
    assert load_prompts(tmp_path)["judge"] == full
