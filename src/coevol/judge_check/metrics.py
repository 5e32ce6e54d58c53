"""What a judge check measures, and its verdict on the judge. Pure: no I/O.

Each built-in pair is judged as the loop judges an edit: the worse answer as the previous response,
the better one as the edit, in both orders (forward shows the worse answer first). A decision in
one order is right when the better answer's score is strictly higher; a tie is not right.

- accuracy per order and overall (both orders' decisions), and for ``prob`` the pair accuracy of
  the mean rule (the better answer's mean probability above 0.5) with the mean probability margin;
- position consistency, primacy and recency counts (Shi et al. 2024, as the judge audit counts);
- length bias: accuracy on the pairs whose better answer is the longer one minus accuracy on
  those whose better answer is the shorter one (0 is fair; positive favours length).

The verdict: ``unusable`` when most answers do not parse (or, for ``prob``, hold no position
digit); ``position-driven`` when the judge prefers the same response in both orders less than
half the time or picks one position in most pairs (for ``prob`` only when its mean rule is also
near chance, since averaging the two orders is what cancels a lean); ``unusable`` when accuracy is
near chance; ``usable`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from coevol.audit import classify_pair, order_position
from coevol.domain import JudgeTrace

__all__ = [
    "ACCURACY_MIN",
    "CheckPair",
    "CheckResult",
    "JudgeVerdict",
    "PairResult",
    "advice",
    "spread",
    "summarize",
]

ACCURACY_MIN = 0.65
"""Below this share of right decisions the judge is "near chance" (a tie counts as not right)."""


class JudgeVerdict(StrEnum):
    USABLE = "usable"
    POSITION_DRIVEN = "position-driven"
    UNUSABLE = "unusable"


@dataclass(frozen=True, slots=True)
class CheckPair:
    """One built-in pair: an instruction and two answers, ``better`` known to be the better one."""

    id: str
    category: str
    instruction: str
    better: str
    worse: str
    input: str = ""

    @property
    def better_is_shorter(self) -> bool:
        return len(self.better.split()) < len(self.worse.split())


@dataclass(frozen=True, slots=True)
class PairResult:
    """A pair and the judge's answers in both orders (``judge`` is ``None`` when a call failed)."""

    pair: CheckPair
    judge: JudgeTrace | None


def _right(scores: tuple[float, float] | None) -> bool:
    return scores is not None and scores[1] > scores[0]


@dataclass(slots=True)
class CheckResult:
    """The figures of one check (``to_dict`` is the ``--json`` document)."""

    kind: str
    pairs: int = 0
    failed: int = 0
    unparseable: int = 0  # orders with no usable verdict after the re-asks
    no_digit: int = 0  # prob: orders whose verdict line held no position digit
    right: dict[str, int] = field(default_factory=lambda: {"forward": 0, "reverse": 0})
    asked: dict[str, int] = field(default_factory=lambda: {"forward": 0, "reverse": 0})
    consistent: int = 0
    primacy: int = 0
    recency: int = 0
    compared: int = 0  # pairs decided in both orders
    by_length: dict[str, list[int]] = field(default_factory=lambda: {"shorter": [0, 0], "longer": [0, 0]})
    prob_right: int = 0
    prob_margin_sum: float = 0.0
    verdict: JudgeVerdict = JudgeVerdict.UNUSABLE

    def order_accuracy(self, order: str) -> float | None:
        n = self.asked[order]
        return None if n == 0 else self.right[order] / n

    @property
    def accuracy(self) -> float | None:
        n = sum(self.asked.values())
        return None if n == 0 else sum(self.right.values()) / n

    @property
    def consistency(self) -> float | None:
        return None if self.compared == 0 else self.consistent / self.compared

    def _length_accuracy(self, which: str) -> float | None:
        right, n = self.by_length[which]
        return None if n == 0 else right / n

    @property
    def length_bias(self) -> float | None:
        longer, shorter = self._length_accuracy("longer"), self._length_accuracy("shorter")
        return None if longer is None or shorter is None else longer - shorter

    @property
    def prob_accuracy(self) -> float | None:
        decided = self.pairs - self.failed
        return None if self.kind != "prob" or decided == 0 else self.prob_right / decided

    @property
    def prob_margin(self) -> float | None:
        """Mean over pairs of P(better preferred) - 0.5: how far the judge leans the right way."""
        decided = self.pairs - self.failed
        return None if self.kind != "prob" or decided == 0 else self.prob_margin_sum / decided

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "verdict": self.verdict.value,
            "advice": advice(self),
            "pairs": self.pairs,
            "failed": self.failed,
            "accuracy": self.accuracy,
            "accuracy_forward": self.order_accuracy("forward"),
            "accuracy_reverse": self.order_accuracy("reverse"),
            "position_consistency": self.consistency,
            "compared": self.compared,
            "primacy": self.primacy,
            "recency": self.recency,
            "unparseable": self.unparseable,
            "no_digit": self.no_digit if self.kind == "prob" else None,
            "accuracy_better_longer": self._length_accuracy("longer"),
            "accuracy_better_shorter": self._length_accuracy("shorter"),
            "length_bias": self.length_bias,
            "prob_accuracy": self.prob_accuracy,
            "prob_margin": self.prob_margin,
        }


def spread(pairs: list[CheckPair], limit: int | None) -> list[CheckPair]:
    """At most ``limit`` pairs taken in turn from each category (first of each, then second ...),
    so a short check on a slow model still covers every kind of pair."""
    if limit is None or limit >= len(pairs):
        return list(pairs)
    by_category: dict[str, list[CheckPair]] = {}
    for pair in pairs:
        by_category.setdefault(pair.category, []).append(pair)
    rounds = max(len(group) for group in by_category.values())
    turns = [group[i] for i in range(rounds) for group in by_category.values() if i < len(group)]
    return turns[: max(0, limit)]


def _add(result: CheckResult, item: PairResult) -> None:
    judge = item.judge
    if judge is None:
        result.failed += 1
        return
    orders = {o.order: o for o in judge.orders}
    for name, order in orders.items():
        result.asked[name] += 1
        result.right[name] += _right(order.scores)
        result.unparseable += order.scores is None
        result.no_digit += order.probs is not None and order.probs.token is None
        side = "shorter" if item.pair.better_is_shorter else "longer"
        result.by_length[side][0] += _right(order.scores)
        result.by_length[side][1] += 1
    forward, reverse = orders.get("forward"), orders.get("reverse")
    if forward is not None and reverse is not None:
        f, r = order_position(forward), order_position(reverse)
        if f is not None and r is not None:
            result.compared += 1
            kind = classify_pair(f, r)
            result.consistent += kind == "consistent"
            result.primacy += kind == "primacy"
            result.recency += kind == "recency"
    if judge.prob_mean is not None:
        result.prob_right += judge.prob_mean > 0.5
        result.prob_margin_sum += judge.prob_mean - 0.5


def _position_driven(result: CheckResult) -> bool:
    consistency = result.consistency
    if consistency is None:
        return False
    return consistency < 0.5 or max(result.primacy, result.recency) * 2 > result.compared


def _verdict(result: CheckResult) -> JudgeVerdict:
    asked = sum(result.asked.values())
    if asked == 0 or result.unparseable * 2 > asked or result.no_digit * 2 > asked:
        return JudgeVerdict.UNUSABLE
    accuracy = result.prob_accuracy if result.kind == "prob" else result.accuracy
    near_chance = accuracy is None or accuracy < ACCURACY_MIN
    if _position_driven(result) and (result.kind != "prob" or near_chance):
        return JudgeVerdict.POSITION_DRIVEN
    return JudgeVerdict.UNUSABLE if near_chance else JudgeVerdict.USABLE


def summarize(kind: str, results: list[PairResult]) -> CheckResult:
    """Every figure of the check and its verdict."""
    result = CheckResult(kind, pairs=len(results))
    for item in results:
        _add(result, item)
    result.verdict = _verdict(result)
    return result


def advice(result: CheckResult) -> str:
    """What to do about the verdict, in plain words."""
    if result.verdict is JudgeVerdict.USABLE:
        return "This judge picks the better answer well enough to refine with."
    if result.verdict is JudgeVerdict.POSITION_DRIVEN:
        side = "second" if result.recency > result.primacy else "first"
        tip = (
            "try --judge prob, which reads its confidence in both orders (the server must return "
            "logprobs), or use a stronger judge model"
            if result.kind != "prob"
            else "use a stronger judge model"
        )
        return (
            f"This judge prefers the {side} position whatever it reads: with both orders asked, "
            f"its verdicts cancel out and a run keeps every original. {tip[0].upper()}{tip[1:]} "
            "(roles: judge: in --config)."
        )
    asked = sum(result.asked.values())
    if asked and result.unparseable * 2 > asked:
        return (
            "This judge mostly does not answer with a verdict on its first line (<assistant 1>, "
            "<assistant 2> or <equal>): check the model and its chat template, or use a stronger one."
        )
    if asked and result.no_digit * 2 > asked:
        return (
            "This judge mostly answers <equal> (or names no position), so --judge prob reads no "
            "preference from it: use a stronger judge model (roles: judge: in --config)."
        )
    return (
        "This judge picks the better answer little more often than chance: a run would pay for "
        "its calls and keep the originals. Use a stronger judge model (roles: judge: in --config)."
    )
