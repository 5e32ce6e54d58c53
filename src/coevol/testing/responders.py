"""A deterministic CoEvol-aware responder for the fake server: each agent answers predictably.

It recognises the role from the role-play prompt (system message, or the front of the first user
message when system prompts are merged), so tests and benchmarks can check the loop's control flow
over real HTTP without a model:

- debaters and the advisor answer with short texts that name what they saw;
- the editor appends `` [edit]`` to the previous response, so the k-th edit carries k markers;
- the judge follows a policy ``(instruction, previous, edited) -> prefer edited?`` and answers with
  the matching ``<assistant N>`` line followed by an explanation that names the other assistant.

The same responder runs in-process, without HTTP: ``CoEvolResponder(...).as_generate()`` is a
``coevol.llm.types.Generate`` for ``coevolve``, and ``coevol.testing.ResponderBackend`` a ``Backend``.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from coevol.testing.fakes import ResponderGenerate
from coevol.testing.faults import FaultPolicy, body_digest
from coevol.testing.server import Reply

__all__ = [
    "EDIT_MARK",
    "CoEvolResponder",
    "GarbleFirstJudge",
    "PositionBiasedJudge",
    "accept_up_to",
    "digit_logprobs",
    "hashed_policy",
    "identify_role",
    "responder",
]

EDIT_MARK = " [edit]"

JudgePolicy = Callable[[str, str, str], bool]
"""``(instruction, previous, edited) -> True`` when the judge should prefer the edited response."""

_ROLE_MARKERS = (
    ("optimistic person", "positive"),
    ("critical person", "critical"),
    ("experienced advisor", "advisor"),
    ("professional editor", "editor"),
    ("checking the quality", "judge"),
)


def identify_role(messages: list[dict[str, str]]) -> str:
    """Which CoEvol agent sent these messages, from its role-play prompt."""
    head = messages[0]["content"][:300] if messages else ""
    for marker, role in _ROLE_MARKERS:
        if marker in head:
            return role
    return "unknown"


def _between(text: str, start: str, end: str) -> str:
    i = text.find(start)
    if i < 0:
        return ""
    i += len(start)
    j = text.find(end, i)
    return text[i:] if j < 0 else text[i:j]


def _instruction(task: str) -> str:
    return _between(task, "### Instruction:\n", "\n\n").strip()


def _shown(task: str, n: int) -> str:
    """The response the judge prompt shows as Assistant ``n``."""
    return _between(
        task, f"[The Start of Assistant {n}'s Response]\n", f"\n[The End of Assistant {n}"
    ).strip()


def edits_in(text: str) -> int:
    """How many accepted edits a response carries."""
    return text.count(EDIT_MARK)


def accept_up_to(rounds: int | Callable[[str], int]) -> JudgePolicy:
    """Prefer the edit while it is the ``rounds``-th edit or earlier (per instruction if callable)."""

    def policy(instruction: str, previous: str, edited: str) -> bool:
        limit = rounds(instruction) if callable(rounds) else rounds
        return edits_in(edited) <= limit

    return policy


def hashed_policy(instruction: str, previous: str, edited: str) -> bool:
    """Default policy: each instruction accepts 0-3 edits, chosen by its hash (stable across runs)."""
    limit = int(hashlib.sha256(instruction.encode()).hexdigest(), 16) % 4
    return edits_in(edited) <= limit


class CoEvolResponder:
    """Answers the five agents deterministically; ``policy`` decides the judge's verdicts."""

    def __init__(self, policy: JudgePolicy = hashed_policy, *, echo_header: bool = True) -> None:
        self.policy = policy
        self.echo_header = echo_header

    def __call__(self, body: dict[str, Any]) -> str:
        messages: list[dict[str, str]] = body["messages"]
        role = identify_role(messages)
        task = messages[-1]["content"]
        if role in ("positive", "critical"):
            if len(messages) > 2:
                return f"{role} round 2: the other review has merit in part."
            response = _between(task, "### Response:\n", "\n\nIn your opinion").strip()
            return f"{role} round 1 on a response with {edits_in(response)} edits."
        if role == "advisor":
            return "1. Be more specific.\n2. Check the facts.\n3. Add an example."
        if role == "editor":
            previous = _between(task, "### Previous Response:\n", "\n\nBelow is an instruction").strip()
            if not previous:  # ablation "edit": answer the request afresh
                return "A fresh answer."
            edited = previous + EDIT_MARK
            return f"### Response:\n{edited}\n" if self.echo_header else edited
        if role == "judge":
            first = _between(
                task, "[The Start of Assistant 1's Response]\n", "\n[The End of Assistant 1"
            ).strip()
            second = _between(
                task, "[The Start of Assistant 2's Response]\n", "\n[The End of Assistant 2"
            ).strip()
            edited_first = edits_in(first) > edits_in(second)
            previous, edited = (second, first) if edited_first else (first, second)
            prefer_edit = self.policy(_instruction(task), previous, edited)
            winner = 1 if prefer_edit == edited_first else 2
            loser = 3 - winner
            if "scale of 1 to 10" in task:
                scores = (8, 4) if winner == 1 else (4, 8)
                return f"{scores[0]} {scores[1]}\nAssistant {loser} is weaker."
            return (
                f"<assistant {winner}>\n"
                f"Although <assistant {loser}> is longer, Assistant {winner} is more accurate."
            )
        return "ok"

    def as_generate(self, *, faults: FaultPolicy | None = None) -> ResponderGenerate:
        """This responder as an in-process ``Generate`` (no HTTP), with optional fault injection."""
        return ResponderGenerate(self, faults=faults)


class GarbleFirstJudge:
    """Wraps a responder: the first answer to each distinct judge request is not a verdict."""

    def __init__(self, inner: Callable[[dict[str, Any]], str], times: int = 1) -> None:
        self.inner = inner
        self.times = times
        self.seen: Counter[str] = Counter()

    def __call__(self, body: dict[str, Any]) -> str:
        if identify_role(body["messages"]) == "judge":
            key = body_digest(body)
            self.seen[key] += 1
            if self.seen[key] <= self.times:
                return "Let me think about both responses carefully before deciding."
        return self.inner(body)


def digit_logprobs(digit: str, position1: float, rest: str = ">") -> list[dict[str, Any]]:
    """Chat logprobs for ``<assistant {digit}>`` as Qwen tokenises it, with P("1") = ``position1``
    and P("2") = 1 - ``position1`` at the digit token."""

    def certain(token: str) -> dict[str, Any]:
        return {"token": token, "logprob": 0.0, "top_logprobs": [{"token": token, "logprob": 0.0}]}

    p = {"1": position1, "2": 1.0 - position1}
    top = [{"token": d, "logprob": math.log(p[d]) if p[d] > 0 else -9999.0} for d in ("1", "2")]
    top.sort(key=lambda t: -float(t["logprob"]))
    digit_token = {
        "token": digit,
        "logprob": top[0]["logprob"] if top[0]["token"] == digit else top[1]["logprob"],
    }
    return [
        certain("<"),
        certain("assistant"),
        certain(" "),
        {**digit_token, "top_logprobs": top},
        certain(rest),
    ]


class PositionBiasedJudge:
    """A judge that always writes ``<assistant 2>`` but whose probabilities know better.

    For judge requests it asks ``inner`` (an unbiased judge such as ``CoEvolResponder``) which
    position is better, then answers ``<assistant 2>`` whatever it is, with P(position 1) =
    ``lean`` + ``signal`` when position 1 holds the better response and ``lean`` - ``signal`` when
    it does not: the argmax is always position 2, yet the two orders together say which is better.
    """

    def __init__(
        self, inner: Callable[[dict[str, Any]], str], *, lean: float = 0.2, signal: float = 0.15
    ) -> None:
        self.inner = inner
        self.lean = lean
        self.signal = signal

    def __call__(self, body: dict[str, Any]) -> str | Reply:
        answer = self.inner(body)
        if identify_role(body["messages"]) != "judge":
            return answer
        better_first = answer.lstrip().startswith("<assistant 1>")
        position1 = self.lean + (self.signal if better_first else -self.signal)
        return Reply("<assistant 2>", logprobs=digit_logprobs("2", position1))


responder = CoEvolResponder()
"""Import path for the fake server CLI: ``--responder coevol.testing.responders:responder``."""
