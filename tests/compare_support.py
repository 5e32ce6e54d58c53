"""A deterministic judge for the compare tests, and the datasets whose totals are hand-computed.

The judge reads both responses from the Table 9 prompt and scores each by its count of ``+``.
A gap of 2 or more: the better one wins in both orders. A gap of 1: the better one is named only
when it is shown second, else ``<equal>`` (a mild recency lean, so Eq. 4 and MT-Bench's rule
disagree). No gap: ``<equal>``. Score mode answers the two counts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_BLOCK = re.compile(
    r"\[The Start of Assistant ([12])'s Response\]\n(.*?)\n\[The End of Assistant \1's Response\]", re.S
)


def responses(body: dict[str, Any]) -> tuple[str, str]:
    text = body["messages"][-1]["content"]
    found = dict(_BLOCK.findall(text))
    return found["1"], found["2"]


def is_judge(body: dict[str, Any]) -> bool:
    return "[The Start of Assistant 1's Response]" in body["messages"][-1]["content"]


def plus_judge(body: dict[str, Any]) -> str:
    first, second = responses(body)
    q1, q2 = first.count("+"), second.count("+")
    gap = q2 - q1
    if gap >= 2 or gap == 1:
        return "<assistant 2>\nAssistant 2 has more plus signs."
    if gap <= -2:
        return "<assistant 1>\nAssistant 1 has more plus signs."
    return "<equal>\nAbout the same."


def always(position: str) -> Any:
    def judge(body: dict[str, Any]) -> str:
        return f"<assistant {position}>\nI like this position."

    return judge


def never_parses(body: dict[str, Any]) -> str:
    return "Both have merits.\n<assistant 1> maybe"


BASE_OUTPUTS = ["a", "b++", "c+", "d++", "e", "f+x"]
CAND_OUTPUTS = ["a+++", "b", "c++", "d+", "e", "f+y"]
# Hand-computed, candidate's view, for plus_judge:
#   row 1: gap +3 -> both orders name the candidate       eq4 win,  conservative win
#   row 2: gap -2 -> both orders name the baseline        eq4 loss, conservative loss
#   row 3: gap +1 -> forward names the candidate (2nd), reverse <equal> -> eq4 win, conservative tie
#   row 4: gap -1 -> forward <equal>, reverse names the baseline (2nd)  -> eq4 loss, conservative tie
#   row 5: identical -> tie, no call
#   row 6: gap 0 -> <equal> twice -> tie
EQ4 = ["win", "loss", "win", "loss", "tie", "tie"]
CONSERVATIVE = ["win", "loss", "tie", "tie", "tie", "tie"]
EQ4_SWAPPED = ["loss", "win", "loss", "win", "tie", "tie"]
CONSERVATIVE_SWAPPED = ["loss", "win", "tie", "tie", "tie", "tie"]
JUDGED_PAIRS = 5  # row 5 is identical


def alpaca(outputs: list[str], *, ids: bool = False, prefix: str = "Task") -> list[dict[str, Any]]:
    rows = []
    for i, out in enumerate(outputs):
        row: dict[str, Any] = {"instruction": f"{prefix} {i + 1}: answer.", "input": "", "output": out}
        if ids:
            row = {"id": f"r{i + 1}", **row}
        rows.append(row)
    return rows


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def judge_requests(requests: list[Any]) -> list[Any]:
    return [r for r in requests if isinstance(r.body, dict) and is_judge(r.body)]
