"""Pure parts of ``coevol compare``: matching rows, units, the two rules, the interval, the page."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
from rich.console import Console

from coevol.audit import JudgeAudit
from coevol.cli.compare import format_table
from coevol.compare.decide import Outcome, Rule, Tally, finding, outcome, wilson_interval
from coevol.compare.result import COMPARE_SCHEMA, compare_document, unit_record
from coevol.compare.units import Side, match_rows, units_of
from coevol.domain import Example, JudgeOrderTrace, JudgeTrace, Turn
from coevol.errors import DataError
from coevol.io.formats import parse_example
from coevol.prompts.templates import load_prompts
from coevol.report.compare_page import render_compare_page, select_units

PROMPTS = load_prompts(None)


def ex(i: int, obj: dict[str, Any]) -> Example:
    return parse_example(obj, None, index=i, line=i + 1)


def side(name: str, rows: list[dict[str, Any]]) -> Side:
    return Side(name, [ex(i, r) for i, r in enumerate(rows)])


def row(instruction: str, output: str, **extra: Any) -> dict[str, Any]:
    return {**extra, "instruction": instruction, "input": "", "output": output}


def trace(forward: tuple[float, float] | None, reverse: tuple[float, float] | None) -> JudgeTrace:
    return JudgeTrace(
        [JudgeOrderTrace("forward", scores=forward), JudgeOrderTrace("reverse", scores=reverse)]
    )


# matching ---------------------------------------------------------------------------------------
def test_position_mismatch_names_the_first_differing_row() -> None:
    base = side("base.jsonl", [row("A", "1"), row("B", "2"), row("C", "3")])
    cand = side("cand.jsonl", [row("A", "1"), row("B", "2"), row("Z", "3")])
    with pytest.raises(DataError) as err:
        match_rows(base, cand)
    assert str(err.value) == (
        "row 2 (base.jsonl line 3, cand.jsonl line 3) is not the same request: "
        "the instruction of turn 1 differs: 'C' vs 'Z'"
    )


def test_position_needs_equal_row_counts() -> None:
    with pytest.raises(DataError, match=r"base\.jsonl has 2 rows and cand\.jsonl 1"):
        match_rows(side("base.jsonl", [row("A", "1"), row("B", "2")]), side("cand.jsonl", [row("A", "1")]))


def test_rows_are_matched_by_id_when_every_row_has_one() -> None:
    base = side("b", [row("A", "1", id=1), row("B", "2", id="x")])
    cand = side("c", [row("B", "2+", id="x"), row("A", "1+", id=1)])
    mode, pairs = match_rows(base, cand)
    assert mode == "id"
    assert [(b.raw["output"], c.raw["output"]) for b, c in pairs] == [("1", "1+"), ("2", "2+")]


def test_id_matching_errors_name_the_id() -> None:
    base = side("b", [row("A", "1", id=1), row("B", "2", id=2)])
    with pytest.raises(DataError, match=r"c has no row with id 2 \(b line 2\)"):
        match_rows(base, side("c", [row("A", "1", id=1), row("B", "2", id="2")]))
    with pytest.raises(DataError, match=r"id 1 appears twice \(lines 1 and 2\)"):
        match_rows(base, side("c", [row("A", "1", id=1), row("A", "1", id=1)]))
    with pytest.raises(DataError, match="c line 3: id 3 is not in b"):
        match_rows(base, side("c", [row("A", "1", id=1), row("B", "2", id=2), row("C", "3", id=3)]))


def test_a_mismatch_message_is_inert_and_short() -> None:
    base = side("b", [row("\x1b]0;pwn\x07" + "x" * 200, "1")])
    cand = side("c", [row("y", "1")])
    with pytest.raises(DataError) as err:
        match_rows(base, cand)
    assert "\x1b" not in str(err.value) and "\\e]0;pwn\\x07" in str(err.value)
    assert len(str(err.value)) < 250


def test_conversations_give_one_unit_per_assistant_turn() -> None:
    conv = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello"},
            {"from": "human", "value": "2+2?"},
            {"from": "gpt", "value": "4"},
        ]
    }
    refined = {"conversations": [*conv["conversations"][:4], {"from": "gpt", "value": "Four (4)."}]}
    mode, pairs = match_rows(side("b", [conv]), side("c", [refined]))
    units = units_of(PROMPTS, pairs)
    assert mode == "position"
    assert [(u.turn, u.baseline, u.candidate, u.identical) for u in units] == [
        (2, "Hello", "Hello", True),
        (4, "4", "Four (4).", False),
    ]
    assert "2+2?" in units[1].sample.instruction and "Hello" in units[1].sample.instruction


def test_conversations_with_a_changed_user_turn_are_refused() -> None:
    conv = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    other = {"messages": [{"role": "user", "content": "Yo"}, {"role": "assistant", "content": "Hello"}]}
    with pytest.raises(DataError, match="the instruction of turn 1 differs: 'Hi' vs 'Yo'"):
        match_rows(side("b", [conv]), side("c", [other]))


# the two rules -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("forward", "reverse", "eq4", "conservative"),
    [
        ((0, 1), (0, 1), "win", "win"),  # the candidate named in both orders
        ((1, 0), (1, 0), "loss", "loss"),
        ((1, 1), (0, 1), "win", "tie"),  # a tie in one order, the candidate in the other
        ((1, 1), (1, 0), "loss", "tie"),
        ((1, 0), (0, 1), "tie", "tie"),  # always position 1 (forward shows the baseline first)
        ((0, 1), (1, 0), "tie", "tie"),  # always position 2
        ((1, 1), (1, 1), "tie", "tie"),
        ((6, 8), (7, 6), "win", "tie"),  # score mode: averages 6.5 vs 7, orders disagree
        ((8, 6), (7, 9), "tie", "tie"),
    ],
)
def test_eq4_and_conservative(
    forward: tuple[float, float], reverse: tuple[float, float], eq4: str, conservative: str
) -> None:
    t = trace(forward, reverse)
    assert outcome(t, Rule.EQ4) == eq4
    assert outcome(t, Rule.CONSERVATIVE) == conservative


def test_an_unparseable_order_is_unparseable_under_both_rules() -> None:
    assert outcome(trace((1, 0), None), Rule.EQ4) is Outcome.UNPARSEABLE
    assert outcome(trace(None, (1, 0)), Rule.CONSERVATIVE) is Outcome.UNPARSEABLE


def test_wilson_interval_matches_the_closed_form() -> None:
    low, high = wilson_interval(0.5, 100) or (0, 0)
    assert math.isclose(low, 0.40383153, abs_tol=1e-6) and math.isclose(high, 0.59616847, abs_tol=1e-6)
    low, high = wilson_interval(1.0, 10) or (0, 0)
    assert math.isclose(low, 0.72246720, abs_tol=1e-6) and math.isclose(high, 1.0)
    assert wilson_interval(None, 0) is None


def test_tally_counts_ties_as_half_and_leaves_out_unparseable_and_failed() -> None:
    t = Tally()
    for o in ["win", "win", "tie", "loss", "unparseable", "failed"]:
        t.add(Outcome(o))
    t.add(Outcome.TIE, identical=True)
    d = t.to_dict()
    assert (d["win"], d["tie"], d["loss"], d["total"], d["unparseable"], d["failed"], d["identical"]) == (
        2, 2, 1, 5, 1, 1, 1,
    )  # fmt: skip
    assert d["win_rate"] == 0.6
    assert d["interval"]["method"] == "wilson" and d["interval"]["low"] < 0.6 < d["interval"]["high"]


def test_finding_explains_a_position_driven_judge() -> None:
    audit = JudgeAudit()
    for _ in range(12):
        audit.add(trace((0, 1), (1, 0)))  # always position 2
    tally = Tally(tie=12)
    text = finding(audit.to_dict(), tally)
    assert text is not None
    assert text.startswith("The judge looks position-driven: in 12 pairs judged in both orders")
    assert "chose the second position regardless of content in 100% of them" in text
    assert "those pairs count as ties (12 of 12)" in text
    fair = JudgeAudit()
    for _ in range(12):
        fair.add(trace((0, 1), (0, 1)))
    assert finding(fair.to_dict(), Tally(win=12)) is None


# the document, the table, the page ----------------------------------------------------------------
def _doc(instruction: str = "Say hi", candidate_name: str = "cand.jsonl") -> dict[str, Any]:
    base = side("b", [row(instruction, "hi"), row("Same", "x")])
    cand = side("c", [row(instruction, "hello"), row("Same", "x")])
    units = units_of(PROMPTS, match_rows(base, cand)[1])
    t = JudgeTrace(
        [
            JudgeOrderTrace("forward", [], "assistant 2", (0.0, 1.0)),
            JudgeOrderTrace("reverse", [], "assistant 1", (0.0, 1.0)),
        ],
        0.0,
        1.0,
    )
    records = [unit_record(units[0], Outcome.WIN, t), unit_record(units[1], Outcome.TIE, None)]
    tally = Tally(win=1, tie=1, identical=1)
    audit = JudgeAudit()
    audit.add(t)
    cand_doc = {
        "candidate": candidate_name,
        "rows": 2,
        "bad_rows": 0,
        "matched_by": "position",
        **tally.to_dict(),
        "judge_audit": audit.to_dict(),
        "finding": None,
        "units": records,
    }
    return compare_document(
        rule="eq4",
        judge={"model": "m", "endpoint": "http://127.0.0.1:1/v1", "kind": "verdict", "reasks": 2},
        baseline={"path": "b", "rows": 2, "bad_rows": 0},
        candidates=[cand_doc],
    )


def test_document_schema_and_single_candidate_summary() -> None:
    doc = _doc()
    assert doc["schema"] == COMPARE_SCHEMA == "coevol.compare/1"
    assert (doc["win"], doc["tie"], doc["loss"], doc["total"], doc["win_rate"]) == (1, 1, 0, 2, 0.75)
    assert doc["table"] == [
        {
            "candidate": "cand.jsonl",
            "win": 1,
            "tie": 1,
            "loss": 0,
            "total": 2,
            "win_rate": 0.75,
            "low": doc["interval"]["low"],
            "high": doc["interval"]["high"],
        }
    ]
    unit = doc["candidates"][0]["units"][0]
    assert unit["orders"][0]["first"] == "baseline" and unit["orders"][0]["position"] == "2"
    assert unit["orders"][1]["first"] == "candidate" and unit["orders"][1]["position"] == "1"
    assert unit["scores"] == {"baseline": 0.0, "candidate": 1.0}
    several = compare_document(
        rule="eq4", judge=doc["judge"], baseline=doc["baseline"], candidates=doc["candidates"] * 2
    )
    assert "win" not in several and len(several["table"]) == 2


def test_cli_table_shows_markup_and_escapes_as_text() -> None:
    doc = _doc(candidate_name="[bold red]x[/] \x1b]8;;http://evil\x07link")
    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None).print(format_table(doc))
    out = buf.getvalue()
    assert "[bold red]x[/]" in out and "\\e]8;;http://evil\\x07link" in out
    assert "\x1b" not in out and "\x07" not in out


def test_page_escapes_hostile_rows() -> None:
    hostile = '</script><img src=x onerror=alert(1)><svg onload=alert(2)> <a href="javascript:x">j</a>'
    page = render_compare_page(_doc(instruction=hostile), title="t<script>")
    assert "<img" not in page and "<svg onload" not in page and "</script><img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "Content-Security-Policy" in page and "script-src 'sha256-" in page
    assert page.count("<script>") == 1  # the page's own, nothing from the data


def test_page_selection_is_bounded_and_prefers_decided_units() -> None:
    units = [{"outcome": o, "identical": o == "tie"} for o in ["tie", "win", "tie", "loss", "failed"]]
    assert [u["outcome"] for u in select_units(units, 3)] == ["win", "loss", "failed"]
    assert len(select_units(units, 10)) == 5


def test_judge_trace_turns_into_a_record_with_raw_attempts() -> None:
    base = side("b", [row("Q", "one")])
    cand = side("c", [row("Q", "two")])
    unit = units_of(PROMPTS, match_rows(base, cand)[1])[0]
    t = JudgeTrace([JudgeOrderTrace("forward", error="judge verdict not found on its first line")])
    rec = unit_record(unit, Outcome.UNPARSEABLE, t)
    assert rec["outcome"] == "unparseable" and rec["scores"] is None
    assert rec["orders"][0]["error"] == "judge verdict not found on its first line"
    assert isinstance(Turn("user", "x"), Turn)
