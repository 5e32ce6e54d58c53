"""``--judge prob``: the judge's confidence in each position, read from its logprobs. Pure, no I/O.

The prompt and its verdict tokens are Table 9's, unchanged; only the reading differs. Instead of
the argmax verdict, the probability of the position digit is read where the judge wrote it (the
"1" or "2" of ``<assistant 1>``), so a judge that always writes ``<assistant 2>`` but is 45% sure
of position 1 for a better first answer still says which answer it prefers. Both orders are
asked; the edit's score is the mean over the two orders of the probability that the edit's
position is preferred, which cancels a constant lean towards one position.

Only the verdict line is read (the first line that is not blank), as ``parse_verdict`` does: a
digit in the explanation below it ("1. The first answer ...") is not a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from coevol.domain import DigitProbs, TokenLogprob
from coevol.roles.verdict import Order

__all__ = [
    "DIGITS",
    "JUDGE_TOP_LOGPROBS",
    "edit_probability",
    "prefer_probability",
    "prob_accepts",
    "prob_cannot_accept",
    "read_digits",
]

JUDGE_TOP_LOGPROBS = 10
"""Alternatives asked per token: enough that the other digit is listed (the issue asks >= 5;
OpenAI-compatible servers allow up to 20)."""

DIGITS = ("1", "2")


def _verdict_line_ended(text: str) -> bool:
    """Whether ``text`` (the answer so far) already holds a non-blank line and its line break."""
    return "\n" in text.lstrip()


def _probability(top: Sequence[tuple[str, float]], digit: str) -> float:
    """The summed probability of the alternatives that are ``digit`` up to whitespace (" 1", "1")."""
    return sum(math.exp(lp) for token, lp in top if token.strip() == digit)


def read_digits(tokens: Sequence[TokenLogprob], text: str) -> DigitProbs:
    """The position digit's probabilities at the first verdict-line token that is "1" or "2".

    The generated digit's own probability is its token's ``logprob`` when its alternatives leave
    it out (a server may list only the others); the other digit, when not listed, counts 0. No
    such token on the verdict line (``<equal>``, prose): ``token`` is None, 0.5 for each position.
    """
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    seen = ""
    for tok in tokens:
        if _verdict_line_ended(seen):
            break
        digit = tok.token.strip()
        if digit in DIGITS:
            p = {d: _probability(tok.top, d) for d in DIGITS}
            if not any(t.strip() == digit for t, _ in tok.top):
                p[digit] = math.exp(tok.logprob)
            return DigitProbs(tok.token, p["1"], p["2"], tok.top, line)
        seen += tok.token
    return DigitProbs(None, 0.0, 0.0, (), line)


def edit_probability(read: DigitProbs, order: Order) -> float:
    """P(the edit's position is preferred) in one order: forward shows the edit second."""
    p1 = read.position1
    return 1.0 - p1 if order is Order.FORWARD else p1


def prefer_probability(forward: DigitProbs, reverse: DigitProbs) -> float:
    """The pairwise value of an edit: the mean over both orders of P(the edit is preferred).

    0.5 is no preference; a judge leaning towards one position by the same amount in both orders
    adds it in one order and takes it away in the other. Other strategies (a tree search ranking
    candidates) use this as the value of a candidate against its parent.
    """
    return (edit_probability(forward, Order.FORWARD) + edit_probability(reverse, Order.REVERSE)) / 2


def prob_accepts(mean: float, margin: float = 0.0) -> bool:
    """The edit is kept when its mean probability is strictly above 0.5 + ``margin``."""
    return mean > 0.5 + margin


def prob_cannot_accept(forward: DigitProbs, margin: float = 0.0) -> bool:
    """``--judge-early-exit``: the reverse order can add at most 1, so a forward probability
    ``q`` with ``(q + 1) / 2 <= 0.5 + margin`` decides rejection alone."""
    return (edit_probability(forward, Order.FORWARD) + 1.0) / 2 <= 0.5 + margin
