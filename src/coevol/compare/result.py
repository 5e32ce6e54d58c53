"""The ``coevol.compare/1`` document. Pure: records in, plain JSON-ready dicts out.

::

    schema       "coevol.compare/1"
    rule         "eq4" | "conservative"
    judge        {"model", "endpoint", "kind": "verdict" | "score", "reasks"}
    baseline     {"path", "rows", "bad_rows"}
    table        [{"candidate", "win", "tie", "loss", "total", "win_rate", "low", "high"}, ...]
    candidates   [{"candidate", "rows", "bad_rows", "matched_by": "id" | "position",
                   win, tie, loss, total, unparseable, failed, identical, win_rate, interval,
                   "judge_audit", "finding", "units": [unit, ...]}, ...]

With exactly one candidate its summary (``win`` ... ``interval``, ``judge_audit``, ``finding``)
is repeated at the top level, so ``jq .win_rate`` answers the common question; with several these
top-level fields are absent and ``table`` is the ablation table. ``interval`` is
``{"method": "wilson", "level": 0.95, "low", "high"}`` for the win rate ``(win + tie/2) / total``.

A unit is one assistant turn: ``row`` (1-based, baseline order), ``turn`` (index in the row's turns),
``id``, both lines, ``instruction``, ``input``, ``baseline``, ``candidate`` (the two responses),
``outcome`` (win / tie / loss / unparseable / failed, the candidate's), ``identical`` (decided
without a call), ``scores`` ({"baseline", "candidate"}: each response's average over both orders,
null unless both orders parsed), ``orders`` (forward shows the baseline first) with each order's
``verdict``, winning ``position`` ("1", "2", "tie" or null), ``scores``, ``error`` and every
``attempt`` with its raw text, and ``error`` (why the call failed).
"""

from __future__ import annotations

from typing import Any

from coevol.audit import order_position
from coevol.compare.decide import Outcome, Tally
from coevol.compare.units import Unit
from coevol.domain import JudgeOrderTrace, JudgeTrace

__all__ = ["COMPARE_SCHEMA", "candidate_document", "compare_document", "table_row", "unit_record"]

COMPARE_SCHEMA = "coevol.compare/1"
_SUMMARY = (
    "win", "tie", "loss", "total", "unparseable", "failed", "identical", "win_rate", "interval",
    "judge_audit", "finding",
)  # fmt: skip


def _order(o: JudgeOrderTrace) -> dict[str, Any]:
    return {
        "order": o.order,
        "first": "baseline" if o.order == "forward" else "candidate",
        "verdict": o.verdict,
        "position": order_position(o),
        "scores": None if o.scores is None else {"baseline": o.scores[0], "candidate": o.scores[1]},
        "error": o.error,
        "attempts": [{"text": a.text, "finish_reason": a.finish_reason} for a in o.attempts],
    }


def unit_record(
    unit: Unit, result: Outcome, judge: JudgeTrace | None, error: str | None = None
) -> dict[str, Any]:
    """One judged (or identical, or failed) pair as the document keeps it."""
    scores = None
    if judge is not None and judge.score_previous is not None and judge.score_edited is not None:
        scores = {"baseline": judge.score_previous, "candidate": judge.score_edited}
    return {
        "row": unit.row + 1,
        "turn": unit.turn,
        "id": unit.id,
        "baseline_line": unit.baseline_line,
        "candidate_line": unit.candidate_line,
        "instruction": unit.sample.instruction,
        "input": unit.sample.input,
        "baseline": unit.baseline,
        "candidate": unit.candidate,
        "outcome": result.value,
        "identical": unit.identical,
        "scores": scores,
        "orders": [] if judge is None else [_order(o) for o in judge.orders],
        "error": error,
    }


def candidate_document(
    name: str,
    *,
    rows: int,
    bad_rows: int,
    matched_by: str,
    tally: Tally,
    audit: dict[str, Any],
    finding: str | None,
    units: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "candidate": name,
        "rows": rows,
        "bad_rows": bad_rows,
        "matched_by": matched_by,
        **tally.to_dict(),
        "judge_audit": audit,
        "finding": finding,
        "units": units,
    }


def table_row(candidate: dict[str, Any]) -> dict[str, Any]:
    """One line of the win/tie/loss table (the paper's Table 3/5 shape)."""
    interval = candidate["interval"]
    return {
        "candidate": candidate["candidate"],
        **{k: candidate[k] for k in ("win", "tie", "loss", "total", "win_rate")},
        "low": interval["low"],
        "high": interval["high"],
    }


def compare_document(
    *,
    rule: str,
    judge: dict[str, Any],
    baseline: dict[str, Any],
    candidates: list[dict[str, Any]],
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": COMPARE_SCHEMA,
        "rule": rule,
        "judge": judge,
        "baseline": baseline,
        "table": [table_row(c) for c in candidates],
    }
    if len(candidates) == 1:
        doc.update({k: candidates[0][k] for k in _SUMMARY})
    doc["candidates"] = candidates
    return doc
