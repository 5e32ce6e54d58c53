"""The calls of one iteration, declared once per mode, and the pure estimator that reads them.

``call_plan`` is what the agents in ``coevol.roles.agents`` send for one iteration of
``coevol.loop``, in order: a test runs the real loop for every mode and checks that the calls it
records are this plan, so the two cannot drift. ``estimate_examples`` turns the plan into the
``--dry-run`` bounds for already-parsed examples (``coevol.cli.dryrun`` reads the file):

- calls: the loop stops at the first rejected edit, so a full-mode turn costs between one
  iteration (8 calls; 7 with ``--judge-early-exit``) and K iterations (8K), plus re-asks of
  unparseable verdicts;
- prompt tokens: at least the prompt text without the model's answers it quotes (the debate, the
  suggestions, the edit), at most that plus every quoted answer at its role's ``max_tokens``;
- completion tokens: at most ``max_tokens`` per call;
- money: only for roles with a price, from the token bounds;
- time: only when the caller supplies a measured throughput, since it depends on the server.

Tokens are ``coevol.conversation.estimate_tokens`` (characters / 4, rounded up), per message.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from coevol.conversation import refinable_turns, tokens_for_chars, window_sample
from coevol.domain import TREE_ROLES, BadRow, Example, Role
from coevol.prompts.render import Sample, has_input
from coevol.prompts.templates import PromptSet
from coevol.tree.settings import TreeSettings

if TYPE_CHECKING:  # types only: the agents and the loop may import this module
    from coevol.config import Config
    from coevol.loop import Mode
    from coevol.roles.agents import JudgeKind

__all__ = [
    "PLANNED_ROLES",
    "SLOT_SOURCES",
    "DryRunEstimate",
    "PlannedCall",
    "RoleEstimate",
    "call_plan",
    "calls_per_turn",
    "estimate_examples",
    "judge_templates",
]


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One call of an iteration: its stage, role and task template (the system prompt is always
    ``<role>_system``).

    ``concurrent_with`` names the template of the call sent at the same moment (the other
    debater; the other judge order, unless ``--judge-early-exit`` asks them one after the other);
    ``memory`` names the role's own earlier task whose exchange is repeated before this one;
    ``skippable`` marks the reverse judge order, which early exit skips when the forward order
    already decides rejection.
    """

    stage: str
    role: Role
    template: str
    concurrent_with: str | None = None
    memory: str | None = None
    skippable: bool = False


SLOT_SOURCES: dict[str, str] = {
    "sample": "sample",
    "sample_request": "request",
    "pre_resp": "response",
    "pos_pred": Role.POSITIVE,
    "crt_pred": Role.CRITICAL,
    "pos_free": Role.POSITIVE,
    "crt_free": Role.CRITICAL,
    "adv_sugg": Role.ADVISOR,
    "new_resp": Role.EDITOR,
}
"""What fills each slot of a task template: the sample text, the request text, the current
response, or the answer of a role earlier in the iteration."""

_DEBATE = (
    PlannedCall("debate-1", Role.POSITIVE, "positive_round1", concurrent_with="critical_round1"),
    PlannedCall("debate-1", Role.CRITICAL, "critical_round1", concurrent_with="positive_round1"),
    PlannedCall(
        "debate-2",
        Role.POSITIVE,
        "positive_round2",
        concurrent_with="critical_round2",
        memory="positive_round1",
    ),
    PlannedCall(
        "debate-2",
        Role.CRITICAL,
        "critical_round2",
        concurrent_with="positive_round2",
        memory="critical_round1",
    ),
)
_EDIT = PlannedCall("edit", Role.EDITOR, "editor")


def judge_templates(kind: JudgeKind) -> tuple[str, str]:
    """The judge's task templates for the forward and the reverse order."""
    forward = "judge" if kind == "verdict" else "judge_score"
    return forward, f"{forward}_reverse"


def _judge(kind: JudgeKind) -> tuple[PlannedCall, ...]:
    forward, reverse = judge_templates(kind)
    return (
        PlannedCall("judge", Role.JUDGE, forward, concurrent_with=reverse),
        PlannedCall("judge", Role.JUDGE, reverse, concurrent_with=forward, skippable=True),
    )


def call_plan(mode: Mode, judge: JudgeKind = "verdict") -> tuple[PlannedCall, ...]:
    """The calls of one iteration of ``mode``, in the order the agents send them.

    Not listed: a re-ask of an unparseable verdict (it repeats its judge call). Not sent: the
    judge stage when the edit is empty, cut off or unchanged (``coevol.loop.unusable_edit``),
    which ends the iteration after the editor.
    """
    if mode == "edit":
        return (PlannedCall("edit", Role.EDITOR, "editor_nosugg"),)
    if mode == "advise":
        return (PlannedCall("advise", Role.ADVISOR, "advisor_resp"), _EDIT)
    if mode == "advise-noresp":
        return (PlannedCall("advise", Role.ADVISOR, "advisor_noresp"), _EDIT)
    debate = (*_DEBATE, PlannedCall("advise", Role.ADVISOR, "advisor"), _EDIT)
    return (*debate, *_judge(judge)) if mode == "full" else debate


PLANNED_ROLES: tuple[Role, ...] = tuple(dict.fromkeys(c.role for c in call_plan("full")))
"""Every role, in the order a full iteration first calls it."""


def calls_per_turn(mode: Mode, max_rounds: int, *, early_exit: bool = False) -> tuple[int, int]:
    """(fewest, most) calls for one turn when its edits are judged, re-asks not counted."""
    plan = call_plan(mode)
    fewest = len(plan) - (sum(c.skippable for c in plan) if early_exit else 0)
    return fewest, len(plan) * (max_rounds if mode == "full" else 1)


@dataclass(slots=True)
class RoleEstimate:
    """Bounds for one role over the whole input."""

    calls_min: int = 0
    calls_max: int = 0
    prompt_tokens_min: int = 0
    prompt_tokens_max: int = 0
    completion_tokens_max: int = 0
    cost_min: float | None = None
    cost_max: float | None = None


@dataclass(slots=True)
class DryRunEstimate:
    """What the estimator found; every figure is a bound, never a promise."""

    mode: str
    max_rounds: int
    rows: int = 0
    examples: int = 0
    rejected: int = 0
    turns: int = 0
    calls_min: int = 0
    calls_max: int = 0
    reask_calls_max: int = 0  # extra judge calls if verdicts stay unparseable (not in calls_max)
    roles: dict[str, RoleEstimate] = field(default_factory=dict)
    unpriced_roles: list[str] = field(default_factory=list)
    calls_per_second: float | None = None
    tree: TreeSettings | None = None  # the tree strategy's search, when that is the strategy

    @property
    def prompt_tokens_min(self) -> int:
        return sum(r.prompt_tokens_min for r in self.roles.values())

    @property
    def prompt_tokens_max(self) -> int:
        return sum(r.prompt_tokens_max for r in self.roles.values())

    @property
    def completion_tokens_max(self) -> int:
        return sum(r.completion_tokens_max for r in self.roles.values())

    @property
    def cost_min(self) -> float | None:
        costs = [r.cost_min for r in self.roles.values() if r.cost_min is not None]
        return sum(costs) if costs else None

    @property
    def cost_max(self) -> float | None:
        costs = [r.cost_max for r in self.roles.values() if r.cost_max is not None]
        return sum(costs) if costs else None

    @property
    def seconds(self) -> tuple[float, float] | None:
        """Wall time at the given throughput, for the fewest and the most calls."""
        if not self.calls_per_second:
            return None
        return self.calls_min / self.calls_per_second, self.calls_max / self.calls_per_second


_SLOT = re.compile(r"\{([a-z_]+)\}")  # the slots ``coevol.prompts.templates.fill`` substitutes

# The measured texts a slot can receive, as an index; any other source is a role's answer, not
# written yet: empty in the lower bound, at that role's max_tokens in the upper one.
_MEASURED = {"sample": 0, "request": 1, "response": 2}
_Shape = tuple[int, int, int, int]  # a length as fixed + a*x + b*y + c*z for three measured texts


def _shape(
    template: str, fill: dict[str, str], measured: dict[str, int] = _MEASURED
) -> tuple[_Shape, list[str]]:
    """A rendered template's length as ``fixed + a*x + b*y + c*z`` and the answers it quotes.

    ``fill`` maps slots to their source (``SLOT_SOURCES``); substitution keeps every other
    character and the prompt guard keeps lengths, so this is exact. It lets a pass over a million
    rows do a few integer operations per call instead of rendering eight prompts per row.
    """
    fixed, coef, quotes = len(template), [0, 0, 0], []
    for slot, n in Counter(_SLOT.findall(template)).items():
        if slot not in fill:
            continue
        fixed -= n * (len(slot) + 2)
        source = fill[slot]
        if source in measured:
            coef[measured[source]] += n
        else:
            quotes += [source] * n
    return (fixed, coef[0], coef[1], coef[2]), quotes


@dataclass(frozen=True, slots=True)
class _Measured:
    """A planned call as lengths: its system prompt's tokens, one shape per user message (the
    repeated earlier task first) and the answers it quotes (its own earlier answer included)."""

    role: str
    system: int
    pieces: tuple[_Shape, ...]
    quotes: tuple[str, ...]
    skippable: bool

    def tokens(self, sample: int, request: int, response: int) -> int:
        return self.system + sum(
            tokens_for_chars(fixed + a * sample + b * request + c * response)
            for fixed, a, b, c in self.pieces
        )


def _measure(call: PlannedCall, prompts: PromptSet) -> _Measured:
    task, quotes = _shape(prompts[call.template], SLOT_SOURCES)
    pieces: tuple[_Shape, ...] = (task,)
    if call.memory is not None:
        memory, earlier = _shape(prompts[call.memory], SLOT_SOURCES)
        pieces, quotes = (memory, task), [*earlier, call.role, *quotes]
    system = tokens_for_chars(len(prompts[f"{call.role}_system"]))
    return _Measured(call.role, system, pieces, tuple(quotes), call.skippable)


def _sample_shapes(prompts: PromptSet) -> dict[bool, tuple[_Shape, _Shape]]:
    """With and without input: the ``{sample}`` and ``{sample_request}`` texts' lengths in terms of
    the instruction, input and response lengths."""
    fields = {"instruction": 0, "input": 1, "output": 2}

    def shape(name: str) -> _Shape:
        return _shape(prompts[name], {f: f for f in fields}, fields)[0]

    return {
        True: (shape("sample_with_input"), shape("request_with_input")),
        False: (shape("sample_without_input"), shape("request_without_input")),
    }


@dataclass(frozen=True, slots=True)
class _Bound:
    """One planned call with what it adds to its role's totals, independent of the row."""

    role: RoleEstimate
    call: _Measured
    in_min: bool  # with early exit the reverse judge order may be skipped
    quoted: int  # the quoted answers at max_tokens
    completion: int


def _bounds(
    config: Config, est: DryRunEstimate, prompts: PromptSet, max_tokens: dict[str, int]
) -> list[_Bound]:
    skip = config.mode == "full" and config.judge_early_exit
    return [
        _Bound(
            est.roles[m.role],
            m,
            not (skip and m.skippable),
            sum(max_tokens[q] for q in m.quotes),
            max_tokens[m.role],
        )
        for m in (_measure(c, prompts) for c in call_plan(config.mode, config.judge))
    ]


def _add_turn(bounds: list[_Bound], rounds: int, sample: int, request: int, response: int) -> None:
    for b in bounds:
        tokens = b.call.tokens(sample, request, response)
        if b.in_min:
            b.role.calls_min += 1
            b.role.prompt_tokens_min += tokens
        b.role.calls_max += rounds
        b.role.prompt_tokens_max += rounds * (tokens + b.quoted)
        b.role.completion_tokens_max += rounds * b.completion


def _add_reasks(config: Config, est: DryRunEstimate, rounds: int, judge_max_tokens: int) -> None:
    """Full mode: each judge call may be asked again ``judge_reasks`` times."""
    est.reask_calls_max = est.turns * rounds * 2 * config.judge_reasks
    judge = est.roles[Role.JUDGE]
    judge.prompt_tokens_max += (judge.prompt_tokens_max // max(judge.calls_max, 1)) * est.reask_calls_max
    judge.completion_tokens_max += judge_max_tokens * est.reask_calls_max


def _price(config: Config, est: DryRunEstimate) -> None:
    for role, r in est.roles.items():
        if not r.calls_max:
            continue
        price = config.role(role).price
        if price is None:
            est.unpriced_roles.append(role)
            continue
        r.cost_min = r.prompt_tokens_min * price.prompt / 1e6
        r.cost_max = (r.prompt_tokens_max * price.prompt + r.completion_tokens_max * price.completion) / 1e6


@dataclass(frozen=True, slots=True)
class _TreeTurn:
    """One turn's sizes for the tree: the critic prompt's tokens for the original and for a child
    (whose response is the refiner's answer: empty at the low end, ``max_tokens`` at the high)."""

    root: int
    child_min: int
    child_max: int


def _tree_turn(prompts: PromptSet, sample_chars: tuple[int, int, int], refiner_max: int) -> _TreeTurn:
    ins, inp, resp = sample_chars
    fixed = len(prompts["critic"]) - len("{prompt}") - len("{response}")
    prompt = ins + (1 + inp if inp else 0)
    return _TreeTurn(
        tokens_for_chars(fixed + prompt + resp),
        tokens_for_chars(fixed + prompt),
        tokens_for_chars(fixed + prompt) + refiner_max,
    )


def _add_calls(
    r: RoleEstimate, low: int, high: int, tokens_low: int, tokens_high: int, completion: int
) -> None:
    r.calls_min += low
    r.calls_max += high
    r.prompt_tokens_min += low * tokens_low
    r.prompt_tokens_max += high * tokens_high
    r.completion_tokens_max += high * completion


def _add_tree_turn(
    config: Config, est: DryRunEstimate, prompts: PromptSet, max_tokens: dict[str, int], sample: Sample
) -> None:
    """The tree's bounds for one turn: the best case (the critic passes the original, or with the
    pairwise value a first level that passes) to the worst (``TreeSettings.worst``)."""
    tree = est.tree
    assert tree is not None
    best, worst = tree.best(), tree.worst()
    has = has_input(sample)
    chars = (len(sample.instruction), len(sample.input) if has else 0, len(sample.response))
    turn = _tree_turn(prompts, chars, max_tokens["refiner" if tree.expand == "spar" else "editor"])
    per_eval = 1 if tree.use_n and tree.votes > 1 else tree.votes
    critique = max_tokens["critic"]
    completion = critique * tree.votes // per_eval  # one request answers votes / per_eval critiques
    if tree.value == "critic":
        evals_min, evals_max = best.evaluations, worst.evaluations
        high = (turn.root + (evals_max - 1) * turn.child_max) // max(evals_max, 1)
        _add_calls(
            est.roles["critic"], per_eval * evals_min, per_eval * evals_max, turn.root, high, completion
        )
    if tree.expand == "spar":
        refine = turn.child_max + critique + tokens_for_chars(len(prompts["refiner"]))
        _add_calls(
            est.roles["refiner"],
            best.refines,
            worst.refines,
            turn.root + critique,
            refine,
            max_tokens["refiner"],
        )
        if tree.value == "pairwise":  # the critic is asked only for the critiques the refiner is shown
            kept = worst.refines // max(tree.branch, 1)
            _add_calls(
                est.roles["critic"],
                per_eval,
                per_eval * kept,
                turn.root,
                turn.child_max,
                critique * tree.votes,
            )
    measured = [_measure(c, prompts) for c in call_plan("debate")] if tree.expand == "coevol" else []
    if tree.value == "pairwise":
        measured += [_measure(c, prompts) for c in call_plan("full", config.judge) if c.role == "judge"]
    (f, a, b, c), (g, d, e, _) = _sample_shapes(prompts)[has]
    sample_len = f + a * chars[0] + b * len(sample.input) + c * chars[2]
    request_len = g + d * chars[0] + e * len(sample.input)
    for m in measured:
        count = (best.refines, worst.refines) if m.role != "judge" else (best.evaluations, worst.evaluations)
        tokens = m.tokens(sample_len, request_len, chars[2])
        quoted = sum(max_tokens[q] for q in m.quotes) + max_tokens["editor"]
        _add_calls(est.roles[m.role], count[0], count[1], tokens, tokens + quoted, max_tokens[m.role])


def estimate_examples(
    config: Config,
    items: Iterable[Example | BadRow],
    prompts: PromptSet,
    *,
    calls_per_second: float | None = None,
) -> DryRunEstimate:
    """Bound the calls, tokens and money a run with ``config`` needs for ``items``; sends nothing.

    ``items`` are parsed rows (``BadRow`` counts as rejected) and are read once, in a stream.
    ``calls_per_second`` (for instance the rate ``benchmarks/run.py`` or an earlier run measured
    against the same server) turns call counts into a time range; without it there is none.
    """
    settings = config.conversation_settings()
    est = DryRunEstimate(config.mode, config.max_rounds, calls_per_second=calls_per_second)
    est.tree = config.tree_settings()
    est.roles = {role.value: RoleEstimate() for role in PLANNED_ROLES + (TREE_ROLES if est.tree else ())}
    max_tokens = {role: config.role(role).max_tokens or config.max_tokens for role in est.roles}
    full = config.mode == "full"
    rounds = config.max_rounds if full else 1
    bounds = _bounds(config, est, prompts, max_tokens)
    shapes = _sample_shapes(prompts)
    for item in items:
        est.rows += 1
        if isinstance(item, BadRow):
            est.rejected += 1
            continue
        est.examples += 1
        for t in refinable_turns(item.turns, settings):
            sample = window_sample(prompts, item.turns, t, settings.window_rounds)
            est.turns += 1
            if est.tree is not None:
                _add_tree_turn(config, est, prompts, max_tokens, sample)
                continue
            ins, inp, resp = len(sample.instruction), len(sample.input), len(sample.response)
            (f, a, b, c), (g, d, e, _) = shapes[has_input(sample)]
            _add_turn(bounds, rounds, f + a * ins + b * inp + c * resp, g + d * ins + e * inp, resp)
    if est.tree is not None:
        est.calls_min = sum(r.calls_min for r in est.roles.values())
        est.calls_max = sum(r.calls_max for r in est.roles.values())
        _price(config, est)
        return est
    fewest, most = calls_per_turn(config.mode, config.max_rounds, early_exit=config.judge_early_exit)
    est.calls_min, est.calls_max = fewest * est.turns, most * est.turns
    if full:
        _add_reasks(config, est, rounds, max_tokens[Role.JUDGE])
    _price(config, est)
    return est
