"""Judge verdicts (Eq. 3) and the acceptance rule (Eq. 4). Pure functions, no I/O.

The verdict is read from the first non-empty line only: the explanation below it routinely names
the other assistant ("Assistant 2's answer is longer, but <assistant 1> ..."), so reading further
would let the explanation overturn the verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from coevol.errors import ParseError

__all__ = [
    "Decision",
    "Order",
    "Verdict",
    "cannot_accept",
    "decide",
    "first_line",
    "order_scores",
    "parse_score_pair",
    "parse_verdict",
]


class Verdict(StrEnum):
    """Which of the two presented responses the judge preferred."""

    ASSISTANT_1 = "assistant 1"
    ASSISTANT_2 = "assistant 2"
    EQUAL = "equal"


class Order(StrEnum):
    """Which response the judge saw first: ``FORWARD`` shows the previous response as Assistant 1."""

    FORWARD = "forward"
    REVERSE = "reverse"


_TOKEN_RE = re.compile(r"<?\s*\b(?:assistant\s*([12])|(equal|tie))\b\s*>?")
_LEADING_LABEL_RE = re.compile(r"^(?:output|verdict|answer|decision|result)\s*:\s*", re.IGNORECASE)
_LEAD = "*_`#>[(\"' \t"  # markdown emphasis, headings, quotes before the verdict
_TRAIL = "*_`])\"' \t."  # ... and after it (a closing ">" belongs to the verdict)


def first_line(text: str) -> str:
    """The first line that is not blank."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _normalize(line: str) -> str:
    line = line.strip().lstrip(_LEAD).rstrip(_TRAIL)
    line = _LEADING_LABEL_RE.sub("", line)
    return line.lstrip(_LEAD).rstrip(_TRAIL).lower()


def parse_verdict(text: str) -> Verdict:
    """``<assistant 1>``, ``<assistant 2>`` or ``<equal>`` from the first non-empty line.

    Tolerates case, surrounding whitespace, markdown emphasis and a leading ``Output:``. When the
    line names several verdicts, the one written in the requested ``<...>`` form wins if it is the
    only such one ("Assistant 1 <equal>" is ``EQUAL``); otherwise the line must start with a
    verdict ("<assistant 1> is better than <assistant 2>") or name a single one. Anything else
    raises ``ParseError`` carrying the raw text.
    """
    line = _normalize(first_line(text))
    found: list[tuple[Verdict, bool]] = []
    for match in _TOKEN_RE.finditer(line):
        if match.group(1) == "1":
            verdict = Verdict.ASSISTANT_1
        elif match.group(1) == "2":
            verdict = Verdict.ASSISTANT_2
        else:
            verdict = Verdict.EQUAL
        token = match.group(0).strip()
        found.append((verdict, token.startswith("<") and token.endswith(">")))
    if not found:
        raise ParseError("judge verdict not found on its first line", raw=text)
    distinct = {v for v, _ in found}
    bracketed = {v for v, b in found if b}
    if len(distinct) == 1:
        return found[0][0]
    if len(bracketed) == 1:
        return bracketed.pop()
    if _TOKEN_RE.match(line) is not None:
        return found[0][0]
    raise ParseError("judge's first line names more than one verdict", raw=text)


_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


def parse_score_pair(text: str) -> tuple[float, float]:
    """Score mode: two numbers (1-10) on the first non-empty line, for Assistant 1 and 2."""
    line = _normalize(first_line(text))
    numbers = _NUMBER_RE.findall(line.replace(",", " "))
    if len(numbers) != 2:
        raise ParseError(f"expected two scores on the judge's first line, found {len(numbers)}", raw=text)
    a, b = float(numbers[0]), float(numbers[1])
    if not (0 <= a <= 10 and 0 <= b <= 10):
        raise ParseError("judge scores outside 0-10", raw=text)
    return a, b


def order_scores(verdict: Verdict, order: Order) -> tuple[float, float]:
    """Eq. 4 for one order: (s(previous), s(edited)); a response scores 1 when better or tied."""
    s1 = 1.0 if verdict in (Verdict.ASSISTANT_1, Verdict.EQUAL) else 0.0
    s2 = 1.0 if verdict in (Verdict.ASSISTANT_2, Verdict.EQUAL) else 0.0
    return (s1, s2) if order is Order.FORWARD else (s2, s1)


@dataclass(frozen=True, slots=True)
class Decision:
    """Both orders averaged; the edit is accepted only when it scores strictly higher."""

    previous: float
    edited: float

    @property
    def accept(self) -> bool:
        return self.edited > self.previous


def decide(forward: tuple[float, float], reverse: tuple[float, float]) -> Decision:
    """Average each response's per-order scores (previous, edited) over the two orders."""
    return Decision(previous=(forward[0] + reverse[0]) / 2, edited=(forward[1] + reverse[1]) / 2)


def cannot_accept(forward: tuple[float, float], span: float = 1.0) -> bool:
    """True when the first order alone already decides rejection (``--judge-early-exit``).

    Per-order scores lie in an interval of width ``span`` (1 for verdicts, 10 for 0-10 scores).
    Acceptance needs ``edited_1 + edited_2 > previous_1 + previous_2``; the second order can add at
    most ``span`` in the edit's favour, so a first-order lead of ``span`` for the previous response
    makes acceptance impossible and the second call cannot change the outcome.
    """
    return forward[0] - forward[1] >= span
