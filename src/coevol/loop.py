"""Algorithm 1 of the CoEvol paper: debate, advise, edit, judge; keep the edit only when it wins.

This module is the algorithm and nothing else. Agents, prompts and the Eq. 4 rule live in
``coevol.roles``; how a request reaches a model lives in ``coevol.engine``. Each iteration is
recorded as the trace keeps it (``coevol.domain.IterationTrace``).

One guard comes before the judge: an edit that is empty, cut off at ``max_tokens`` or the same
text as the response it would replace is never judged and never written (``unusable_edit``); a
careless judge cannot make the data worse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from coevol.domain import (
    Answer,
    Completion,
    Failure,
    Generate,
    IterationTrace,
    JudgeTrace,
    Message,
    StopReason,
    TreeTrace,
    TurnTrace,
    Usage,
)
from coevol.errors import AuthenticationError, ContextLengthError, LLMError, NotFoundError
from coevol.prompts.render import Sample
from coevol.prompts.templates import PromptSet
from coevol.roles import agents
from coevol.roles.agents import JudgeKind
from coevol.tree.settings import TreeSettings

__all__ = [
    "MODES",
    "LoopSettings",
    "Mode",
    "Refinement",
    "UsageLedger",
    "coevolve",
    "failure_stop",
    "judged_stop",
    "refine",
    "single_pass",
    "unusable_edit",
]

Mode = Literal["full", "debate", "advise", "advise-noresp", "edit"]
MODES: tuple[Mode, ...] = get_args(Mode)


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """The knobs of Algorithm 1 and its ablations (paper Section 4.1)."""

    max_rounds: int = 3
    mode: Mode = "full"
    judge: JudgeKind = "verdict"
    judge_reasks: int = 2
    judge_early_exit: bool = False
    tree: TreeSettings | None = None  # the tree strategy (``coevol.tree.search``) instead of the loop
    judge_margin: float = 0.0


class UsageLedger:
    """Wraps ``generate`` to count tokens per role, so roles stay free of bookkeeping."""

    def __init__(self, generate: Generate) -> None:
        self._generate = generate
        self.by_role: dict[str, Usage] = {}

    async def __call__(
        self, role: str, messages: Sequence[Message], *, attempt: int = 0, seed: int | None = None, n: int = 1
    ) -> Completion:
        completion = await self._generate(role, messages, attempt=attempt, seed=seed, n=n)
        # str(): a ``Role`` is keyed by its plain value, as a record read back from JSON is
        self.by_role.setdefault(str(role), Usage()).add(completion.usage())
        return completion

    def take(self) -> dict[str, Usage]:
        """The usage since the last call, then start counting afresh."""
        taken, self.by_role = self.by_role, {}
        return taken


@dataclass(slots=True)
class Refinement:
    """The outcome for one sample: the final response and how it got there.

    ``failure`` is set when a call failed (``StopReason.ERROR``) or the prompt outgrew the model's
    context (``StopReason.CONTEXT_LENGTH``); ``response`` is then the last accepted one.
    """

    response: str
    accepted_edits: int
    stop_reason: StopReason
    iterations: list[IterationTrace]
    failure: Failure | None = None
    tree: TreeTrace | None = None  # the tree strategy's search, which then has no iterations

    @property
    def accepted_rounds(self) -> int:
        """0.2's name for ``accepted_edits``, kept so code written against 0.2 still runs."""
        return self.accepted_edits

    @property
    def failed(self) -> bool:
        return self.stop_reason is StopReason.ERROR

    def usage(self) -> dict[str, Usage]:
        total: dict[str, Usage] = {}
        spent = [it.usage for it in self.iterations] + ([self.tree.usage] if self.tree is not None else [])
        for usage in spent:
            for role, u in usage.items():
                total.setdefault(role, Usage()).add(u)
        return total

    def turn_trace(self, turn: int, sample: Sample) -> TurnTrace:
        """The trace of this refinement of ``sample``, readable on its own."""
        return TurnTrace(
            turn=turn,
            instruction=sample.instruction,
            input=sample.input,
            original=sample.response,
            final=self.response,
            accepted_edits=self.accepted_edits,
            stop_reason=self.stop_reason,
            iterations=self.iterations,
            failure=self.failure,
            tree=self.tree,
        )


def _words(text: str) -> list[str]:
    return text.split()


def unusable_edit(edit: Answer, edited: str, previous: str) -> StopReason | None:
    """Why an edit must not reach the judge, or None.

    Empty (or whitespace only) and cut off (``finish_reason`` "length") edits would make the data
    worse whatever a judge says; an edit equal to ``previous`` up to whitespace cannot win Eq. 4,
    so judging it would only pay for two calls.
    """
    if not edited.strip() or edit.truncated:
        return StopReason.EDIT_UNUSABLE
    if _words(edited) == _words(previous):
        return StopReason.UNCHANGED
    return None


def judged_stop(judge: JudgeTrace) -> StopReason | None:
    """Eq. 4 as a stop decision: None when s(r') > s(r), so the edit is accepted."""
    if not judge.decided:
        return StopReason.JUDGE_UNPARSEABLE
    if not judge.accept:
        return StopReason.TURNED_DOWN
    return None


def failure_stop(exc: LLMError) -> StopReason:
    return StopReason.CONTEXT_LENGTH if isinstance(exc, ContextLengthError) else StopReason.ERROR


async def coevolve(
    sample: Sample, generate: Generate, prompts: PromptSet, settings: LoopSettings
) -> Refinement:
    """Algorithm 1. Returns the evolved response; a failed call is recorded, not raised."""
    ledger = UsageLedger(generate)
    x, iterations = sample, []  # x carries the current response r
    try:
        for k in range(1, settings.max_rounds + 1):  # while k <= K
            it = IterationTrace(iteration=k, previous=x.response)
            iterations.append(it)
            it.debate = await agents.debate(ledger, prompts, x)  # Eq. 5-8
            it.suggestions = await agents.advise(ledger, prompts, x, it.debate)  # Eq. 9
            it.edit = await agents.edit(ledger, prompts, x, it.suggestions.text)
            it.edited = agents.clean_edit(it.edit.text)  # r', Eq. 2
            stop = unusable_edit(it.edit, it.edited, x.response)
            if stop is None:
                it.judge = await agents.judge(  # Eq. 3, both orders
                    ledger,
                    prompts,
                    x,
                    it.edited,
                    kind=settings.judge,
                    reasks=settings.judge_reasks,
                    early_exit=settings.judge_early_exit,
                    margin=settings.judge_margin,
                )
                stop = judged_stop(it.judge)  # Eq. 4
            it.usage = ledger.take()
            if stop is not None:  # s(r') <= s(r), or nothing worth judging: keep r and stop
                return Refinement(x.response, k - 1, stop, iterations)
            it.accepted = True
            x = x.with_response(it.edited)  # update x with r'; agents start with no memory
        return Refinement(x.response, settings.max_rounds, StopReason.MAX_ROUNDS, iterations)
    except (AuthenticationError, NotFoundError):
        raise  # a misconfigured run, not a bad sample: stop everything
    except LLMError as exc:
        if iterations:
            iterations[-1].usage = ledger.take()
        accepted = sum(1 for it in iterations if it.accepted)
        return Refinement(x.response, accepted, failure_stop(exc), iterations, Failure.of(exc))


async def _single_edit(
    ledger: UsageLedger, prompts: PromptSet, sample: Sample, mode: Mode, it: IterationTrace
) -> Answer:
    """One ablation pass up to the editor's answer, recorded in ``it`` as it goes."""
    if mode == "edit":
        return await agents.edit_from_request(ledger, prompts, sample)
    if mode == "advise-noresp":
        it.suggestions = await agents.advise_from_request(ledger, prompts, sample)
    elif mode == "advise":
        it.suggestions = await agents.advise_from_response(ledger, prompts, sample)
    else:
        it.debate = await agents.debate(ledger, prompts, sample)
        it.suggestions = await agents.advise(ledger, prompts, sample, it.debate)
    return await agents.edit(ledger, prompts, sample, it.suggestions.text)


async def single_pass(sample: Sample, generate: Generate, prompts: PromptSet, mode: Mode) -> Refinement:
    """The paper's ablations (Section 4.1): one pass, no judge; the edit replaces the response
    unless it is unusable (empty, cut off or unchanged), which keeps the original."""
    ledger = UsageLedger(generate)
    it = IterationTrace(iteration=1, previous=sample.response)
    try:
        it.edit = await _single_edit(ledger, prompts, sample, mode, it)
    except (AuthenticationError, NotFoundError):
        raise
    except LLMError as exc:
        it.usage = ledger.take()
        return Refinement(sample.response, 0, failure_stop(exc), [it], Failure.of(exc))
    it.usage = ledger.take()
    it.edited = agents.clean_edit(it.edit.text)
    stop = unusable_edit(it.edit, it.edited, sample.response)
    if stop is not None:
        return Refinement(sample.response, 0, stop, [it])
    it.accepted = True
    return Refinement(it.edited, 1, StopReason.SINGLE_PASS, [it])


async def refine(
    sample: Sample, generate: Generate, prompts: PromptSet, settings: LoopSettings
) -> Refinement:
    """Refine one sample with the configured mode."""
    if settings.mode == "full":
        return await coevolve(sample, generate, prompts, settings)
    return await single_pass(sample, generate, prompts, settings.mode)
