"""Run a comparison on the engine: read and match, judge every differing pair, write the result.

Everything that can be refused is refused before the first request: a missing input, a result
path that is an input or a working file, a held lock, rows that do not match. The judge's calls go
through the engine's dispatcher, so they share its call cache (``RESULT.coevol.db``, or ``--cache``
shared with refine runs), its retries, rate limits and budget: rerunning after a crash or a stop
sends no call that had finished. The judge may be another, stronger model than the refiner: only
the ``judge`` role of the configuration is used, for every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from coevol.audit import JudgeAudit
from coevol.compare.decide import Outcome, Rule, Tally, finding, outcome
from coevol.compare.result import candidate_document, compare_document, unit_record
from coevol.compare.units import Side, Unit, match_rows, units_of
from coevol.config import ROLES, Config, RoleConfig, uses_embedded
from coevol.domain import Example, JudgeTrace
from coevol.engine.build import Engine, build_engine
from coevol.engine.dispatch import RunStats
from coevol.errors import BudgetExceeded, ConfigError, LLMError, OutputError
from coevol.extras import check_extras
from coevol.io.guard import RunLock, check_cache, check_not_links, check_outputs
from coevol.io.readers import read_examples
from coevol.io.writers import write_whole
from coevol.llm.types import Backend, Generate
from coevol.prompts.templates import PromptSet, load_prompts
from coevol.roles.agents import judge
from coevol.store.sqlite import Store

__all__ = [
    "CandidatePlan",
    "ComparePaths",
    "CompareRun",
    "acompare_files",
    "compare_files",
    "judge_config",
    "plan_comparison",
]

PathArg = str | os.PathLike[str]
ProgressFn = Callable[[int, int, RunStats], None]
"""Called with (units done, units in all, the call counters): once before the first, then after each."""


@dataclass(frozen=True, slots=True)
class ComparePaths:
    """The result and the files beside it."""

    result: Path
    store: Path
    lock: Path
    partial: Path

    @classmethod
    def beside(cls, result: Path) -> ComparePaths:
        def named(suffix: str) -> Path:
            return result.with_name(result.name + suffix)

        return cls(result, named(".coevol.db"), named(".lock"), named(".partial"))

    def working(self) -> dict[str, Path]:
        return {"the store": self.store, "the lock file": self.lock, "the partial result": self.partial}


@dataclass(slots=True)
class CandidatePlan:
    """One candidate read and matched against the baseline: its units, in baseline order."""

    name: str
    rows: int
    bad_rows: int
    matched_by: str
    units: list[Unit]


@dataclass(slots=True)
class Plan:
    baseline: str
    baseline_rows: int
    baseline_bad_rows: int
    candidates: list[CandidatePlan] = field(default_factory=list)

    @property
    def units(self) -> int:
        return sum(len(c.units) for c in self.candidates)


@dataclass(frozen=True, slots=True)
class CompareRun:
    """A finished comparison: the ``coevol.compare/1`` document, where it went, the calls."""

    document: dict[str, Any]
    paths: ComparePaths
    stats: RunStats


def judge_config(config: Config) -> Config:
    """``config`` with every role set as its judge role is (servers, model, key, price): every
    route is the judge's.

    A comparison asks only the judge; building the other roles as configured could load the
    embedded model, or check servers that are never asked.
    """
    own = config.roles.get("judge", RoleConfig())
    return config.model_copy(update={"roles": {role: own.model_copy() for role in ROLES}})


def _read(path: Path, input_format: str | None) -> tuple[list[Example], int]:
    rows: list[Example] = []
    bad = 0
    for item in read_examples(path, fmt=input_format):
        if isinstance(item, Example):
            rows.append(item)
        else:
            bad += 1
    return rows, bad


def plan_comparison(
    baseline: Path,
    candidates: Sequence[Path],
    prompts: PromptSet,
    *,
    input_format: str | None = None,
    window_rounds: int = 3,
) -> Plan:
    """Read every file and match every candidate against the baseline (``DataError`` on a mismatch).

    Rows that do not parse (a refine run's rejects) are left out of both sides alike and counted.
    """
    base_rows, base_bad = _read(baseline, input_format)
    plan = Plan(str(baseline), len(base_rows), base_bad)
    base = Side(str(baseline), base_rows)
    for path in candidates:
        rows, bad = _read(path, input_format)
        mode, pairs = match_rows(base, Side(str(path), rows))
        plan.candidates.append(
            CandidatePlan(str(path), len(rows), bad, mode, units_of(prompts, pairs, window_rounds))
        )
    return plan


def _prepare(baseline: Path, candidates: Sequence[Path], paths: ComparePaths, cache: Path | None) -> None:
    """Every path refusal, before anything is read, created or sent."""
    inputs = [baseline, *candidates]
    for path in inputs:
        if not path.exists():
            raise OutputError(f"input not found: {path}")
    for path in inputs:
        check_outputs(path, paths.result, paths.working(), None)
        if cache is not None:
            check_cache(path, cache)
    if cache is not None:
        for what, path in {"the result": paths.result, **paths.working()}.items():
            if os.path.realpath(path) == os.path.realpath(cache):
                raise OutputError(f"refusing to run: --cache {cache} is {what}")
    check_not_links([paths.lock, paths.partial])


def _cost(config: Config, stats: RunStats) -> float:
    total = 0.0
    for role, usage in stats.usage.items():
        price = config.role(role).price
        if price is not None:
            total += (usage.prompt_tokens * price.prompt + usage.completion_tokens * price.completion) / 1e6
    return total


async def _judge_unit(
    generate: Generate, prompts: PromptSet, unit: Unit, config: Config, rule: Rule
) -> tuple[dict[str, Any], JudgeTrace | None]:
    if unit.identical:
        return unit_record(unit, Outcome.TIE, None), None
    try:
        trace = await judge(
            generate, prompts, unit.sample, unit.candidate, kind=config.judge, reasks=config.judge_reasks
        )
    except LLMError as exc:
        return unit_record(unit, Outcome.FAILED, None, f"{type(exc).__name__}: {exc}"), None
    return unit_record(unit, outcome(trace, rule), trace), trace


async def _gather(jobs: list[Any], done: Callable[[], None]) -> list[Any]:
    """Run the jobs; the first exception that is not a unit's own failure (a budget, a cancel)
    cancels the rest and propagates once they have stopped."""
    tasks = [asyncio.ensure_future(j) for j in jobs]
    for t in tasks:
        t.add_done_callback(lambda _t: done())
    try:
        finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in finished:
            error = t.exception()
            if error is not None:
                raise error
        return [t.result() for t in tasks]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _summaries(
    plan: Plan, results: list[tuple[dict[str, Any], JudgeTrace | None]], rule: Rule
) -> list[dict[str, Any]]:
    out = []
    at = 0
    for cand in plan.candidates:
        chunk = results[at : at + len(cand.units)]
        at += len(cand.units)
        tally, audit = Tally(), JudgeAudit()
        for record, trace in chunk:
            tally.add(Outcome(record["outcome"]), identical=record["identical"])
            if trace is not None:
                audit.add(trace)
        audit_dict = audit.to_dict()
        out.append(
            candidate_document(
                cand.name,
                rows=cand.rows,
                bad_rows=cand.bad_rows,
                matched_by=cand.matched_by,
                tally=tally,
                audit=audit_dict,
                finding=finding(audit_dict, tally),
                units=[r for r, _ in chunk],
            )
        )
    return out


def write_result(paths: ComparePaths, document: dict[str, Any]) -> None:
    write_whole(paths.result, orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n", paths.partial)


async def acompare_files(
    baseline: PathArg,
    candidates: Sequence[PathArg],
    result: PathArg,
    config: Config | None = None,
    *,
    rule: str = "eq4",
    input_format: str | None = None,
    cache: PathArg | None = None,
    progress: ProgressFn | None = None,
    backends: Mapping[str, Backend] | None = None,
) -> CompareRun:
    """Compare each candidate file with ``baseline`` and write the ``coevol.compare/1`` document.

    Raises ``OutputError`` for a refused path or a held lock and ``DataError`` for rows that do not
    match, before anything is sent; ``BudgetExceeded`` after a clean stop on ``--max-budget`` (the
    finished calls are in the store: rerunning resumes).
    """
    if not candidates:
        raise ConfigError("give at least one candidate file to compare with the baseline")
    try:
        rule_ = Rule(rule)
    except ValueError:
        raise ConfigError(f"unknown rule {rule!r}; expected eq4 or conservative") from None
    cfg = judge_config(config if config is not None else Config())
    base, cands = Path(baseline), [Path(c) for c in candidates]
    paths = ComparePaths.beside(Path(result))
    cache_path = Path(cache) if cache is not None else cfg.cache
    check_extras([base, *cands], embedded=uses_embedded(cfg))
    _prepare(base, cands, paths, cache_path)
    plan = plan_comparison(
        base,
        cands,
        load_prompts(cfg.prompts_dir),
        input_format=input_format,
        window_rounds=cfg.conversation.window_rounds,
    )
    with RunLock(paths.lock, f"coevol compare {base} -o {paths.result}"):
        with contextlib.ExitStack() as stores:
            store = stores.enter_context(Store(paths.store))
            calls = stores.enter_context(Store(cache_path)) if cache_path is not None else store
            engine = await build_engine(cfg, store=calls, backends=dict(backends) if backends else None)
            try:
                document = await _run(engine, cfg, plan, rule_, progress)
            finally:
                await engine.dispatcher.drain()
                await engine.aclose()
        write_result(paths, document)
    return CompareRun(document, paths, engine.dispatcher.stats)


async def _run(
    engine: Engine, cfg: Config, plan: Plan, rule: Rule, progress: ProgressFn | None
) -> dict[str, Any]:
    dispatcher = engine.dispatcher
    stats = dispatcher.stats
    if cfg.max_budget is not None:
        budget = cfg.max_budget

        def check_spend() -> None:
            spent = _cost(cfg, stats)
            if spent >= budget:
                raise BudgetExceeded(f"spent ${spent:.4f} of --max-budget ${budget}")

        dispatcher.after_send = check_spend
    # One llama.cpp worker answers one call at a time: finish pairs one by one, as refine does.
    window = asyncio.Semaphore(cfg.samples_in_flight or (1 if engine.local else cfg.concurrency))
    total, counter = plan.units, [0]

    async def one(unit: Unit) -> tuple[dict[str, Any], JudgeTrace | None]:
        async with window:
            return await _judge_unit(dispatcher, engine.prompts, unit, cfg, rule)

    def done() -> None:
        counter[0] += 1
        if progress is not None:
            progress(counter[0], total, stats)

    if progress is not None:
        progress(0, total, stats)
    results = await _gather([one(u) for c in plan.candidates for u in c.units], done)
    route = dispatcher.routes["judge"]
    return compare_document(
        rule=rule.value,
        judge={
            "model": route.model,
            "endpoint": route.shown,
            "kind": cfg.judge,
            "reasks": cfg.judge_reasks,
        },
        baseline={"path": plan.baseline, "rows": plan.baseline_rows, "bad_rows": plan.baseline_bad_rows},
        candidates=_summaries(plan, results, rule),
    )


def compare_files(
    baseline: PathArg,
    candidates: Sequence[PathArg],
    result: PathArg,
    config: Config | None = None,
    **kwargs: Any,
) -> CompareRun:
    """Synchronous ``acompare_files`` (not inside a running event loop: await that there)."""
    return asyncio.run(acompare_files(baseline, candidates, result, config, **kwargs))
