"""The Python API: refine rows in a notebook or a pipeline, or a whole file, sync or async.

    from coevol import refine
    results = refine([{"instruction": "...", "input": "", "output": "..."}],
                     base_url="http://localhost:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")
    results[0].row["output"], results[0].accepted_edits, results[0].trace

    from coevol import refine_file
    run = refine_file("data.jsonl", "refined.jsonl", base_url=..., model=...)
    run.summary.refined, run.paths.trace

Rows may be Alpaca, ShareGPT or OpenAI ``messages`` dicts; each result's ``row`` keeps the row's
shape and extra fields. A row that cannot be parsed or refined is a result with ``status`` set,
never an exception; configuration problems do raise.

``arefine_file`` is the one file-level entry: the CLI, the tests and the benchmarks all run files
through it. It refuses what would lose a file before anything is sent, holds the output's lock,
finishes a crashed run's renames, opens the store (and the shared call cache), runs, and closes
everything in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coevol.audit import judge_finding
from coevol.config import Config
from coevol.domain import BadRow, Example
from coevol.engine.dispatch import RunStats
from coevol.engine.job import Job
from coevol.engine.runner import ProgressFn, Refined, RefineWork, Runner, RunPaths, RunSummary, run_dir_of
from coevol.engine.runplan import RunPlan
from coevol.errors import DataError, OutputError
from coevol.extras import check_extras
from coevol.io.formats import parse_example, render_example
from coevol.io.guard import RunLock, check_cache, check_not_links, check_outputs
from coevol.io.readers import hub_id, read_examples
from coevol.io.rundir import check_run_dir, claim_run_dir, record_run_dir
from coevol.io.writers import output_kind, recover
from coevol.judge_check.run import guard
from coevol.llm.types import Backend

__all__ = ["FileRun", "Result", "Results", "arefine", "arefine_file", "refine", "refine_file"]

PathArg = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class Result:
    """One row's outcome. ``status``: refined, kept, failed or rejected."""

    row: dict[str, Any] | None
    status: str
    accepted_edits: int
    trace: dict[str, Any]
    error: str | None = None

    @property
    def accepted_rounds(self) -> int:
        """0.2's name for ``accepted_edits``, kept so code written against 0.2 still runs."""
        return self.accepted_edits


@dataclass(frozen=True, slots=True)
class FileRun:
    """A finished file run: where everything went, the counts, the calls.

    ``recovered`` says that a previous run had crashed between its final renames and this run
    finished them first (its own files then replaced them).
    """

    paths: RunPaths
    summary: RunSummary
    stats: RunStats
    dataset_info: Path | None
    recovered: bool = False
    store_commits: int = 0  # transactions the run's store wrote (for benchmarks)
    peak_in_flight: int = 0  # the most requests that were in flight at once (for benchmarks)


def _config(config: Config | None, overrides: dict[str, Any]) -> Config:
    if config is not None and not overrides:
        return config.model_copy(deep=True)
    base = config.model_dump() if config is not None else {}
    return Config.from_mapping({**base, **overrides}, source="refine()")


class Results(list[Result]):
    """The results of ``arefine``, in input order (a plain list), with the run's ``summary``
    (counts, the judge audit), its judge ``finding`` and its call counters (``stats``)."""

    def __init__(self, summary: RunSummary, stats: RunStats) -> None:
        super().__init__()
        self.summary = summary
        self.stats = stats

    @property
    def finding(self) -> str | None:
        """The judge finding ``coevol refine`` prints (e.g. a judge that prefers whichever response
        comes second), or None (also until enough comparisons are in)."""
        return judge_finding(self.summary.audit.to_dict())


def _parsed(rows: Iterable[dict[str, Any]]) -> Iterator[Example | BadRow]:
    """The rows as the row runner's items, parsed lazily; one that cannot be parsed is a bad row."""
    for index, obj in enumerate(rows):
        try:
            yield parse_example(obj, None, index=index, line=index + 1)
        except DataError as exc:
            yield BadRow(index + 1, str(exc), "")


def _result(item: Example | BadRow, done: Refined) -> Result:
    outcome = done.outcome
    if outcome is None:
        assert isinstance(item, BadRow)
        return Result(None, "rejected", 0, {"index": item.line - 1, "error": item.error}, item.error)
    assert isinstance(item, Example)
    failure = outcome.failure
    return Result(
        render_example(item, outcome.turns),
        outcome.status.value,
        outcome.accepted_edits,
        outcome.record.to_dict(),
        None if failure is None else failure.message,
    )


async def arefine(
    rows: Iterable[dict[str, Any]],
    config: Config | None = None,
    *,
    cache: Path | str | None = None,
    **overrides: Any,
) -> Results:
    """Refine ``rows`` concurrently; results come back in input order.

    ``overrides`` are ``Config`` fields (``base_url=``, ``model=``, ``max_rounds=`` ...).
    ``cache`` names a SQLite store of calls, so that a second call with the same rows costs nothing.

    The rows go through the same row runner and stop rules as ``refine_file``: ``max_budget``
    (with prices) and ``max_errors`` raise ``BudgetExceeded``, and a judge without usable verdicts
    (``max_unparseable``) raises ``ConfigError``, each after a clean stop (every call still in
    flight cancelled; with ``cache`` every answer received is kept, so a rerun does not pay for it
    again). Cancelling the task stops the same way. There is no output file, so no file refusals
    and no lock apply, and finished rows are not replayed as a whole, only their calls.
    """
    plan = RunPlan.of(_config(config, overrides))
    async with await Job.open(plan, cache=Path(cache) if cache is not None else None) as job:
        results = Results(RunSummary(), job.engine.dispatcher.stats)
        work = RefineWork(job, results.summary)
        started = time.monotonic()
        try:
            await job.runner(work, lambda item, done: results.append(_result(item, done))).run(_parsed(rows))
        finally:
            results.summary.elapsed = time.monotonic() - started
        results.summary.complete = True
        return results


def refine(
    rows: Iterable[dict[str, Any]],
    config: Config | None = None,
    *,
    cache: Path | str | None = None,
    **overrides: Any,
) -> Results:
    """Synchronous ``arefine`` (not for use inside a running event loop: await ``arefine`` there)."""
    return asyncio.run(arefine(rows, config, cache=cache, **overrides))


def _check_input(input: Path) -> None:
    if hub_id(input) is not None:
        return
    if not input.exists():
        raise OutputError(f"input not found: {input}")


def prepare(paths: RunPaths, cache: Path | None) -> None:
    """Every refusal, before anything is created or sent: a lost input, a clobbered file, a link."""
    hub = hub_id(paths.input) is not None
    _check_input(paths.input)
    if paths.run_dir is not None:  # a link or a file in its place: refused before its files are looked at
        check_run_dir(paths.run_dir, paths.output, paths.pairs, paths.working())
    if hub:  # a missing dataset, revision or split is refused here, before the store is created
        read_examples(paths.input, limit=0)
    check_outputs(None if hub else paths.input, paths.output, paths.working(), paths.pairs)
    if cache is not None:
        check_cache(None if hub else paths.input, cache)
        named = {"the output": paths.output, **paths.working()}
        if paths.pairs is not None:
            named["--pairs"] = paths.pairs
        for what, path in named.items():
            if os.path.realpath(path) == os.path.realpath(cache):
                raise OutputError(f"refusing to run: --cache {cache} is {what}")
    check_not_links([paths.lock, paths.journal])
    output_kind(paths.output)  # an unknown suffix is refused here, not after the store is created
    if paths.pairs is not None:
        output_kind(paths.pairs)


def run_paths(input: PathArg, output: PathArg, pairs: PathArg | None, config: Config) -> RunPaths:
    """The run's files: in ``config.run_dir`` when set, else beside the output (0.2's layout)."""
    out = Path(output)
    folder = run_dir_of(config.run_dir, out)
    return RunPaths.of(Path(input), out, Path(pairs) if pairs is not None else None, folder)


@contextlib.contextmanager
def claimed_lock(paths: RunPaths, description: str) -> Iterator[None]:
    """Hold the run lock, once the run folder (if any) exists; its record is written under it.

    ``--pairs`` gets its own lock beside it in 0.2's layout, in the run folder otherwise (so that
    nothing but the output and the pairs is left beside them)."""
    pairs = [paths.pairs] if paths.pairs is not None else []
    if paths.run_dir is not None:
        claim_run_dir(paths.run_dir)
        pairs = [paths.run_dir / "pairs"] if paths.pairs is not None else []
    with RunLock(paths.lock, description, also=pairs):
        if paths.marker is not None:
            record_run_dir(paths.marker, paths.output, paths.pairs)
        yield


async def arefine_file(
    input: PathArg,
    output: PathArg,
    config: Config | None = None,
    *,
    pairs: PathArg | None = None,
    input_format: str | None = None,
    output_format: str | None = None,
    offset: int = 0,
    limit: int | None = None,
    retry_failed: bool = False,
    cache: PathArg | None = None,
    progress: ProgressFn | None = None,
    backends: Mapping[str, Backend] | None = None,
    **overrides: Any,
) -> FileRun:
    """Refine a dataset file into ``output`` (and its trace, rejects, store and LLaMA-Factory entry).

    Rerunning the same call after a crash or a stop resumes without paying for a finished call
    twice. ``cache`` (or ``config.cache``) names a call store several outputs share. ``progress``
    is called with the live summary and call counters: once before the first row, then after each
    row; after an exception they still hold the stopped run's counts. Raises ``OutputError`` for a
    refused path or a held lock before anything is sent, and why a run stopped
    (``BudgetExceeded``, ``ConfigError`` ...) after a clean stop.
    """
    cfg = _config(config, overrides)
    plan = RunPlan.of(cfg)
    paths = run_paths(input, output, pairs, cfg)
    cache_path = Path(cache) if cache is not None else plan.cache
    check_extras([paths.input, paths.output, paths.pairs], embedded=bool(plan.local_roles()))
    prepare(paths, cache_path)
    with claimed_lock(paths, f"coevol refine {paths.input} -o {paths.output}"):
        recovered = recover(paths.journal, paths.finals())
        async with await Job.open(plan, store=paths.store, cache=cache_path, backends=backends) as job:
            # --judge-check: the judge alone first; not usable stops here, before any refinement call
            await guard(job.engine.dispatcher, job.engine.prompts, plan, local=job.engine.local)
            runner = Runner(
                job,
                paths,
                input_format=input_format,
                output_format=output_format,
                offset=offset,
                limit=limit,
                retry_failed=retry_failed,
                progress=progress,
            )
            stats = job.engine.dispatcher.stats
            if progress is not None:
                progress(runner.summary, stats)
            await runner.run()
            store, peak = job.store, job.engine.dispatcher.peak
    assert store is not None
    return FileRun(paths, runner.summary, stats, runner.dataset_info, recovered, store.commits, peak)


def refine_file(input: PathArg, output: PathArg, config: Config | None = None, **kwargs: Any) -> FileRun:
    """Synchronous ``arefine_file`` (not inside a running event loop: await ``arefine_file`` there)."""
    return asyncio.run(arefine_file(input, output, config, **kwargs))
