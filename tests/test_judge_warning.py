"""The judge finding reaches the terminal while the run goes on and in the end-of-run summary."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from coevol.cli.progress import RunDisplay
from coevol.engine.dispatch import RunStats
from coevol.engine.runner import RunPaths, RunSummary
from coevol.executors.on_ray import add_summary, summary_from_json, summary_to_json
from coevol.multiturn import ExampleOutcome
from tests.test_report_support import record


def _summary(verdicts: list[tuple[str | None, str | None]], rows: int) -> RunSummary:
    summary = RunSummary()
    for i in range(rows):
        summary.add(ExampleOutcome(record(i, verdicts), turns=[]), resumed=False)
    return summary


def _printed(summary: RunSummary, *, live: bool) -> str:
    out = io.StringIO()
    console = Console(file=out, width=400, force_terminal=False, color_system=None)
    display = RunDisplay(console, total=summary.rows, quiet=True)
    if live:
        display.update(summary, RunStats(), force=True)
        console.print(display._finding)
    else:
        display.summary(summary, RunStats(), RunPaths.beside(Path("in.json"), Path("out.json")))
    return out.getvalue()


def test_a_judge_that_always_picks_position_2_is_named_live_and_in_the_summary() -> None:
    summary = _summary([("assistant 2", "assistant 2")], rows=12)
    assert summary.audit.recency == 12 and summary.audit.comparisons == 12
    for live in (True, False):
        text = _printed(summary, live=live)
        assert "The judge looks position-driven: in 12 comparisons" in text
        assert "chose the second position" in text


def test_no_warning_before_enough_comparisons_or_for_a_consistent_judge() -> None:
    assert "position-driven" not in _printed(_summary([("assistant 1", "assistant 1")], rows=9), live=True)
    fair = _summary([("assistant 2", "assistant 1")], rows=20)  # the edit wins in both orders
    assert fair.audit.consistent == 20
    for live in (True, False):
        assert "position-driven" not in _printed(fair, live=live)


def test_shard_summaries_carry_the_audit_across_processes() -> None:
    total = RunSummary()
    for _ in range(3):
        shard = _summary([("assistant 1", "assistant 1")], rows=4)
        add_summary(total, summary_from_json(summary_to_json(shard)))
    assert (total.audit.comparisons, total.audit.primacy) == (12, 12)
    assert "chose the first position" in _printed(total, live=False)
