"""Deciding one pair and summing them up. Pure: no I/O.

Each pair is judged in both orders; the forward order shows the baseline as Assistant 1, the
reverse order shows the candidate first, exactly as the loop shows previous and edited.

- ``eq4`` (default, the paper's Eq. 4): per order a response scores 1 when judged better or equal
  (or its 1-10 score in score mode); each response's scores are averaged over the two orders; the
  candidate wins when its average is strictly higher, loses when strictly lower, ties otherwise.
- ``conservative`` (MT-Bench, Zheng et al. 2023): a win or loss only when both orders name the same
  winner; any disagreement, or a tie in either order, is a tie.

With ``--judge prob`` each order gives the probability ``q`` that the candidate is preferred; a
probability within ``margin`` of 0.5 is a tie. ``eq4`` decides by the mean of both orders' ``q``
(the loop's rule: a win above 0.5 + margin, a loss below 0.5 - margin), ``conservative`` needs both
orders beyond the margin on the same side.

Under both rules a judge that always picks the same position gives a tie for every pair: that is
what position-balancing is for, and ``finding`` says so in words.

A pair whose verdict stayed unparseable in either order after the re-asks is ``unparseable``: it is
left out of win/tie/loss and of ``total``, as the judge audit leaves it out of its comparisons.
A pair whose call failed (context length, retries exhausted) is ``failed``, left out likewise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from coevol.audit import FINDING_MIN_COMPARISONS
from coevol.domain import JudgeTrace
from coevol.roles.verdict import decide

__all__ = [
    "INTERVAL_METHOD",
    "Outcome",
    "Rule",
    "Tally",
    "finding",
    "outcome",
    "wilson_interval",
]

INTERVAL_METHOD = "wilson"
_Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


class Rule(StrEnum):
    EQ4 = "eq4"
    CONSERVATIVE = "conservative"


class Outcome(StrEnum):
    """The candidate's result against the baseline for one unit."""

    WIN = "win"
    TIE = "tie"
    LOSS = "loss"
    UNPARSEABLE = "unparseable"
    FAILED = "failed"


def _orders(judge: JudgeTrace) -> tuple[tuple[float, float], tuple[float, float]] | None:
    by_order = {o.order: o.scores for o in judge.orders}
    forward, reverse = by_order.get("forward"), by_order.get("reverse")
    if forward is None or reverse is None:
        return None
    return forward, reverse


def _sign(baseline: float, candidate: float) -> Outcome:
    if candidate > baseline:
        return Outcome.WIN
    if candidate < baseline:
        return Outcome.LOSS
    return Outcome.TIE


def _prob_sign(candidate: float, margin: float) -> Outcome:
    if candidate > 0.5 + margin:
        return Outcome.WIN
    if candidate < 0.5 - margin:
        return Outcome.LOSS
    return Outcome.TIE


def outcome(judge: JudgeTrace, rule: Rule) -> Outcome:
    """The candidate's outcome from both orders' scores, each (baseline, candidate)."""
    scores = _orders(judge)
    if scores is None:
        return Outcome.UNPARSEABLE
    forward, reverse = scores
    if judge.margin is not None:  # --judge prob: the candidate's probability per order
        if rule is Rule.EQ4:
            return _prob_sign((forward[1] + reverse[1]) / 2, judge.margin)
        first, second = _prob_sign(forward[1], judge.margin), _prob_sign(reverse[1], judge.margin)
        return first if first == second else Outcome.TIE
    if rule is Rule.EQ4:
        d = decide(forward, reverse)
        return _sign(d.previous, d.edited)
    first, second = _sign(*forward), _sign(*reverse)
    return first if first == second else Outcome.TIE


@dataclass(slots=True)
class Tally:
    """Outcomes of one candidate; ``identical`` counts the ties decided without a call."""

    win: int = 0
    tie: int = 0
    loss: int = 0
    unparseable: int = 0
    failed: int = 0
    identical: int = 0

    def add(self, result: Outcome, *, identical: bool = False) -> None:
        if result is Outcome.WIN:
            self.win += 1
        elif result is Outcome.TIE:
            self.tie += 1
        elif result is Outcome.LOSS:
            self.loss += 1
        elif result is Outcome.UNPARSEABLE:
            self.unparseable += 1
        else:
            self.failed += 1
        self.identical += identical

    @property
    def total(self) -> int:
        """Pairs with a decision: the denominator of the win rate."""
        return self.win + self.tie + self.loss

    @property
    def win_rate(self) -> float | None:
        """``(win + tie / 2) / total``; None when nothing was decided."""
        return None if self.total == 0 else (self.win + self.tie / 2) / self.total

    def to_dict(self) -> dict[str, Any]:
        low_high = wilson_interval(self.win_rate, self.total)
        return {
            "win": self.win,
            "tie": self.tie,
            "loss": self.loss,
            "total": self.total,
            "unparseable": self.unparseable,
            "failed": self.failed,
            "identical": self.identical,
            "win_rate": self.win_rate,
            "interval": {
                "method": INTERVAL_METHOD,
                "level": 0.95,
                "low": None if low_high is None else low_high[0],
                "high": None if low_high is None else low_high[1],
            },
        }


def wilson_interval(rate: float | None, n: int, z: float = _Z95) -> tuple[float, float] | None:
    """The Wilson score interval for a proportion ``rate`` observed over ``n`` pairs.

    A tie counts as half a win, so the observed rate is a mean of values in {0, 0.5, 1}; their
    variance is at most a Bernoulli's with the same mean, so the Wilson interval is conservative
    (never too narrow) for it. Closed form, no randomness: the same counts give the same interval.
    """
    if rate is None or n <= 0:
        return None
    z2 = z * z
    denom = 1 + z2 / n
    center = (rate + z2 / (2 * n)) / denom
    half = z * math.sqrt(rate * (1 - rate) / n + z2 / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def finding(
    audit: dict[str, Any], tally: Tally, *, min_comparisons: int = FINDING_MIN_COMPARISONS
) -> str | None:
    """Plain words when the result says more about the judge than about the data, else None.

    ``audit`` is ``JudgeAudit.to_dict()`` over the judged pairs (the report's definitions).
    """
    n = audit.get("comparisons") or 0
    judged = n + (audit.get("unparseable") or 0)
    if judged >= min_comparisons and (audit.get("unparseable") or 0) * 2 > judged:
        return (
            f"The judge gave no usable verdict for {audit['unparseable']} of {judged} pairs, so the "
            "totals rest on few pairs. Check the judge model (it must answer with the verdict on its "
            "first line) and its prompt."
        )
    pc = audit.get("position_consistency")
    if n < min_comparisons or pc is None or pc >= 0.5:
        return None
    primacy, recency = audit.get("primacy") or 0, audit.get("recency") or 0
    side = "second" if recency > primacy else "first"
    return (
        f"The judge looks position-driven: in {n} pairs judged in both orders it preferred the same "
        f"response in both orders only {pc:.0%} of the time, and chose the {side} position "
        f"regardless of content in {max(primacy, recency) / n:.0%} of them. Both orders are asked so "
        f"that such a judge cancels out: those pairs count as ties ({tally.tie} of {tally.total}), "
        "which says nothing about which dataset is better. Use a stronger judge model "
        "(--model, or roles: judge: in --config)."
    )
