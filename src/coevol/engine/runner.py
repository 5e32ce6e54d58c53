"""Refine rows: the work of a refine job, and the file run that writes its results in order.

``RefineWork`` is what every refine entry point (a file, rows in memory, a Ray Data batch, each
Ray shard) hands the one row runner (``coevol.engine.rows``): a bad row or a row finished before
under the same settings is ready at once (replayed from the store, with this run's position),
any other is refined and stored. ``Runner`` is the file run on top of it:

- **writer lifecycle** (``_Outputs``): output, trace, pairs, rejects and the LLaMA-Factory entry
  are ``.partial`` files until the whole input is done, then renamed into place as one set;
- **ordered emission** (``Runner._emit``): the row runner hands each result over once every
  earlier row has been, so each row is written once, in input order;
- **stop handling**: the row runner stops cleanly (see there); the partial files are kept, and
  the summary says why and whether a rerun can succeed.

Every finished example goes to the store, so a rerun replays it without a call and rewrites every
file from scratch: a row is never lost or written twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from coevol.audit import JudgeAudit
from coevol.domain import SCHEMA, BadRow, Example, RoleRoute, Status, StopReason, TraceRecord
from coevol.engine.dispatch import Dispatcher, RunStats
from coevol.engine.job import Job
from coevol.engine.rows import StopTally
from coevol.errors import BudgetExceeded, ConfigError, DataError, NoSpace, RetryableError, TraceSchemaError
from coevol.io import jsonrow
from coevol.io.formats import dataset_info_entry, render_example
from coevol.io.readers import parquet_schema, read_examples
from coevol.io.writers import AtomicFile, RowWriter, commit
from coevol.multiturn import ExampleOutcome, refine_example
from coevol.store.sqlite import Store

__all__ = [
    "RUN_DIR_SUFFIX",
    "RUN_MARKER",
    "ProgressFn",
    "RefineWork",
    "Refined",
    "RunPaths",
    "RunSummary",
    "Runner",
    "judge_counts",
    "resume_key",
    "role_routes",
    "run_dir_of",
]


RUN_DIR_SUFFIX = ".coevol"
"""``--run-dir`` with no folder named: ``OUTPUT.coevol/`` beside the output."""

RUN_MARKER = "run.json"
"""The file that says which output a run folder belongs to (``coevol report DIR`` reads it)."""


def run_dir_of(setting: Path | bool | None, output: Path) -> Path | None:
    """The run folder a ``run_dir`` setting names for ``output``: ``True`` is ``OUTPUT.coevol``,
    ``None``/``False`` is 0.2's layout (every file beside the output)."""
    if setting is None or setting is False:
        return None
    if setting is True:
        return output.with_name(output.name + RUN_DIR_SUFFIX)
    return Path(setting)


@dataclass(frozen=True, slots=True)
class RunPaths:
    """The files of one run: beside the output (0.2's layout), or in one run folder."""

    input: Path
    output: Path
    trace: Path
    rejects: Path
    store: Path
    pairs: Path | None = None
    dataset_info: Path = Path()
    lock: Path = Path()
    journal: Path = Path()
    run_dir: Path | None = None

    @classmethod
    def of(cls, input: Path, output: Path, pairs: Path | None, run_dir: Path | None) -> RunPaths:
        """The run's files in ``run_dir`` when one is given, else beside the output."""
        if run_dir is None:
            return cls.beside(input, output, pairs)
        return cls(
            input=input,
            output=output,
            trace=run_dir / "trace.jsonl",
            rejects=run_dir / "rejects.jsonl",
            store=run_dir / "coevol.db",
            pairs=pairs,
            dataset_info=run_dir / "dataset_info.json",
            lock=run_dir / "lock",
            journal=run_dir / "commit.json",
            run_dir=run_dir,
        )

    @property
    def shards(self) -> Path:
        """The Ray shards' default folder (``--work-dir`` names another)."""
        if self.run_dir is not None:
            return self.run_dir / "shards"
        return self.output.with_name(self.output.name + ".shards")

    @property
    def marker(self) -> Path | None:
        """The run folder's ``run.json``, naming the output it belongs to."""
        return self.run_dir / RUN_MARKER if self.run_dir is not None else None

    @classmethod
    def beside(cls, input: Path, output: Path, pairs: Path | None = None) -> RunPaths:
        def named(suffix: str) -> Path:
            return output.with_name(output.name + suffix)

        return cls(
            input=input,
            output=output,
            trace=named(".trace.jsonl"),
            rejects=named(".rejects.jsonl"),
            store=named(".coevol.db"),
            pairs=pairs,
            dataset_info=named(".dataset_info.json"),
            lock=named(".lock"),
            journal=named(".commit.json"),
        )

    def working(self) -> dict[str, Path]:
        """Every file the run creates beside the output, by what it is (for refusals and messages)."""
        return {
            "the trace": self.trace,
            "the rejects file": self.rejects,
            "the store": self.store,
            "the LLaMA-Factory entry": self.dataset_info,
            "the lock file": self.lock,
            "the commit journal": self.journal,
        } | ({"the run folder's record": self.marker} if self.marker is not None else {})

    def finals(self) -> list[Path]:
        """The files one commit moves into place together."""
        found = [self.output, self.trace, self.rejects, self.dataset_info]
        return found + ([self.pairs] if self.pairs is not None else [])


@dataclass(slots=True)
class RunSummary:
    """Counts for the end-of-run report."""

    rows: int = 0
    refined: int = 0
    kept: int = 0
    failed: int = 0
    rejected: int = 0
    resumed: int = 0
    accepted_edits: int = 0
    rounds: Counter[int] = field(default_factory=Counter)
    stop_reasons: Counter[str] = field(default_factory=Counter)
    failure_causes: Counter[str] = field(default_factory=Counter)
    judged: int = 0  # iterations that reached the judge
    audit: JudgeAudit = field(default_factory=JudgeAudit)  # position bias, for the judge finding
    unparseable: int = 0  # of those, the ones whose verdict stayed unparseable after every re-ask
    elapsed: float = 0.0
    stopped: str | None = None  # why the run ended early, if it did
    resumable: bool = True  # False when rerunning the same command cannot succeed (a setup error)
    complete: bool = False

    @property
    def unparseable_rate(self) -> float:
        """The share of judge comparisons without a usable verdict (0 when none was judged)."""
        return self.unparseable / self.judged if self.judged else 0.0

    def add(self, outcome: ExampleOutcome, *, resumed: bool) -> None:
        record = outcome.record
        self.rows += 1
        self.resumed += resumed
        if record.status is Status.REFINED:
            self.refined += 1
        elif record.status is Status.KEPT:
            self.kept += 1
        elif record.status is Status.FAILED:
            self.failed += 1
        else:
            self.rejected += 1
        if record.failure is not None and record.status is not Status.REFINED:
            self.failure_causes[record.failure.type] += 1
        self.accepted_edits += record.accepted_edits
        self.audit.add_record(record)
        for turn in record.turns:
            self.rounds[turn.accepted_edits] += 1
            self.stop_reasons[turn.stop_reason.value] += 1
        judged, unparseable = judge_counts(record)
        self.judged += judged
        self.unparseable += unparseable

    def add_bad_row(self) -> None:
        self.rows += 1
        self.rejected += 1
        self.failure_causes["bad row"] += 1

    def reject_converted(self, status: Status) -> None:
        """A refined or kept row that ``--output-format`` could not hold: count it as rejected."""
        if status is Status.REFINED:
            self.refined -= 1
        elif status is Status.KEPT:
            self.kept -= 1
        elif status is Status.FAILED:
            self.failed -= 1
        else:
            return  # already counted as rejected
        self.rejected += 1
        self.failure_causes["cannot convert"] += 1


def judge_counts(record: TraceRecord) -> tuple[int, int]:
    """(iterations that reached the judge, turns stopped by a verdict that stayed unparseable)."""
    judged = unparseable = 0
    for turn in record.turns:
        judged += sum(1 for it in turn.iterations if it.judge is not None)
        unparseable += turn.stop_reason is StopReason.JUDGE_UNPARSEABLE
    return judged, unparseable


ProgressFn = Callable[[RunSummary, RunStats], None]


def resume_key(example: Example, run_fingerprint: str) -> str:
    """Resume key: the row's content (exact, keys sorted) under this run's settings and trace schema."""
    row = jsonrow.canonical(example.raw)
    return hashlib.sha256(row + run_fingerprint.encode() + SCHEMA.encode()).hexdigest()


def _resumable(exc: BaseException) -> bool:
    """Whether rerunning the same command can get further (it cannot after a setup error)."""
    return isinstance(
        exc, BudgetExceeded | RetryableError | NoSpace | asyncio.CancelledError | KeyboardInterrupt
    )


def _raw_text(example: Example) -> str:
    try:
        return jsonrow.dumps(example.raw).decode("utf-8", errors="replace")
    except TypeError:
        return orjson.dumps(example.raw, default=str).decode()


@dataclass(frozen=True, slots=True)
class Refined:
    """One row's result: its outcome (``None`` for a row that could not be parsed) and whether it
    was replayed from the store."""

    outcome: ExampleOutcome | None
    resumed: bool = False


class RefineWork:
    """The work of every refine job, for the row runner (``coevol.engine.rows.Work``).

    With a ``store``, a row finished before under the same settings (``fingerprint``) is replayed
    and every refined row is stored; without one (rows in memory) only calls are cached.
    Counts go to ``summary``.
    """

    def __init__(
        self,
        job: Job,
        summary: RunSummary,
        *,
        store: Store | None = None,
        retry_failed: bool = False,
        roles: Mapping[str, RoleRoute] | None = None,
    ) -> None:
        engine = job.engine
        self.dispatcher = engine.dispatcher
        self.prompts = engine.prompts
        self.fingerprint = engine.fingerprint
        self.settings = job.plan.loop
        self.conversation = job.plan.conversation
        self.summary = summary
        self.store = store
        self.retry_failed = retry_failed
        self.roles = dict(roles) if roles is not None else role_routes(engine.dispatcher)

    def ready(self, item: Example | BadRow) -> Refined | None:
        if isinstance(item, BadRow):
            return Refined(None)
        if self.store is None:
            return None
        replayed = self._lookup(self.store, resume_key(item, self.fingerprint), item)
        return None if replayed is None else Refined(replayed, resumed=True)

    def _lookup(self, store: Store, key: str, example: Example) -> ExampleOutcome | None:
        """Resume lookup: the stored outcome of this row's content, placed at this run's position."""
        cached = store.get_sample(key)
        if cached is None or (self.retry_failed and cached[0] == Status.FAILED.value):
            return None
        try:
            outcome = ExampleOutcome.from_payload(cached[1])
        except TraceSchemaError:
            return None  # damaged or of another version: refine again, replaying the stored calls
        # The stored record describes where the row was when it was refined; a duplicate row or an
        # input edited since must still point at this run's row.
        outcome.record.index = example.index
        outcome.record.line = example.line
        return outcome

    async def run(self, item: Example | BadRow) -> Refined:
        assert isinstance(item, Example)  # a bad row is always ready
        outcome = await refine_example(
            item, self.dispatcher, self.prompts, self.settings, self.conversation, roles=self.roles
        )
        if self.store is not None:
            self.store.put_sample(
                resume_key(item, self.fingerprint), outcome.status.value, outcome.to_payload_json()
            )
        return Refined(outcome)

    def finish(self, item: Example | BadRow, result: Refined) -> StopTally:
        outcome = result.outcome
        if outcome is None:
            self.summary.add_bad_row()
            return StopTally()
        self.summary.add(outcome, resumed=result.resumed)
        failure = None
        if not result.resumed and outcome.status is Status.FAILED:  # replayed failures are old news
            f = outcome.failure
            failure = (f.type, f.message) if f is not None else ("unknown", "")
        judged, unparseable = judge_counts(outcome.record)
        return StopTally(failure, judged, unparseable)


class _Outputs:
    """The writers of one run and their lifecycle: open, write in order, commit as a set or abort."""

    def __init__(self, paths: RunPaths, parquet_input_schema: Any) -> None:
        self.paths = paths
        self._writers: list[RowWriter] = []
        try:
            self.output = self._open(RowWriter(paths.output, parquet_schema=parquet_input_schema))
            self.trace = self._open(RowWriter(paths.trace))
            self.rejects = self._open(RowWriter(paths.rejects, keep_empty=False))
            self.pairs = None if paths.pairs is None else self._open(RowWriter(paths.pairs))
        except BaseException:
            self.abort()
            raise

    def _open(self, writer: RowWriter) -> RowWriter:
        self._writers.append(writer)
        return writer

    def reject(self, line: int, error: str, raw: str) -> None:
        self.rejects.write({"line": line, "error": error, "raw": raw})

    def commit(self, fmt: str | None, columns: set[str]) -> Path | None:
        """Finish every file, then rename the whole set into place; returns the entry's path."""
        extra: list[AtomicFile] = []
        remove: list[Path] = []
        if fmt is not None:
            info = self.paths.dataset_info
            entry = dataset_info_entry(self.paths.output.stem, self.paths.output.name, fmt, present=columns)
            extra.append(AtomicFile(info))
            extra[0].write(orjson.dumps(entry, option=orjson.OPT_INDENT_2) + b"\n")
        else:
            remove.append(self.paths.dataset_info)  # a previous run's, now describing nothing
        commit([*self._writers, *extra], remove=remove, journal=self.paths.journal)
        return self.paths.dataset_info if fmt is not None else None

    def abort(self) -> None:
        for writer in self._writers:
            writer.abort()


class Runner:
    """The file run: one job's rows, read lazily from the input and written in order beside the
    output, committed as a set when every row is done."""

    def __init__(
        self,
        job: Job,
        paths: RunPaths,
        *,
        input_format: str | None = None,
        output_format: str | None = None,
        offset: int = 0,
        limit: int | None = None,
        retry_failed: bool = False,
        progress: ProgressFn | None = None,
    ) -> None:
        self.job = job
        self.paths = paths
        self.input_format = input_format
        self.output_format = output_format
        self.offset = offset
        self.limit = limit
        self.progress = progress
        self.summary = RunSummary()
        self.work = RefineWork(job, self.summary, store=job.store, retry_failed=retry_failed)
        # What the written output holds, for its LLaMA-Factory entry: its format and every column
        # any row has (LLaMA-Factory reads only the columns it is told of).
        self.output_fmt: str | None = None
        self.output_columns: set[str] = set()
        self.dataset_info: Path | None = None
        self._out: _Outputs | None = None

    async def run(self) -> RunSummary:
        """Process the whole input. Raises why it stopped early, after a clean stop."""
        started = time.monotonic()
        stats = self.job.engine.dispatcher.stats
        progress = self.progress
        try:
            self._out = _Outputs(self.paths, self._input_schema())
            rows = read_examples(
                self.paths.input, fmt=self.input_format, offset=self.offset, limit=self.limit
            )
            runner = self.job.runner(
                self.work,
                self._emit,
                progress=None if progress is None else lambda: progress(self.summary, stats),
            )
            await runner.run(rows)
            self.dataset_info = self._out.commit(self.output_fmt, self.output_columns)
            self.summary.complete = True
        except BaseException as exc:
            self._stopped(exc)
            raise
        finally:
            self.summary.elapsed = time.monotonic() - started
        return self.summary

    def _input_schema(self) -> Any:
        """Rows written back in their own format keep a Parquet input's column types."""
        same_shape = self.output_format is None or self.output_format == self.input_format
        return parquet_schema(self.paths.input) if same_shape else None

    def _emit(self, item: Example | BadRow, result: Refined) -> None:
        """Write one finished row; every earlier row is already written."""
        out = self._out
        assert out is not None
        if isinstance(item, BadRow):
            out.reject(item.line, item.error, item.raw)
            return
        outcome = result.outcome
        assert outcome is not None
        try:
            row = render_example(item, outcome.turns, self.output_format)
        except DataError as exc:  # e.g. a conversation --output-format cannot hold
            out.reject(item.line, str(exc), _raw_text(item))
            self.summary.reject_converted(outcome.status)
            return
        if outcome.status is Status.REJECTED:
            # Too long for the model from the start: kept unchanged in the output, and listed.
            why = outcome.failure.message if outcome.failure is not None else "rejected"
            out.reject(item.line, f"not refined: {why}", _raw_text(item))
        self.output_fmt = self.output_fmt or self.output_format or item.fmt
        self.output_columns.update(row)
        out.output.write(row)
        out.trace.write_encoded(outcome.record.to_json())
        if out.pairs is not None:
            for pair in outcome.pairs:
                out.pairs.write(pair)

    def _stopped(self, exc: BaseException) -> None:
        """The row runner has stopped cleanly: keep the partial files, say why and whether a rerun
        can succeed."""
        if self._out is not None:
            self._out.abort()
        self.summary.resumable = _resumable(exc)
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
            self.summary.stopped = "interrupted"
        elif isinstance(exc, BudgetExceeded | ConfigError):
            self.summary.stopped = str(exc)
        else:
            self.summary.stopped = f"{type(exc).__name__}: {exc}"


def role_routes(dispatcher: Dispatcher) -> dict[str, RoleRoute]:
    """Which model and endpoint serves each role, for the trace."""
    return {role: RoleRoute(r.model, r.shown) for role, r in dispatcher.routes.items()}
