"""The paper's analyses over typed trace records. Pure: no I/O; streaming, bounded memory.

``ReportBuilder.add`` takes one ``TraceRecord`` at a time and keeps only counters (lengths are kept
as a histogram of token counts, so medians stay exact in memory bounded by the longest response).
``ReportBuilder.result`` is the ``coevol.report/1`` document (see ``REPORT_SCHEMA``).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from coevol.audit import JudgeAudit
from coevol.domain import Status, StopReason, TraceRecord, Usage
from coevol.report.directions import DirectionCounter, Extract, suggestion_lines

__all__ = [
    "DEFAULT_DIRECTION_LINES",
    "IDLE_GAP",
    "REPORT_SCHEMA",
    "ReportBuilder",
    "Reservoir",
    "active_seconds",
    "histogram_median",
]

_T = TypeVar("_T")

REPORT_SCHEMA = "coevol.report/1"
DEFAULT_DIRECTION_LINES = 5_000
"""Suggestion lines parsed for Fig. 3 at most; a larger run parses a uniform random sample of this
many (every line is still counted). spaCy parses about a thousand lines a second per core."""


IDLE_GAP = 600.0
"""Seconds between two answered calls past which the run is taken to have stopped (a failed or
interrupted run, then a rerun later): the gap is not counted as wall time."""


def active_seconds(times: Iterable[float], gap: float = IDLE_GAP) -> float | None:
    """The time calls were being answered: from first to last call, less every pause longer than
    ``gap`` (so an earlier, failed run in the same store does not add the hours until the rerun).
    ``times`` must be sorted; None when there is none. Pure."""
    total, first, last = 0.0, None, None
    for t in times:
        if first is None:
            first = last = t
            continue
        assert last is not None
        if t - last > gap:
            total += last - first
            first = t
        last = t
    if first is None or last is None:
        return None
    return total + (last - first)


def histogram_median(hist: Counter[int]) -> float | None:
    """The exact median of the values a histogram counts (mean of the middle two when even)."""
    total = sum(hist.values())
    if total == 0:
        return None
    lo_rank, hi_rank = (total - 1) // 2, total // 2
    lo = hi = None
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if lo is None and seen > lo_rank:
            lo = value
        if seen > hi_rank:
            hi = value
            break
    assert lo is not None and hi is not None
    return (lo + hi) / 2


def _mean(hist: Counter[int]) -> float | None:
    total = sum(hist.values())
    return None if total == 0 else sum(v * n for v, n in hist.items()) / total


_UNUSUAL_STOPS = {
    StopReason.JUDGE_UNPARSEABLE,
    StopReason.EDIT_UNUSABLE,
    StopReason.CONTEXT_LENGTH,
    StopReason.ERROR,
}


def is_unusual(record: TraceRecord) -> bool:
    """A row worth showing in every report: failed or rejected, an unusual stop, a cut-off answer."""
    if record.status in (Status.FAILED, Status.REJECTED) or record.failure is not None:
        return True
    for turn in record.turns:
        if turn.stop_reason in _UNUSUAL_STOPS or turn.failure is not None:
            return True
        for it in turn.all_iterations():
            answers = [it.suggestions, it.edit]
            if it.debate is not None:
                answers += [
                    it.debate.positive_stage1,
                    it.debate.critical_stage1,
                    it.debate.positive_stage2,
                    it.debate.critical_stage2,
                ]
            if it.judge is not None:
                answers += [a for o in it.judge.orders for a in o.attempts]
            if any(a is not None and a.truncated for a in answers):
                return True
    return False


@dataclass(slots=True)
class Reservoir(Generic[_T]):
    """A uniform random sample of at most ``limit`` items of a stream (reservoir sampling, seed 0);
    ``limit`` None keeps them all. The report's embedded rows and Fig. 3's lines both use it."""

    limit: int | None
    seen: int = 0
    items: list[_T] = field(default_factory=list)
    _rng: random.Random = field(default_factory=lambda: random.Random(0))

    def offer(self, item: _T) -> None:
        self.seen += 1
        if self.limit is None or len(self.items) < self.limit:
            self.items.append(item)
            return
        j = self._rng.randrange(self.seen)
        if j < self.limit:
            self.items[j] = item


@dataclass(slots=True)
class ReportBuilder:
    """Accumulates the report one trace record at a time.

    ``count_tokens`` is None when the tokenizer is unavailable (lengths are then null) and
    ``extract`` None when the directions parser is (directions are then null); ``missing`` names
    what was left out and why, for the page and the JSON.
    """

    count_tokens: Callable[[str], int] | None
    tokenizer: str
    extract: Extract | None
    missing: list[dict[str, str]] = field(default_factory=list)
    rows: int = 0
    units: int = 0
    status: Counter[str] = field(default_factory=Counter)
    rounds: Counter[int] = field(default_factory=Counter)
    stop_reasons: Counter[str] = field(default_factory=Counter)
    max_rounds_seen: int | None = None
    original_len: Counter[int] = field(default_factory=Counter)
    final_len: Counter[int] = field(default_factory=Counter)
    direction_lines: int = DEFAULT_DIRECTION_LINES
    directions: DirectionCounter = field(default_factory=DirectionCounter)
    _lines: Reservoir[str] | None = None
    judge: JudgeAudit = field(default_factory=JudgeAudit)
    usage: dict[str, Usage] = field(default_factory=dict)
    models: dict[str, Counter[str]] = field(default_factory=dict)
    tree_depths: Counter[int] = field(default_factory=Counter)  # tree runs: units by depth reached

    def add(self, record: TraceRecord) -> None:
        self.rows += 1
        self.status[record.status.value] += 1
        for role, u in record.usage.items():
            self.usage.setdefault(role, Usage()).add(u)
        for role, route in record.roles.items():
            self.models.setdefault(role, Counter())[route.model] += 1
        for turn in record.turns:
            self.units += 1
            self.rounds[turn.accepted_edits] += 1
            self.stop_reasons[turn.stop_reason.value] += 1
            if turn.tree is not None:
                self.tree_depths[turn.tree.depth_reached] += 1
            if turn.stop_reason is StopReason.MAX_ROUNDS:
                self.max_rounds_seen = max(self.max_rounds_seen or 0, turn.accepted_edits)
            if self.count_tokens is not None:
                self.original_len[self.count_tokens(turn.original)] += 1
                self.final_len[self.count_tokens(turn.final)] += 1
            for it in turn.all_iterations():
                if it.suggestions is not None and self.extract is not None:
                    self._offer_lines(it.suggestions.text)
            for judge in turn.judgments():
                self.judge.add(judge)
            for it in turn.iterations:
                if it.accepted:
                    self.judge.add_accepted(self._longer(it.previous, it.edited))

    def _line_sample(self) -> Reservoir[str]:
        """Fig. 3 parses at most ``direction_lines`` suggestion lines (0: all of them)."""
        return Reservoir(self.direction_lines or None)

    def _offer_lines(self, text: str) -> None:
        if self._lines is None:
            self._lines = self._line_sample()
        for line in suggestion_lines(text):
            self._lines.offer(line)

    def directions_dict(self) -> dict[str, Any] | None:
        """Parse the sampled lines (once) and count their directions."""
        if self.extract is None:
            return None
        sample = self._lines or self._line_sample()
        if sample.items:
            for start in range(0, len(sample.items), 4096):
                for direction in self.extract(sample.items[start : start + 4096]):
                    self.directions.add(direction)
            sample.items = []
        self._lines = sample
        d = self.directions.to_dict()
        return {**d, "suggestions": sample.seen, "sampled": d["suggestions"]}

    def _longer(self, previous: str, edited: str | None) -> bool | None:
        if self.count_tokens is None or edited is None:
            return None
        return self.count_tokens(edited) > self.count_tokens(previous)

    def rounds_dict(self) -> dict[str, int]:
        """Units by accepted edits, "0" to K; K is the run's max rounds when a unit reached it,
        else the larger of 3 (the paper's K) and the most edits seen."""
        seen = max(self.rounds, default=0)
        k = self.max_rounds_seen if self.max_rounds_seen is not None else max(3, seen)
        k = max(k, seen)
        return {str(i): self.rounds.get(i, 0) for i in range(k + 1)}

    def tree_dict(self) -> dict[str, Any] | None:
        """Tree runs only: units by depth reached, and how many passed the gate."""
        units = sum(self.tree_depths.values())
        if not units:
            return None
        root = self.stop_reasons.get(StopReason.ROOT_PASSES.value, 0)
        passed = root + self.stop_reasons.get(StopReason.TREE_PASS.value, 0)
        return {
            "units": units,
            "depth": {str(d): self.tree_depths.get(d, 0) for d in range(max(self.tree_depths) + 1)},
            "passed": passed,
            "root_passes": root,
            "pass_rate": passed / units,
        }

    def length_dict(self) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer,
            "original_mean": _mean(self.original_len),
            "final_mean": _mean(self.final_len),
            "original_median": histogram_median(self.original_len),
            "final_median": histogram_median(self.final_len),
        }

    def usage_dict(
        self, *, sent: int | None, prices: dict[str, tuple[float, float]] | None
    ) -> dict[str, Any]:
        """``sent`` is how many distinct calls the store answered (None without a store): the
        rest of the trace's calls were replayed or shared, i.e. ``cached``."""
        calls = sum(u.calls for u in self.usage.values())

        def cost(role: str, u: Usage) -> float | None:
            if not prices or role not in prices:
                return None
            return (u.prompt_tokens * prices[role][0] + u.completion_tokens * prices[role][1]) / 1e6

        by_role = {
            role: {
                "calls": u.calls,
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "cost": cost(role, u),
            }
            for role, u in sorted(self.usage.items())
        }
        costs = [c["cost"] for c in by_role.values() if c["cost"] is not None]
        return {
            "calls": calls,
            "cached": None if sent is None else max(0, calls - sent),
            "by_role": by_role,
            "cost": sum(costs) if prices else None,
        }

    def result(
        self,
        *,
        sent: int | None = None,
        prices: dict[str, tuple[float, float]] | None = None,
        wall_time_s: float | None = None,
    ) -> dict[str, Any]:
        """The ``coevol.report/1`` document (with ``tree`` for a run of the tree strategy)."""
        tree = self.tree_dict()
        return {
            "schema": REPORT_SCHEMA,
            "rows": self.rows,
            "units": self.units,
            "status": {s.value: self.status.get(s.value, 0) for s in Status},
            "rounds": self.rounds_dict(),
            "stop_reasons": dict(sorted(self.stop_reasons.items())),
            "length": self.length_dict(),
            "directions": self.directions_dict(),
            "judge": self.judge.to_dict(),
            "usage": self.usage_dict(sent=sent, prices=prices),
            "models": {role: sorted(c) for role, c in sorted(self.models.items())},
            "wall_time_s": wall_time_s,
            "missing": list(self.missing),
            **({"tree": tree} if tree is not None else {}),
        }
