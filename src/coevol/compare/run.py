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
from coevol.config import Config, RoleConfig
from coevol.domain import COEVOL_ROLES, Example, JudgeTrace, Role
from coevol.engine.dispatch import RunStats
from coevol.engine.job import Job
from coevol.engine.rows import StopTally
from coevol.engine.runplan import RunPlan
from coevol.errors import ConfigError, LLMError, OutputError
from coevol.extras import check_extras
from coevol.io.guard import RunLock, check_cache, check_not_links, check_outputs
from coevol.io.readers import read_examples
from coevol.io.writers import write_whole
from coevol.judge_check.run import guard
from coevol.llm.types import Backend, Generate
from coevol.loop import LoopSettings
from coevol.prompts.templates import PromptSet, load_prompts
from coevol.roles.agents import judge

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
    own = config.roles.get(Role.JUDGE, RoleConfig())
    return config.model_copy(update={"roles": {role: own.model_copy() for role in COEVOL_ROLES}})


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


Judged = tuple[dict[str, Any], JudgeTrace | None]
"""One unit's record in the document, and the judge's trace when it was asked."""


class JudgeWork:
    """The work of a comparison for the row runner (``coevol.engine.rows.Work``): an identical
    pair is a tie without a call, any other is judged in both orders; a failed call is the pair's
    own failure (counted for ``--max-errors``), an unparseable verdict counts for
    ``--max-unparseable``."""

    def __init__(
        self, generate: Generate, prompts: PromptSet, loop: LoopSettings, rule: Rule, done: Callable[[], None]
    ) -> None:
        self.generate = generate
        self.prompts = prompts
        self.kind = loop.judge
        self.reasks = loop.judge_reasks
        self.margin = loop.judge_margin
        self.rule = rule
        self._done = done

    def ready(self, unit: Unit) -> Judged | None:
        return (unit_record(unit, Outcome.TIE, None), None) if unit.identical else None

    async def run(self, unit: Unit) -> Judged:
        try:
            trace = await judge(
                self.generate,
                self.prompts,
                unit.sample,
                unit.candidate,
                kind=self.kind,
                reasks=self.reasks,
                margin=self.margin,
            )
        except LLMError as exc:
            return unit_record(unit, Outcome.FAILED, None, f"{type(exc).__name__}: {exc}"), None
        return unit_record(unit, outcome(trace, self.rule), trace), trace

    def finish(self, unit: Unit, result: Judged) -> StopTally:
        self._done()
        record, trace = result
        result_ = Outcome(record["outcome"])
        if result_ is Outcome.FAILED:
            error = record["error"] or ""
            return StopTally(failure=(error.partition(":")[0], error))
        if trace is None:
            return StopTally()
        return StopTally(judged=1, unparseable=int(result_ is Outcome.UNPARSEABLE))


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
    match, before anything is sent. The pairs go through the one row runner, under the same stop
    rules as a refine run: ``BudgetExceeded`` after a clean stop on ``--max-budget`` or
    ``--max-errors`` (pairs whose calls failed), ``ConfigError`` when the judge gives no usable
    verdict in more than ``max_unparseable`` of the pairs; no result is written then, and the
    finished calls are in the store, so rerunning resumes.
    """
    if not candidates:
        raise ConfigError("give at least one candidate file to compare with the baseline")
    try:
        rule_ = Rule(rule)
    except ValueError:
        raise ConfigError(f"unknown rule {rule!r}; expected eq4 or conservative") from None
    cfg = config if config is not None else Config()
    plan = RunPlan.of(cfg, roles=("judge",))  # a comparison asks the judge alone
    base, cands = Path(baseline), [Path(c) for c in candidates]
    paths = ComparePaths.beside(Path(result))
    cache_path = Path(cache) if cache is not None else plan.cache
    check_extras([base, *cands], embedded=bool(plan.local_roles()))
    _prepare(base, cands, paths, cache_path)
    comparison = plan_comparison(
        base,
        cands,
        load_prompts(plan.prompts_dir),
        input_format=input_format,
        window_rounds=plan.conversation.window_rounds,
    )
    with RunLock(paths.lock, f"coevol compare {base} -o {paths.result}"):
        async with await Job.open(
            plan, store=paths.store, cache=cache_path, backends=backends, items="pairs"
        ) as job:
            document = await _run(job, comparison, rule_, progress)
            stats = job.engine.dispatcher.stats
        write_result(paths, document)
    return CompareRun(document, paths, stats)


async def _run(job: Job, plan: Plan, rule: Rule, progress: ProgressFn | None) -> dict[str, Any]:
    """Judge every unit through the row runner (the job's window, stop rules and clean stop)."""
    engine = job.engine
    dispatcher = engine.dispatcher
    stats = dispatcher.stats
    total, counter = plan.units, [0]

    def done() -> None:
        counter[0] += 1
        if progress is not None:
            progress(counter[0], total, stats)

    if progress is not None:
        progress(0, total, stats)
    results: list[Judged] = []
    await guard(dispatcher, engine.prompts, job.plan, local=engine.local)  # --judge-check
    work = JudgeWork(dispatcher, engine.prompts, job.plan.loop, rule, done)
    units = (u for c in plan.candidates for u in c.units)
    await job.runner(work, lambda _unit, judged: results.append(judged)).run(units)
    route = dispatcher.routes["judge"]
    return compare_document(
        rule=rule.value,
        judge={
            "model": route.model,
            "endpoint": route.shown,
            "kind": job.plan.loop.judge,
            "reasks": job.plan.loop.judge_reasks,
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
