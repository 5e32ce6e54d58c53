"""SPaR's critic and refiner answers read exactly. Pure functions, no I/O.

SPaR (Cheng et al.; code thu-coai/SPaR) values a response by sampling several critiques that end in
``Final Judgement (if the Output accurately follows the Prompt): Yes`` or ``No``; the value is the
share of Yes among the critiques that gave a label. Its refiner answers with a reflection and the
new response between ``[[start]]`` and ``[[end]]``.

Two ways to read a label:

- ``strict`` (the default): the word right after the *last* ``Final Judgement ...:``; anything but
  yes or no is no label. A critique that quotes the format early, or hedges, is not misread.
- ``spar``: SPaR's own rule (``get_acc``), for exact replication: in the text after the *first*
  ``Final Judgement``, whichever of the substrings ``Yes``/``No`` comes first wins, so
  ``Not sure ... Yes`` reads as No.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Literal, get_args

from coevol.domain import Message
from coevol.prompts.render import Sample, has_input
from coevol.prompts.templates import PromptSet

__all__ = [
    "END",
    "LABEL_RULES",
    "START",
    "LabelRule",
    "critic_messages",
    "critic_prompt",
    "derive_seed",
    "extract_refined",
    "label_of",
    "majority_index",
    "pass_rate",
    "refine_messages",
    "spar_label",
    "strict_label",
    "tied",
]

LabelRule = Literal["strict", "spar"]
LABEL_RULES: tuple[LabelRule, ...] = get_args(LabelRule)

START, END = "[[start]]", "[[end]]"

# "Final Judgement" then anything but a line break up to the first colon; both spellings, any case.
_JUDGEMENT = re.compile(r"final\s+judge?ment[^:\n]{0,200}:", re.IGNORECASE)
# The first word after the colon, past markup such as ** or ( or a quote.
_WORD = re.compile(r"[\s*_`\"'“”(\[]*([A-Za-z]+)")


def strict_label(text: str) -> bool | None:
    """True for Yes, False for No, None when the last ``Final Judgement ...:`` is not followed by one."""
    found = list(_JUDGEMENT.finditer(text))
    if not found:
        return None
    word = _WORD.match(text, found[-1].end())
    if word is None:
        return None
    return {"yes": True, "no": False}.get(word.group(1).lower())


def spar_label(text: str) -> bool | None:
    """SPaR's ``get_acc``: the first of ``Yes``/``No`` (as substrings) after the first ``Final Judgement``."""
    if "Final Judgement" not in text:
        return None
    segment = text.split("Final Judgement")[1]
    yes, no = segment.find("Yes"), segment.find("No")
    if yes < 0 and no < 0:
        return None
    if yes < 0:
        return False
    if no < 0:
        return True
    return yes < no


def label_of(text: str, rule: LabelRule = "strict") -> bool | None:
    """The critique's label under ``rule``."""
    return strict_label(text) if rule == "strict" else spar_label(text)


def tied(labels: Sequence[bool | None]) -> bool:
    """As many Yes as No (no label at all included): SPaR draws the critiques again."""
    return labels.count(True) == labels.count(False)


def pass_rate(labels: Sequence[bool | None]) -> float | None:
    """V = #Yes / (#Yes + #No); unlabelled critiques are left out; None when none has a label."""
    yes, no = labels.count(True), labels.count(False)
    return None if yes + no == 0 else yes / (yes + no)


def majority_index(labels: Sequence[bool | None]) -> int | None:
    """The first critique that agrees with the majority: the one the refiner is shown (as SPaR).

    None when the labels are tied (no majority).
    """
    if tied(labels):
        return None
    majority = labels.count(True) > labels.count(False)
    return labels.index(majority)


def extract_refined(text: str) -> str | None:
    """The new response: between the last ``[[start]]`` and the ``[[end]]`` after it, trimmed.

    None when either marker is missing or nothing is between them (a failed try). The last
    ``[[start]]`` is taken because the reflection before it may quote the format.
    """
    begin = text.rfind(START)
    if begin < 0:
        return None
    begin += len(START)
    end = text.find(END, begin)
    if end < 0:
        return None
    found = text[begin:end].strip()
    return found or None


def derive_seed(*parts: object) -> int:
    """A request seed from what identifies it (sample, node path, child, try): stable across runs
    and machines, so a rerun sends the same requests and replays them from the store; 31 bits,
    which every server accepts."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def critic_prompt(sample: Sample) -> str:
    """SPaR's ``Prompt``: the instruction, with a real input after a newline (as the pairs fold it)."""
    return f"{sample.instruction}\n{sample.input}" if has_input(sample) else sample.instruction


def critic_messages(prompts: PromptSet, sample: Sample, response: str) -> list[Message]:
    """The critic's one user message: SPaR's judge template around the prompt and ``response``."""
    text = prompts.render("critic", prompt=critic_prompt(sample), response=response)
    return [{"role": "user", "content": text}]


def refine_messages(prompts: PromptSet, sample: Sample, response: str, critique: str) -> list[Message]:
    """SPaR's refine conversation: the critic prompt, the parent's critique, the refine request."""
    return [
        *critic_messages(prompts, sample, response),
        {"role": "assistant", "content": critique},
        {"role": "user", "content": prompts["refiner"]},
    ]
