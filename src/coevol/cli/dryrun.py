"""``coevol refine --dry-run``: what a run would cost, before a single request is sent.

The input is streamed (flat memory whatever its size) into ``coevol.plan.estimate_examples``,
the pure estimator that prices the loop's declared call plan; this module reads the file and
formats the result.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson

from coevol.config import Config
from coevol.io.readers import read_examples
from coevol.plan import DryRunEstimate, RoleEstimate, calls_per_turn, estimate_examples
from coevol.prompts.templates import PromptSet
from coevol.store.sqlite import connect_read_only
from coevol.tree.settings import TreeSettings

__all__ = [
    "DryRunEstimate",
    "Measured",
    "RoleEstimate",
    "calls_per_turn",
    "estimate",
    "format_estimate",
    "format_expected",
    "judge_check_cost",
    "judge_check_line",
    "measured_rows",
]


@dataclass(frozen=True, slots=True)
class Measured:
    """What the rows already refined in a store cost, per row: the basis of an expected figure."""

    store: Path
    rows: int
    calls_per_row: float
    tokens_per_row: dict[str, tuple[float, float]]  # role -> (prompt, completion)

    def cost_per_row(self, prices: dict[str, tuple[float, float]]) -> float | None:
        if not prices:
            return None
        return sum(
            (p * prices[role][0] + c * prices[role][1]) / 1e6
            for role, (p, c) in self.tokens_per_row.items()
            if role in prices
        )


def measured_rows(store: Path, *, limit: int = 10_000) -> Measured | None:
    """The mean calls and tokens per row over (up to ``limit``) rows the store has finished, e.g.
    a ``--limit 5`` preview; None without a store or a finished row. Opened read-only."""
    if not store.is_file():
        return None
    calls, rows = 0, 0
    tokens: dict[str, tuple[int, int]] = {}
    try:
        with contextlib.closing(connect_read_only(store)) as db:
            for (payload,) in db.execute("SELECT payload FROM samples LIMIT ?", (limit,)):
                usage = orjson.loads(payload)["record"]["usage"]
                rows += 1
                for role, u in usage.items():
                    calls += int(u["calls"])
                    p, c = tokens.get(role, (0, 0))
                    tokens[role] = (p + int(u["prompt_tokens"]), c + int(u["completion_tokens"]))
    except (sqlite3.Error, ValueError, KeyError, TypeError):
        return None  # not a store this coevol reads: no expected figure, the bounds still stand
    if not rows:
        return None
    per_row = {role: (p / rows, c / rows) for role, (p, c) in sorted(tokens.items())}
    return Measured(store, rows, calls / rows, per_row)


def estimate(
    config: Config,
    input_path: Path | str,
    *,
    input_format: str | None = None,
    offset: int = 0,
    limit: int | None = None,
    prompts: PromptSet,
    calls_per_second: float | None = None,
) -> DryRunEstimate:
    """Stream the input and bound the calls, tokens and money a run with ``config`` would need."""
    items = read_examples(input_path, fmt=input_format, offset=offset, limit=limit)
    return estimate_examples(config, items, prompts, calls_per_second=calls_per_second)


def _n(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def _range(low: float, high: float, sep: str = "-") -> str:
    return _n(low) if _n(low) == _n(high) else f"{_n(low)}{sep}{_n(high)}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    return f"{seconds / 3600:.1f}h"


def format_expected(measured: Measured, examples: int, prices: dict[str, tuple[float, float]]) -> str:
    """``expected ~N calls, ~$X`` for the rows of ``examples`` the store has not finished, at the
    rate it measured (finished rows replay for nothing). Pure."""
    rows = max(0, examples - measured.rows)
    text = f"expected ~{_n(measured.calls_per_row * rows)} calls"
    cost = measured.cost_per_row(prices)
    if cost is not None:
        text += f", ~${cost * rows:.2f}"
    noun = "row" if measured.rows == 1 else "rows"
    return (
        f"{text} for the {rows} rows left (at the {measured.calls_per_row:.1f} calls per row of the "
        f"{measured.rows} {noun} already refined in {measured.store.name}, which replay for nothing)"
    )


def judge_check_line(pairs: int, reasks: int) -> str:
    """What ``--judge-check`` adds before the run: each built-in pair judged in both orders. Pure."""
    return (
        f"--judge-check first: {2 * pairs} judge calls ({pairs} built-in pairs in both orders; + up to "
        f"{2 * pairs * reasks} re-asks), not in the figures above; a rerun replays them from the store"
    )


def judge_check_cost(config: Config) -> None:
    """Print the dry run's line for ``--judge-check``'s own calls, when it is on."""
    if config.judge_check:
        from coevol.judge_check.run import load_pairs

        sys.stdout.write(judge_check_line(len(load_pairs()), config.judge_reasks) + "\n")


def _tree_line(tree: TreeSettings) -> str:
    return (
        f"{tree.algorithm}, branch {tree.branch}, keep {tree.keep}, depth {tree.depth}, "
        f"gate {tree.end_gate:g}, {tree.expand} children, {tree.value} value"
    )


def _tree_costs(tree: TreeSettings) -> str:
    """Best and worst case per sample, against CoEvol's loop (8 calls per iteration, K=3: 24)."""
    best, worst = tree.best(), tree.worst()
    child = "refine requests" if tree.expand == "spar" else "CoEvol children (6 calls each)"
    evaluation = (
        f"critic evaluations of {tree.votes} votes"
        if tree.value == "critic"
        else "judge comparisons (2 calls each)"
    )
    return (
        f"per sample: best {best.refines} {child} and {best.evaluations} {evaluation}; worst "
        f"{worst.refines} and {worst.evaluations} (CoEvol's loop: 8 to 24 calls); not counted: "
        f"refine re-tries (up to {tree.tries} per child) and re-draws of tied votes (up to {tree.draws})"
    )


def format_estimate(est: DryRunEstimate) -> str:
    """A short human-readable report (plain text, for stdout)."""
    mode = f"{est.mode}, K={est.max_rounds}" if est.mode == "full" else est.mode
    lines = [
        f"dry run ({mode}): nothing was sent",
        f"rows {est.rows}: {est.examples} to refine, {est.rejected} rejected; {est.turns} turns to refine",
    ]
    if est.tree is not None:
        lines[0] = f"dry run (tree: {_tree_line(est.tree)}): nothing was sent"
        lines.append(_tree_costs(est.tree))
    calls = f"calls {_range(est.calls_min, est.calls_max, ' to ')}"
    if est.reask_calls_max:
        calls += f" (+ up to {_n(est.reask_calls_max)} re-asks of unparseable verdicts)"
    lines.append(calls)
    lines.append(
        f"prompt tokens {_range(est.prompt_tokens_min, est.prompt_tokens_max, ' to ')}, "
        f"completion tokens at most {_n(est.completion_tokens_max)}"
    )
    lines.append(f"{'role':<10}{'calls':>16}{'prompt tokens':>20}{'completion <=':>15}{'cost $':>20}")
    for role, r in est.roles.items():
        if not r.calls_max:
            continue
        cost = "-" if r.cost_max is None else f"{r.cost_min or 0:.2f}-{r.cost_max:.2f}"
        lines.append(
            f"{role:<10}{_range(r.calls_min, r.calls_max):>16}"
            f"{_range(r.prompt_tokens_min, r.prompt_tokens_max):>20}"
            f"{_n(r.completion_tokens_max):>15}{cost:>20}"
        )
    if est.cost_max is not None:
        lines.append(f"cost ${est.cost_min or 0:.2f} to ${est.cost_max:.2f}")
    if est.unpriced_roles:
        lines.append(f"no price configured for: {', '.join(est.unpriced_roles)} (set price: in the config)")
    seconds = est.seconds
    if seconds is not None:
        lines.append(
            f"time {_duration(seconds[0])} to {_duration(seconds[1])} at {est.calls_per_second:g} calls/s "
            "(the rate you gave; the server's speed decides it)"
        )
    else:
        lines.append("time: not estimated (give a measured calls/s rate for one)")
    lines.append(
        "bounds: tokens are characters/4; the low end leaves out the model answers the prompts quote,"
        " the high end counts each at max_tokens"
    )
    return "\n".join(lines) + "\n"
