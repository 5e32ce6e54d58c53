"""The judge audit: how far the judge's verdicts follow position rather than content. Pure.

With ``--judge prob`` the audit also gives the mean position bias in probability: the average over
comparisons of P(position 1), itself averaged over both orders, minus 0.5 (negative: position 2).

For every iteration judged in both orders, the pair of verdicts is classified in position terms
(forward order = previous response first), following Shi et al. 2024, "Judging the Judges". The
run summary, the progress display, ``coevol report`` and ``coevol compare`` all use these counts
and the same plain-language finding.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from coevol.domain import JudgeOrderTrace, JudgeTrace, TraceRecord

__all__ = [
    "FINDING_MIN_COMPARISONS",
    "JudgeAudit",
    "Position",
    "classify_pair",
    "judge_finding",
    "order_position",
    "preference_fairness",
]

FINDING_MIN_COMPARISONS = 10
"""Fewer comparisons than this say too little about the judge for a finding."""

Position = str  # "1" | "2" | "tie": the presented position the judge preferred in one order


def order_position(order: JudgeOrderTrace) -> Position | None:
    """Which presented position won one order; None when its verdict stayed unparseable.

    ``scores`` are (previous, edited) whatever the presentation; the forward order shows the
    previous response first (position 1), the reverse order shows the edited one first.
    """
    if order.scores is None:
        return None
    previous, edited = order.scores
    first, second = (previous, edited) if order.order == "forward" else (edited, previous)
    if first > second:
        return "1"
    if second > first:
        return "2"
    return "tie"


def classify_pair(forward: Position, reverse: Position) -> str:
    """Shi et al. 2024: "consistent" (the same response preferred in both orders, or two ties),
    "primacy" (position 1 in both, or in one with a tie in the other) or "recency" (position 2)."""
    if {forward, reverse} == {"1", "2"} or forward == reverse == "tie":
        return "consistent"
    return "primacy" if "1" in (forward, reverse) else "recency"


def preference_fairness(primacy: int, recency: int) -> float:
    """Shi et al.'s PF: (rc_n * ir_r - pc_n * ir_p) min-max scaled to [-1, 1] over what the
    inconsistent pairs allow, which reduces to (recency - primacy) / (recency + primacy); 0 when
    no pair is inconsistent. Positive prefers recency (the second position)."""
    inconsistent = primacy + recency
    return 0.0 if inconsistent == 0 else (recency - primacy) / inconsistent


@dataclass(slots=True)
class JudgeAudit:
    """Position-bias counts over judgments made in both orders (the loop's, a tree's pairwise values)."""

    comparisons: int = 0
    consistent: int = 0
    primacy: int = 0
    recency: int = 0
    ties: int = 0
    unparseable: int = 0
    single_order: int = 0
    accepted: int = 0
    accepted_longer: int = 0
    accepted_measured: int = 0
    prob_pairs: int = 0  # --judge prob comparisons ...
    prob_position1: float = 0.0  # ... and their summed mean P(position 1) over both orders

    def add(self, judge: JudgeTrace) -> None:
        orders = {o.order: o for o in judge.orders}
        if any(o.scores is None for o in judge.orders):
            self.unparseable += 1
            return
        if "forward" not in orders or "reverse" not in orders:
            self.single_order += 1
            return
        f, r = order_position(orders["forward"]), order_position(orders["reverse"])
        assert f is not None and r is not None
        self.comparisons += 1
        self._add_probs(orders["forward"], orders["reverse"])
        self.ties += "tie" in (f, r)
        kind = classify_pair(f, r)
        if kind == "consistent":
            self.consistent += 1
        elif kind == "primacy":
            self.primacy += 1
        else:
            self.recency += 1

    def _add_probs(self, forward: JudgeOrderTrace, reverse: JudgeOrderTrace) -> None:
        if forward.probs is not None and reverse.probs is not None:
            self.prob_pairs += 1
            self.prob_position1 += (forward.probs.position1 + reverse.probs.position1) / 2

    def add_record(self, record: TraceRecord) -> None:
        """Every judged iteration of one record: what a live display calls per finished row, then
        ``judge_finding(audit.to_dict())`` to warn while the run goes on."""
        for turn in record.turns:
            for judge in turn.judgments():
                self.add(judge)

    def merge(self, other: JudgeAudit) -> None:
        """Add another audit's counts (shards of one run, each audited apart)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def add_accepted(self, longer: bool | None) -> None:
        self.accepted += 1
        if longer is not None:
            self.accepted_measured += 1
            self.accepted_longer += longer

    @property
    def position_consistency(self) -> float | None:
        return None if self.comparisons == 0 else self.consistent / self.comparisons

    @property
    def prob_position_bias(self) -> float | None:
        """``--judge prob``: mean P(position 1) over both orders minus 0.5; None without prob pairs."""
        return None if self.prob_pairs == 0 else self.prob_position1 / self.prob_pairs - 0.5

    def to_dict(self) -> dict[str, Any]:
        return {
            "comparisons": self.comparisons,
            "consistent": self.consistent,
            "primacy": self.primacy,
            "recency": self.recency,
            "position_consistency": self.position_consistency,
            "preference_fairness": None
            if self.comparisons == 0
            else preference_fairness(self.primacy, self.recency),
            "ties": self.ties,
            "unparseable": self.unparseable,
            "single_order": self.single_order,
            "accepted": self.accepted,
            "accepted_longer": None
            if self.accepted_measured == 0
            else self.accepted_longer / self.accepted_measured,
            "prob_position_bias": None
            if self.prob_pairs == 0
            else self.prob_position1 / self.prob_pairs - 0.5,
        }


def judge_finding(audit: dict[str, Any], *, min_comparisons: int = FINDING_MIN_COMPARISONS) -> str | None:
    """A plain-language warning when the judge looks position-driven, else None.

    ``audit`` is the report's ``judge`` object (``JudgeAudit.to_dict()``); the CLI summary, the
    progress display and the page all show this same text.
    """
    n = audit.get("comparisons") or 0
    pc = audit.get("position_consistency")
    if n < min_comparisons or pc is None or pc >= 0.5:
        return None
    primacy, recency = audit.get("primacy") or 0, audit.get("recency") or 0
    side = "the second" if recency > primacy else "the first"
    share = max(primacy, recency) / n
    return (
        f"The judge looks position-driven: in {n} comparisons judged in both orders it preferred the "
        f"same response only {pc:.0%} of the time, and chose {side} position regardless of content in "
        f"{share:.0%} of them. Because an edit is kept only when it wins in both orders, such a judge "
        "keeps the originals: few or no edits are accepted, and 'kept' does not mean the originals won "
        "on merit. Use a stronger model for the judge role (roles: judge: model: ... in the config)."
    )
