"""Golden statistics on handcrafted traces: judge audit, rounds, lengths, usage, the finding."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from coevol.audit import JudgeAudit, classify_pair, judge_finding, order_position, preference_fairness
from coevol.domain import JudgeOrderTrace, JudgeTrace, Status
from coevol.report.stats import REPORT_SCHEMA, ReportBuilder, histogram_median
from tests.test_report_support import failed, record


def _words(text: str) -> int:
    return len(text.split())


def _builder() -> ReportBuilder:
    return ReportBuilder(count_tokens=_words, tokenizer="words", extract=None)


def _audit(pairs: Sequence[tuple[str | None, str | None]]) -> dict[str, object]:
    b = _builder()
    for i, (f, r) in enumerate(pairs):
        b.add(record(i, [(f, r)]))
    judge: dict[str, object] = b.result()["judge"]
    return judge


@pytest.mark.parametrize(
    ("forward", "reverse", "kind"),
    [
        ("1", "2", "consistent"),
        ("2", "1", "consistent"),
        ("tie", "tie", "consistent"),
        ("1", "1", "primacy"),
        ("1", "tie", "primacy"),
        ("tie", "1", "primacy"),
        ("2", "2", "recency"),
        ("2", "tie", "recency"),
        ("tie", "2", "recency"),
    ],
)
def test_every_pair_of_positions_is_classified(forward: str, reverse: str, kind: str) -> None:
    assert classify_pair(forward, reverse) == kind


def test_order_position_undoes_the_swap() -> None:
    # scores are (previous, edited); in the reverse order the edited response is position 1
    assert order_position(JudgeOrderTrace("forward", scores=(1.0, 0.0))) == "1"
    assert order_position(JudgeOrderTrace("reverse", scores=(1.0, 0.0))) == "2"
    assert order_position(JudgeOrderTrace("reverse", scores=(3.0, 8.0))) == "1"
    assert order_position(JudgeOrderTrace("forward", scores=(5.0, 5.0))) == "tie"
    assert order_position(JudgeOrderTrace("forward")) is None


def test_a_judge_that_always_picks_position_2() -> None:
    audit = _audit([("assistant 2", "assistant 2")] * 12)
    assert audit == {
        "comparisons": 12,
        "consistent": 0,
        "primacy": 0,
        "recency": 12,
        "position_consistency": 0.0,
        "preference_fairness": 1.0,
        "ties": 0,
        "unparseable": 0,
        "single_order": 0,
        "accepted": 0,
        "accepted_longer": None,
        "prob_position_bias": None,  # --judge prob only
    }
    finding = judge_finding(audit)
    assert finding is not None
    assert "in 12 comparisons" in finding and "only 0% of the time" in finding
    assert "chose the second position regardless of content in 100%" in finding
    assert "stronger model for the judge role" in finding


def test_a_judge_that_always_picks_position_1() -> None:
    audit = _audit([("assistant 1", "assistant 1")] * 10)
    assert (audit["primacy"], audit["recency"], audit["preference_fairness"]) == (10, 0, -1.0)
    assert audit["position_consistency"] == 0.0
    assert "chose the first position" in (judge_finding(audit) or "")


def test_a_consistent_judge_has_no_finding_and_its_accepted_edits_are_measured() -> None:
    # forward prefers the edit (position 2), reverse prefers the edit (position 1): accepted
    audit = _audit([("assistant 2", "assistant 1")] * 6 + [("assistant 1", "assistant 2")] * 6)
    assert audit["consistent"] == 12
    assert audit["position_consistency"] == 1.0
    assert audit["preference_fairness"] == 0.0
    assert audit["accepted"] == 6
    assert audit["accepted_longer"] == 1.0  # each edit appends words
    assert judge_finding(audit) is None


def test_ties_and_unparseable_answers() -> None:
    audit = _audit(
        [
            ("equal", "equal"),
            ("equal", "assistant 1"),
            ("assistant 2", "equal"),
            ("assistant 1", None),
            (None, None),
        ]
    )
    assert audit["comparisons"] == 3
    assert (audit["consistent"], audit["primacy"], audit["recency"]) == (1, 1, 1)
    assert audit["ties"] == 3
    assert audit["unparseable"] == 2
    assert audit["position_consistency"] == pytest.approx(1 / 3)
    assert audit["preference_fairness"] == 0.0


def test_single_order_judgements_are_not_comparisons() -> None:
    a = JudgeAudit()
    a.add(JudgeTrace([JudgeOrderTrace("forward", scores=(1.0, 0.0))], 1.0, 0.0, skipped_reverse=True))
    assert (a.comparisons, a.single_order) == (0, 1)
    assert a.to_dict()["position_consistency"] is None
    assert a.to_dict()["preference_fairness"] is None


def test_add_record_is_what_a_live_display_needs() -> None:
    a = JudgeAudit()
    for i in range(10):
        a.add_record(record(i, [("assistant 2", "assistant 2")]))
    a.add_record(failed(10))
    assert a.comparisons == 10
    assert judge_finding(a.to_dict()) is not None


def test_few_comparisons_give_no_finding() -> None:
    audit = _audit([("assistant 2", "assistant 2")] * 9)
    assert audit["position_consistency"] == 0.0
    assert judge_finding(audit) is None
    assert judge_finding(audit, min_comparisons=5) is not None


def test_preference_fairness_range() -> None:
    assert preference_fairness(0, 0) == 0.0
    assert preference_fairness(3, 1) == -0.5
    assert preference_fairness(1, 3) == 0.5


def test_histogram_median_is_exact() -> None:
    assert histogram_median(Counter()) is None
    assert histogram_median(Counter({5: 1})) == 5
    assert histogram_median(Counter({1: 1, 3: 1})) == 2
    assert histogram_median(Counter({1: 2, 10: 1})) == 1
    assert histogram_median(Counter({2: 2, 4: 2})) == 3


def test_the_whole_document() -> None:
    b = _builder()
    b.add(
        record(
            0,
            [("assistant 2", "assistant 1"), ("assistant 2", "assistant 1"), ("assistant 1", "assistant 2")],
        )
    )
    b.add(record(1, [("assistant 2", "assistant 2")]))
    b.add(failed(2))
    doc = b.result(sent=4, prices={"judge": (1.0, 2.0)}, wall_time_s=12.5)
    assert doc["schema"] == REPORT_SCHEMA
    assert (doc["rows"], doc["units"]) == (3, 3)
    assert doc["status"] == {"refined": 1, "kept": 1, "failed": 1, "rejected": 0}
    assert doc["rounds"] == {"0": 2, "1": 0, "2": 1, "3": 0}
    # original "Plants make food." (3 words) everywhere; record 0 gained 2 x 3 words; "hi" = 1
    assert doc["length"] == {
        "tokenizer": "words",
        "original_mean": pytest.approx(7 / 3),
        "final_mean": pytest.approx(13 / 3),
        "original_median": 3,
        "final_median": 3,
    }
    assert doc["directions"] is None
    assert doc["judge"]["comparisons"] == 4
    assert doc["judge"]["accepted"] == 2
    assert doc["usage"] == {
        "calls": 2 * 3 + 3 + 2 + 1,
        "cached": 12 - 4,
        "by_role": {
            "editor": {"calls": 4, "prompt_tokens": 100, "completion_tokens": 60, "cost": None},
            "judge": {
                "calls": 8,
                "prompt_tokens": 200,
                "completion_tokens": 40,
                "cost": pytest.approx(280 / 1e6),
            },
        },
        "cost": pytest.approx((200 * 1.0 + 40 * 2.0) / 1e6),
    }
    assert doc["models"] == {"editor": ["ed"], "judge": ["tiny-judge"]}
    assert doc["wall_time_s"] == 12.5
    assert doc["stop_reasons"] == {"error": 1, "rejected": 2}


def test_rounds_run_to_the_runs_k_when_a_unit_reached_it() -> None:
    from coevol.domain import StopReason

    b = _builder()
    r = record(0, [("assistant 2", "assistant 1")])
    r.turns[0].stop_reason = StopReason.MAX_ROUNDS  # a run with K = 1
    b.add(r)
    assert b.result()["rounds"] == {"0": 0, "1": 1}


def test_status_counts_every_status() -> None:
    b = _builder()
    b.add(record(0, [("assistant 1", "assistant 2")], status=Status.REJECTED))
    assert b.result()["status"]["rejected"] == 1


def test_directions_parse_a_bounded_uniform_sample_and_count_every_line() -> None:
    seen: list[int] = []

    def extract(lines: list[str]) -> list[tuple[str | None, str | None]]:
        seen.append(len(lines))
        return [("add", "example") if line.startswith("Add") else (None, None) for line in lines]

    b = ReportBuilder(count_tokens=None, tokenizer="words", extract=extract, direction_lines=5)
    for i in range(10):  # 10 advisor answers of 2 lines: "Add an example." and "Explain the terms."
        b.add(record(i, [("assistant 1", "assistant 2")]))
    d = b.result()["directions"]
    assert seen == [5]
    assert d["suggestions"] == 20 and d["sampled"] == 5
    assert 0 <= d["parsed"] <= 5
    assert d["top"] == (
        [] if d["parsed"] == 0 else [{"verb": "add", "object": "example", "count": d["parsed"]}]
    )


def test_all_lines_are_parsed_below_the_cap() -> None:
    b = ReportBuilder(
        count_tokens=None, tokenizer="words", extract=lambda lines: [("add", None)] * len(lines)
    )
    for i in range(3):
        b.add(record(i, [("assistant 1", "assistant 2")]))
    d = b.result()["directions"]
    assert (d["suggestions"], d["sampled"], d["parsed"], d["verbs"], d["pairs"]) == (6, 6, 6, 1, 0)


def test_wall_time_leaves_out_the_pause_before_a_rerun() -> None:
    from coevol.report.stats import active_seconds

    assert active_seconds([]) is None
    assert active_seconds([5.0]) == 0.0
    assert active_seconds([0.0, 10.0, 30.0]) == 30.0
    # a failed run at t=0..20, then the real run a day later taking 100 s
    assert active_seconds([0.0, 20.0, 86_400.0, 86_450.0, 86_500.0]) == 120.0
    assert active_seconds([0.0, 700.0], gap=600.0) == 0.0
    assert active_seconds([0.0, 500.0], gap=600.0) == 500.0


def test_the_reports_wall_time_ignores_an_earlier_failed_run(tmp_path: Path) -> None:
    import sqlite3

    from coevol.report.reader import read_store
    from coevol.store.sqlite import Store

    path = tmp_path / "out.jsonl.coevol.db"
    Store(path).close()
    with sqlite3.connect(path) as db:
        rows = [
            (f"k{i}", "judge", "m", "x", 1, 1, "stop", t)
            for i, t in enumerate([1000.0, 1010.0, 90_000.0, 90_060.0])
        ]
        columns = "key, role, model, text, prompt_tokens, completion_tokens, finish_reason, created"
        db.executemany(f"INSERT INTO calls ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.close()
    facts, note = read_store(path)
    assert note is None and facts is not None
    assert (facts.calls, facts.wall_time_s) == (4, 70.0)
