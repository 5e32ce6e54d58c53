"""``coevol refine --dry-run``: what a run would cost, before a single request is sent.

The input is streamed (flat memory whatever its size). For every example the refinable turns are
counted and each call the loop would make is priced from its rendered round-1 prompt (about four
characters a token). What cannot be known without a model is given as a range rather than a guess:

- calls: the loop stops at the first rejected edit, so a full-mode turn costs between one round
  (8 calls; 7 with ``--judge-early-exit``) and K rounds (8K), plus re-asks of unparseable verdicts;
- prompt tokens: at least the prompt text without the model's answers it quotes (the debate, the
  suggestions, the edit), at most that plus every quoted answer at its role's ``max_tokens``;
- completion tokens: at most ``max_tokens`` per call;
- money: only for roles with a price, from the token bounds;
- time: only when the caller supplies a measured throughput, since it depends on the server.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from coevol.config import ROLES, Config
from coevol.conversation import refinable_turns, window_sample
from coevol.domain import BadRow
from coevol.io.files import read_examples
from coevol.prompts.render import has_input
from coevol.prompts.templates import PromptSet

__all__ = ["DryRunEstimate", "RoleEstimate", "calls_per_turn", "estimate", "format_estimate"]


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
    """What ``estimate`` found; every figure is a bound, never a promise."""

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

# What fills a slot, as an index into the three measured texts: for agent prompts the sample text,
# the request text and the current response; ``None`` is an answer the model has not written yet,
# counted as empty here and at max_tokens in the upper bound.
TEXT, REQUEST, RESPONSE = 0, 1, 2
_ANSWERS = ("positive", "critical", "positive", "critical")
_Shape = tuple[int, int, int, int]  # a length as fixed + a*x + b*y + c*z for three measured texts
_Fill = dict[str, int | None]


def calls_per_turn(mode: str, max_rounds: int, *, early_exit: bool = False) -> tuple[int, int]:
    """(fewest, most) calls for one turn, re-asks of unparseable verdicts not counted."""
    if mode == "full":
        return (7 if early_exit else 8), 8 * max_rounds
    single = {"debate": 6, "advise": 2, "advise-noresp": 2, "edit": 1}
    return single[mode], single[mode]


def _shape(template: str, fill: _Fill) -> _Shape:
    """A rendered template's length as ``fixed + a*x + b*y + c*z``, returned as (fixed, a, b, c).

    ``fill`` maps slots to the measured text (0, 1, 2) they receive. ``fill`` in the template module
    only substitutes, so this is exact; it lets a pass over a million rows do a few integer
    operations per call instead of rendering eight prompts per row.
    """
    fixed, coef = len(template), [0, 0, 0]
    for slot, n in Counter(_SLOT.findall(template)).items():
        if slot in fill:
            fixed -= n * (len(slot) + 2)
            index = fill[slot]
            if index is not None:
                coef[index] += n
    return fixed, coef[0], coef[1], coef[2]


@dataclass(frozen=True, slots=True)
class _Call:
    """One call of a pass: its role, its prompt pieces (system first) and the answers it quotes."""

    role: str
    system: int  # tokens of the role-play system prompt
    pieces: tuple[_Shape, ...]
    quotes: tuple[str, ...] = ()

    def tokens(self, text: int, request: int, response: int) -> int:
        return self.system + sum(
            (fixed + a * text + b * request + c * response + 3) // 4 for fixed, a, b, c in self.pieces
        )


def _calls(config: Config, prompts: PromptSet) -> list[_Call]:
    """The calls of one pass of ``config.mode``, as templates to measure."""

    def call(role: str, *pieces: tuple[str, _Fill], quotes: tuple[str, ...] = ()) -> _Call:
        system = (len(prompts[f"{role}_system"]) + 3) // 4
        return _Call(role, system, tuple(_shape(prompts[n], f) for n, f in pieces), quotes)

    mode = config.mode
    if mode == "edit":
        return [call("editor", ("editor_nosugg", {"sample_request": REQUEST}))]
    edit: _Fill = {"adv_sugg": None, "pre_resp": RESPONSE, "sample": TEXT, "sample_request": REQUEST}
    editor = call("editor", ("editor", edit), quotes=("advisor",))
    if mode == "advise":
        return [call("advisor", ("advisor_resp", {"sample": TEXT})), editor]
    if mode == "advise-noresp":
        return [call("advisor", ("advisor_noresp", {"sample_request": REQUEST})), editor]
    pos1: tuple[str, _Fill] = ("positive_round1", {"sample": TEXT})
    crt1: tuple[str, _Fill] = ("critical_round1", {"sample": TEXT})
    advise: _Fill = {"sample": TEXT, "pos_pred": None, "crt_pred": None, "pos_free": None, "crt_free": None}
    calls = [
        call("positive", pos1),
        call("critical", crt1),
        # Round 2 repeats the debater's own round-1 exchange and quotes the other's review.
        call("positive", pos1, ("positive_round2", {"crt_pred": None}), quotes=("positive", "critical")),
        call("critical", crt1, ("critical_round2", {"pos_pred": None}), quotes=("critical", "positive")),
        call("advisor", ("advisor", advise), quotes=_ANSWERS),
        editor,
    ]
    if mode == "full":
        prefix = "judge" if config.judge == "verdict" else "judge_score"
        judged: _Fill = {"sample_request": REQUEST, "pre_resp": RESPONSE, "new_resp": None}
        calls += [call("judge", (prefix + order, judged), quotes=("editor",)) for order in ("", "_reverse")]
    return calls


def _sample_shapes(prompts: PromptSet) -> dict[bool, tuple[_Shape, _Shape]]:
    """With and without input: the ``{sample}`` and ``{sample_request}`` texts' lengths in terms of
    the instruction, input and response lengths."""
    fill: _Fill = {"instruction": 0, "input": 1, "output": 2}
    return {
        True: (_shape(prompts["sample_with_input"], fill), _shape(prompts["request_with_input"], fill)),
        False: (
            _shape(prompts["sample_without_input"], fill),
            _shape(prompts["request_without_input"], fill),
        ),
    }


def estimate(
    config: Config,
    input_path: Path | str,
    *,
    input_format: str | None = None,
    offset: int = 0,
    limit: int | None = None,
    prompts: PromptSet,
    calls_per_second: float | None = None,
) -> DryRunEstimate:
    """Stream the input and bound the calls, tokens and money a run with ``config`` would need.

    ``calls_per_second`` (for instance the rate ``benchmarks/run.py`` or an earlier run measured
    against the same server) turns call counts into a time range; without it there is none.
    """
    settings = config.conversation_settings()
    est = DryRunEstimate(config.mode, config.max_rounds, calls_per_second=calls_per_second)
    est.roles = {role: RoleEstimate() for role in ROLES}
    max_tokens = {role: config.role(role).max_tokens or config.max_tokens for role in ROLES}
    full = config.mode == "full"
    rounds = config.max_rounds if full else 1
    calls = _calls(config, prompts)
    shapes = _sample_shapes(prompts)
    # Per call: its role's running totals, whether it counts in the minimum (with early exit the
    # reverse judge order, the last call, can be skipped) and the quoted answers' upper bound.
    plan = [
        (
            est.roles[c.role],
            c,
            not (full and config.judge_early_exit and i == len(calls) - 1),
            sum(max_tokens[q] for q in c.quotes),
            max_tokens[c.role],
        )
        for i, c in enumerate(calls)
    ]
    for item in read_examples(input_path, fmt=input_format, offset=offset, limit=limit):
        est.rows += 1
        if isinstance(item, BadRow):
            est.rejected += 1
            continue
        est.examples += 1
        for t in refinable_turns(item.turns, settings):
            sample = window_sample(prompts, item.turns, t, settings.window_rounds)
            est.turns += 1
            ins, inp, resp = len(sample.instruction), len(sample.input), len(sample.response)
            (f, a, b, c), (g, d, e, _) = shapes[has_input(sample)]
            text = f + a * ins + b * inp + c * resp
            request = g + d * ins + e * inp
            for r, call, in_min, quoted, completion in plan:
                tokens = call.tokens(text, request, resp)
                if in_min:
                    r.calls_min += 1
                    r.prompt_tokens_min += tokens
                r.calls_max += rounds
                r.prompt_tokens_max += rounds * (tokens + quoted)
                r.completion_tokens_max += rounds * completion
    fewest, most = calls_per_turn(config.mode, config.max_rounds, early_exit=config.judge_early_exit)
    est.calls_min, est.calls_max = fewest * est.turns, most * est.turns
    if full:
        est.reask_calls_max = est.turns * rounds * 2 * config.judge_reasks
        judge = est.roles["judge"]
        judge.prompt_tokens_max += (judge.prompt_tokens_max // max(judge.calls_max, 1)) * est.reask_calls_max
        judge.completion_tokens_max += max_tokens["judge"] * est.reask_calls_max
    for role, r in est.roles.items():
        if not r.calls_max:
            continue
        price = config.role(role).price
        if price is None:
            est.unpriced_roles.append(role)
            continue
        r.cost_min = r.prompt_tokens_min * price.prompt / 1e6
        r.cost_max = (r.prompt_tokens_max * price.prompt + r.completion_tokens_max * price.completion) / 1e6
    return est


def _n(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def _range(low: float, high: float, sep: str = "-") -> str:
    return _n(low) if _n(low) == _n(high) else f"{_n(low)}{sep}{_n(high)}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    return f"{seconds / 3600:.1f}h"


def format_estimate(est: DryRunEstimate) -> str:
    """A short human-readable report (plain text, for stdout)."""
    mode = f"{est.mode}, K={est.max_rounds}" if est.mode == "full" else est.mode
    lines = [
        f"dry run ({mode}): nothing was sent",
        f"rows {est.rows}: {est.examples} to refine, {est.rejected} rejected; {est.turns} turns to refine",
    ]
    calls = f"calls {_range(est.calls_min, est.calls_max, ' to ')}"
    if est.reask_calls_max:
        calls += f" (+ up to {_n(est.reask_calls_max)} re-asks of unparseable verdicts)"
    lines.append(calls)
    lines.append(
        f"prompt tokens {_range(est.prompt_tokens_min, est.prompt_tokens_max, ' to ')}, "
        f"completion tokens at most {_n(est.completion_tokens_max)}"
    )
    lines.append(f"{'role':<10}{'calls':>16}{'prompt tokens':>20}{'completion <=':>15}{'cost $':>20}")
    for role, r in est.roles.items():
        if not r.calls_max:
            continue
        cost = "-" if r.cost_max is None else f"{r.cost_min or 0:.2f}-{r.cost_max:.2f}"
        lines.append(
            f"{role:<10}{_range(r.calls_min, r.calls_max):>16}"
            f"{_range(r.prompt_tokens_min, r.prompt_tokens_max):>20}"
            f"{_n(r.completion_tokens_max):>15}{cost:>20}"
        )
    if est.cost_max is not None:
        lines.append(f"cost ${est.cost_min or 0:.2f} to ${est.cost_max:.2f}")
    if est.unpriced_roles:
        lines.append(f"no price configured for: {', '.join(est.unpriced_roles)} (set price: in the config)")
    seconds = est.seconds
    if seconds is not None:
        lines.append(
            f"time {_duration(seconds[0])} to {_duration(seconds[1])} at {est.calls_per_second:g} calls/s "
            "(the rate you gave; the server's speed decides it)"
        )
    else:
        lines.append("time: not estimated (give a measured calls/s rate for one)")
    lines.append(
        "bounds: tokens are characters/4; the low end leaves out the model answers the prompts quote,"
        " the high end counts each at max_tokens"
    )
    return "\n".join(lines) + "\n"
