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
    "SCORE_RANGE",
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
_LEADING_LABEL_RE = re.compile(
    r"^(?:final\s+)?(?:output|verdict|answer|decision|result|judgment|judgement|winner)\s*:\s*", re.IGNORECASE
)
_LEAD = "*_`#>[(\"' \t"  # markdown emphasis, headings, quotes before the verdict
_TRAIL = "*_`])\"' \t.!"  # ... and after it (a closing ">" belongs to the verdict)
_WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)?|\d")


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


# A word that negates anything near it: "Not <assistant 1>", "<assistant 1> isn't better".
_NEGATIONS = _wordset(
    """
    not no never neither nor none nobody nothing nowhere cannot without hardly barely
    isnt arent wasnt werent dont doesnt didnt cant couldnt wont wouldnt shouldnt hasnt havent
    """
)
# The only words a verdict clause may hold besides its one verdict token: labels, pronouns and
# words that affirm it. Everything else ("worse", "less", "than", "over", "loses") could flip or
# qualify it, so the line is not a verdict and the judge is asked again.
_VERDICT_WORDS = _wordset(
    """
    a an the i we my our it its this that they both two one of whose name think
    is are was be would i'd we'd choose chose pick select prefer preferred go with
    win wins winner winning best better superior stronger good overall slightly much clearly
    more helpful accurate relevant detailed complete correct clear quality response responses answer
    answers output verdict decision result judgment judgement final choice assistant assistants s
    equal tie tied and
    """
)
# Words that begin a reason for the verdict ("<assistant 1> is better because ...") ...
_REASONS = frozenset({"because", "since"})
# ... which may follow, provided it neither negates nor compares against something.
_FLIPS = _wordset(
    """
    worse worst less least lower lowest inferior weaker weakest poorer poorest fewer than over
    unlike instead rather but however although though except whereas versus vs compared loses lose
    lost lacks lack fails fail
    """
)


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


def _token_verdict(match: re.Match[str]) -> Verdict:
    if match.group(1) == "1":
        return Verdict.ASSISTANT_1
    if match.group(1) == "2":
        return Verdict.ASSISTANT_2
    return Verdict.EQUAL


def _words(text: str) -> list[str]:
    """Lower-case words; ``n't`` contractions are split so that they count as a negation."""
    words: list[str] = []
    for word in _WORD_RE.findall(text.replace("\u2019", "'")):
        if word.endswith("n't"):
            words += [word[:-3], "not"]
        else:
            words.append(word)
    return words


def _ambiguity(line: str, tokens: list[re.Match[str]]) -> str | None:
    """Why a normalised first line with its verdict tokens is not one unambiguous verdict."""
    if not tokens:
        return "judge verdict not found on its first line"
    if len(tokens) > 1:
        return "judge's first line names more than one verdict"
    if "?" in line:
        return "judge's first line asks rather than decides"
    words = _words(_TOKEN_RE.sub(" ", line))
    if _NEGATIONS.intersection(words):
        return "judge's first line negates"
    cut = next((i for i, w in enumerate(words) if w in _REASONS), len(words))
    clause, reason = words[:cut], words[cut + 1 :]
    odd = [w for w in clause if w not in _VERDICT_WORDS] + [w for w in reason if w in _FLIPS or w.isdigit()]
    if odd:
        return f"judge's first line qualifies its verdict ({odd[0]!r})"
    return None


def parse_verdict(text: str) -> Verdict:
    """``<assistant 1>``, ``<assistant 2>`` or ``<equal>`` from the first non-empty line, strictly.

    The line must hold exactly one verdict token (``<assistant 1>``, ``Assistant 1``,
    ``assistant1``, ``<equal>``, ``equal``, ``tie``), no negation anywhere, no question mark, and
    besides the token only words that affirm it ("The better one is <assistant 2>", "I prefer
    assistant 1"); a reason after "because"/"since"/"as" may follow if it neither negates nor
    compares. Case, surrounding whitespace, markdown emphasis, quotes and a leading ``Output:`` or
    ``Verdict:`` are tolerated. A line that names both assistants, an assistant and a tie
    ("Assistant 1 <equal>"), negates or compares is not a verdict: ``ParseError`` carrying the
    raw text, and the judge is asked again.
    """
    line = _normalize(first_line(text))
    tokens = list(_TOKEN_RE.finditer(line))
    problem = _ambiguity(line, tokens)
    if problem is not None:
        raise ParseError(problem, raw=text)
    return _token_verdict(tokens[0])


_NUMBER = r"-?\d+(?:\.\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_LABELLED_RE = re.compile(rf"\bassistant\s*([12])(?:'s)?(?:\s+score)?\s*[:=\-]?\s*({_NUMBER})")
_SCORE_WORDS = frozenset({"score", "scores", "rating", "ratings", "output", "result", "and", "respectively"})
SCORE_RANGE = (1.0, 10.0)
"""The scale the score-mode prompt asks for; a score outside it does not answer that prompt, and
its width is what one order can move the decision (``--judge-early-exit``)."""


def _score(text: str, raw: str) -> float:
    value = float(text)
    if not SCORE_RANGE[0] <= value <= SCORE_RANGE[1]:
        raise ParseError(f"judge score {text} outside {SCORE_RANGE[0]:g}-{SCORE_RANGE[1]:g}", raw=raw)
    return value


def _score_texts(line: str, raw: str) -> tuple[str, str, str]:
    """The two score texts (Assistant 1's, Assistant 2's) and what is left of the line."""
    labelled = list(_LABELLED_RE.finditer(line))
    if labelled:
        by_label = {m.group(1): m.group(2) for m in labelled}
        if len(labelled) != 2 or set(by_label) != {"1", "2"}:
            raise ParseError("judge's first line must label each assistant's score once", raw=raw)
        return by_label["1"], by_label["2"], _LABELLED_RE.sub(" ", line)
    numbers = _NUMBER_RE.findall(line)
    if len(numbers) != 2:
        raise ParseError(f"expected two scores on the judge's first line, found {len(numbers)}", raw=raw)
    return numbers[0], numbers[1], _NUMBER_RE.sub(" ", line)


def parse_score_pair(text: str) -> tuple[float, float]:
    """Score mode: exactly two numbers (1-10) on the first non-empty line, for Assistant 1 and 2.

    Either bare ("8 6", "7.5, 9") or labelled ("Assistant 1: 8, Assistant 2: 6", in any order).
    Nothing else numeric may be on the line ("8/10 6/10" holds four numbers), no decimal comma
    ("7,5 9" could be read two ways) and no word other than a score label ("Scores: 8 6");
    anything else raises ``ParseError`` carrying the raw text.
    """
    line = _normalize(first_line(text))
    if re.search(r"\d,\d", line):
        raise ParseError("judge's first line has a comma between digits (a decimal comma?)", raw=text)
    first, second, rest = _score_texts(line, text)
    odd = [w for w in _words(rest) if w not in _SCORE_WORDS]
    if odd or _NUMBER_RE.search(rest):
        what = odd[0] if odd else "a number"
        raise ParseError(f"judge's first line holds more than two scores ({what!r})", raw=text)
    return _score(first, text), _score(second, text)


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

    Per-order scores lie in an interval of width ``span`` (1 for verdicts, 9 for 1-10 scores).
    Acceptance needs ``edited_1 + edited_2 > previous_1 + previous_2``; the second order can add at
    most ``span`` in the edit's favour, so a first-order lead of ``span`` for the previous response
    makes acceptance impossible and the second call cannot change the outcome.
    """
    return forward[0] - forward[1] >= span
