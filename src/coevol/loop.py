"""Algorithm 1 of the CoEvol paper: debate, advise, edit, judge; keep the edit only when it wins.

This module is the algorithm and nothing else. Agents, prompts and the Eq. 4 rule live in
``coevol.roles``; how a request reaches a model lives in ``coevol.engine``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from coevol.errors import AuthenticationError, LLMError, NotFoundError
from coevol.llm.types import Completion, Generate, Message, Usage
from coevol.prompts.render import Sample
from coevol.prompts.templates import PromptSet
from coevol.roles import agents
from coevol.roles.agents import Debate, JudgeKind, Judgment

__all__ = [
    "MODES",
    "Iteration",
    "LoopSettings",
    "Mode",
    "Refinement",
    "UsageLedger",
    "coevolve",
    "refine",
    "single_pass",
]

Mode = Literal["full", "debate", "advise", "advise-noresp", "edit"]
MODES: tuple[Mode, ...] = ("full", "debate", "advise", "advise-noresp", "edit")

StopReason = Literal["rejected", "max_rounds", "judge_unparseable", "error", "single_pass"]


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """The knobs of Algorithm 1 and its ablations (paper Section 4.1)."""

    max_rounds: int = 3
    mode: Mode = "full"
    judge: JudgeKind = "verdict"
    judge_reasks: int = 2
    judge_early_exit: bool = False


class UsageLedger:
    """Wraps ``generate`` to count tokens per role, so roles stay free of bookkeeping."""

    def __init__(self, generate: Generate) -> None:
        self._generate = generate
        self.by_role: dict[str, Usage] = {}

    async def __call__(self, role: str, messages: Sequence[Message], *, attempt: int = 0) -> Completion:
        completion = await self._generate(role, messages, attempt=attempt)
        self.by_role.setdefault(role, Usage()).add(completion.usage())
        return completion

    def take(self) -> dict[str, Usage]:
        """The usage since the last call, then start counting afresh."""
        taken, self.by_role = self.by_role, {}
        return taken


@dataclass(slots=True)
class Iteration:
    """One pass of the loop, as the trace shows it."""

    round: int
    previous: str
    debate: Debate | None = None
    suggestions: str | None = None
    edited: str | None = None
    judgment: Judgment | None = None
    accepted: bool = False
    usage: dict[str, Usage] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        j = self.judgment
        return {
            "round": self.round,
            "debate": self.debate.to_dict() if self.debate else None,
            "suggestions": self.suggestions,
            "edited": self.edited,
            "judge": None
            if j is None
            else {
                "orders": [o.to_dict() for o in j.orders],
                "score_previous": j.previous,
                "score_edited": j.edited,
                "skipped_reverse": j.skipped_reverse,
            },
            "accepted": self.accepted,
            "usage": {role: u.to_dict() for role, u in self.usage.items()},
        }


@dataclass(slots=True)
class Refinement:
    """The outcome for one sample: the final response and how it got there."""

    response: str
    accepted_rounds: int
    stop_reason: StopReason
    iterations: list[Iteration]
    error: str | None = None
    error_type: str | None = None

    @property
    def failed(self) -> bool:
        return self.stop_reason == "error"

    def usage(self) -> dict[str, Usage]:
        total: dict[str, Usage] = {}
        for it in self.iterations:
            for role, u in it.usage.items():
                total.setdefault(role, Usage()).add(u)
        return total


async def coevolve(
    sample: Sample, generate: Generate, prompts: PromptSet, settings: LoopSettings
) -> Refinement:
    """Algorithm 1. Returns the evolved response; a failed call is recorded, not raised."""
    ledger = UsageLedger(generate)
    x, iterations = sample, []  # x carries the current response r
    try:
        for k in range(1, settings.max_rounds + 1):  # while k <= K
            it = Iteration(round=k, previous=x.response)
            iterations.append(it)
            it.debate = await agents.debate(ledger, prompts, x)  # Eq. 5-8
            it.suggestions = await agents.advise(ledger, prompts, x, it.debate)  # Eq. 9
            it.edited = await agents.edit(ledger, prompts, x, it.suggestions)  # Eq. 2
            it.judgment = await agents.judge(  # Eq. 3-4, both orders
                ledger,
                prompts,
                x,
                it.edited,
                kind=settings.judge,
                reasks=settings.judge_reasks,
                early_exit=settings.judge_early_exit,
            )
            it.usage = ledger.take()
            if it.judgment.failed:
                return Refinement(x.response, k - 1, "judge_unparseable", iterations)
            if not it.judgment.accept:  # s(r') <= s(r): keep r and stop
                return Refinement(x.response, k - 1, "rejected", iterations)
            it.accepted = True
            x = x.with_response(it.edited)  # update x with r'; agents start with no memory
        return Refinement(x.response, settings.max_rounds, "max_rounds", iterations)
    except (AuthenticationError, NotFoundError):
        raise  # a misconfigured run, not a bad sample: stop everything
    except LLMError as exc:
        if iterations:
            iterations[-1].usage = ledger.take()
        accepted = sum(1 for it in iterations if it.accepted)
        return Refinement(x.response, accepted, "error", iterations, str(exc), type(exc).__name__)


async def single_pass(sample: Sample, generate: Generate, prompts: PromptSet, mode: Mode) -> Refinement:
    """The paper's ablations (Section 4.1): one pass, no judge, the edit always replaces."""
    ledger = UsageLedger(generate)
    it = Iteration(round=1, previous=sample.response)
    try:
        if mode == "edit":
            it.edited = await agents.edit_from_request(ledger, prompts, sample)
        else:
            if mode == "advise-noresp":
                it.suggestions = await agents.advise_from_request(ledger, prompts, sample)
            elif mode == "advise":
                it.suggestions = await agents.advise_from_response(ledger, prompts, sample)
            else:
                it.debate = await agents.debate(ledger, prompts, sample)
                it.suggestions = await agents.advise(ledger, prompts, sample, it.debate)
            it.edited = await agents.edit(ledger, prompts, sample, it.suggestions)
    except (AuthenticationError, NotFoundError):
        raise
    except LLMError as exc:
        it.usage = ledger.take()
        return Refinement(sample.response, 0, "error", [it], str(exc), type(exc).__name__)
    it.usage = ledger.take()
    it.accepted = True
    return Refinement(it.edited, 1, "single_pass", [it])


async def refine(
    sample: Sample, generate: Generate, prompts: PromptSet, settings: LoopSettings
) -> Refinement:
    """Refine one sample with the configured mode."""
    if settings.mode == "full":
        return await coevolve(sample, generate, prompts, settings)
    return await single_pass(sample, generate, prompts, settings.mode)
