"""``coevol compare --dry-run``: the calls and tokens a comparison needs, nothing sent. Pure.

Each differing pair needs two judge calls (one per order); an unparseable verdict is asked again
up to ``judge_reasks`` times, so ``max_calls`` bounds what a bad judge could cost. Identical pairs
need none. Prompt tokens are the project's 4-characters-a-token estimate of the rendered judge
prompts; completion tokens are bounded by the judge's ``max_tokens``. Calls the cache already holds
are not subtracted: the estimate is what a fresh run costs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from coevol.compare.units import Unit
from coevol.config import Config
from coevol.conversation import estimate_tokens
from coevol.prompts.render import render_request
from coevol.prompts.templates import PromptSet

__all__ = ["CandidateEstimate", "estimate_units", "format_estimates"]


@dataclass(frozen=True, slots=True)
class CandidateEstimate:
    candidate: str
    units: int
    identical: int
    calls: int
    max_calls: int
    prompt_tokens: int
    max_completion_tokens: int
    cost: float | None  # dollars at the judge's price, completion at its bound; None without a price


def _prompt_tokens(prompts: PromptSet, unit: Unit, kind: str) -> int:
    """Both orders' prompts (the same length: the two responses swap places)."""
    names = ("judge", "judge_reverse") if kind == "verdict" else ("judge_score", "judge_score_reverse")
    system = estimate_tokens(prompts["judge_system"])
    request = render_request(prompts, unit.sample)
    return sum(
        system
        + estimate_tokens(
            prompts.render(name, sample_request=request, pre_resp=unit.baseline, new_resp=unit.candidate)
        )
        for name in names
    )


def estimate_units(name: str, units: Iterable[Unit], prompts: PromptSet, config: Config) -> CandidateEstimate:
    """The estimate for one candidate; ``units`` is consumed once (a stream is never held)."""
    total = judged = prompt = 0
    for unit in units:
        total += 1
        if not unit.identical:
            judged += 1
            prompt += _prompt_tokens(prompts, unit, config.judge)
    calls = 2 * judged
    role = config.role("judge")
    max_tokens = role.max_tokens or config.max_tokens
    completion = calls * max_tokens
    cost = None
    if role.price is not None:
        cost = (prompt * role.price.prompt + completion * role.price.completion) / 1e6
    return CandidateEstimate(
        name, total, total - judged, calls, calls * (1 + config.judge_reasks), prompt, completion, cost
    )


def format_estimates(estimates: list[CandidateEstimate]) -> str:
    """Plain lines for stdout (the names are made inert by the caller's printing)."""
    lines = []
    for e in estimates:
        cost = "" if e.cost is None else f", at most ${e.cost:,.4f}"
        lines.append(
            f"{e.candidate}: {e.units:,} pairs, {e.identical:,} identical (ties, no call); "
            f"{e.calls:,} judge calls (up to {e.max_calls:,} with re-asks), "
            f"~{e.prompt_tokens:,} prompt tokens, at most {e.max_completion_tokens:,} completion tokens{cost}"
        )
    total = sum(e.calls for e in estimates)
    lines.append(f"total: {total:,} judge calls; nothing was sent (calls already in the cache are free)")
    return "\n".join(lines) + "\n"
