"""Run a whole dataset: stream rows in, refine many at once, write results out in input order.

The parts, each small enough to hold in mind:

- **admission** (``_Window``): at most ``samples_in_flight`` examples run at once, and finished
  results may run at most ``4 x`` that far ahead of the slowest unfinished row, so memory stays
  flat whatever the input size;
- **resume lookup** (``Runner._lookup``): a row whose content was finished before under the same
  settings is replayed from the store, with this run's position;
- **ordered emission** (``_Reorder`` then ``Runner._emit``): the one reorder buffer; each result
  is written once every earlier row is;
- **writer lifecycle** (``_Outputs``): output, trace, pairs, rejects and the LLaMA-Factory entry
  are ``.partial`` files until the whole input is done, then renamed into place as one set;
- **stop handling** (``Runner._stop``): cancel what runs, wait for it, drain the dispatcher, keep
  the partial files, say why and whether a rerun can succeed.

Every finished example goes to the store, so a rerun replays it without a call and rewrites every
file from scratch: a row is never lost or written twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from coevol.audit import JudgeAudit
from coevol.config import Config
from coevol.domain import SCHEMA, BadRow, Example, RoleRoute, Status, StopReason
from coevol.engine.dispatch import Dispatcher, RunStats
from coevol.errors import BudgetExceeded, ConfigError, DataError, NoSpace, RetryableError, TraceSchemaError
from coevol.io import jsonrow
from coevol.io.formats import dataset_info_entry, render_example
from coevol.io.readers import parquet_schema, read_examples
from coevol.io.writers import AtomicFile, RowWriter, commit
from coevol.multiturn import ExampleOutcome, refine_example
from coevol.prompts.templates import PromptSet
from coevol.store.sqlite import Store

__all__ = ["ProgressFn", "RunPaths", "RunSummary", "Runner", "resume_key", "role_routes"]


@dataclass(frozen=True, slots=True)
class RunPaths:
    """The files of one run, all beside the output."""

    input: Path
    output: Path
    trace: Path
    rejects: Path
    store: Path
    pairs: Path | None = None
    dataset_info: Path = Path()
    lock: Path = Path()
    journal: Path = Path()

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
        }

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
        self.accepted_edits += record.accepted_rounds
        self.audit.add_record(record)
        for turn in record.turns:
            self.rounds[turn.accepted_rounds] += 1
            self.stop_reasons[turn.stop_reason.value] += 1
            self.judged += sum(1 for it in turn.iterations if it.judge is not None)
            self.unparseable += turn.stop_reason is StopReason.JUDGE_UNPARSEABLE

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


ProgressFn = Callable[[RunSummary, RunStats], None]


def resume_key(example: Example, run_fingerprint: str) -> str:
    """Resume key: the row's content (exact, keys sorted) under this run's settings and trace schema."""
    row = jsonrow.canonical(example.raw)
    return hashlib.sha256(row + run_fingerprint.encode() + SCHEMA.encode()).hexdigest()


def _cost(config: Config, stats: RunStats) -> float:
    total = 0.0
    for role, usage in stats.usage.items():
        price = config.role(role).price
        if price is not None:
            total += (usage.prompt_tokens * price.prompt + usage.completion_tokens * price.completion) / 1e6
    return total


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


Entry = tuple[Example | BadRow, ExampleOutcome | None]


class _Reorder:
    """The one reorder buffer: results come in any order, ``ready()`` gives them in input order."""

    def __init__(self) -> None:
        self._waiting: dict[int, Entry] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def put(self, position: int, entry: Entry) -> None:
        self._waiting[position] = entry

    def ready(self) -> Iterator[Entry]:
        while self._next in self._waiting:
            entry = self._waiting.pop(self._next)
            self._next += 1
            yield entry


class _Window:
    """Admission: how many examples run, and how far finished results may run ahead."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.ahead = 4 * size  # finished results allowed to wait for a slower earlier row
        self.active = 0
        self._room = asyncio.Condition()

    async def wait_until(self, ok: Callable[[], bool]) -> None:
        if not ok():
            async with self._room:
                await self._room.wait_for(ok)

    async def done(self) -> None:
        self.active -= 1
        async with self._room:
            self._room.notify_all()


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
    """Drives one dataset through the loop with a shared dispatcher."""

    def __init__(
        self,
        config: Config,
        dispatcher: Dispatcher,
        prompts: PromptSet,
        paths: RunPaths,
        *,
        run_fingerprint: str,
        input_format: str | None = None,
        output_format: str | None = None,
        offset: int = 0,
        limit: int | None = None,
        retry_failed: bool = False,
        progress: ProgressFn | None = None,
        roles: Mapping[str, RoleRoute] | None = None,
    ) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.prompts = prompts
        self.paths = paths
        self.fingerprint = run_fingerprint
        self.input_format = input_format
        self.output_format = output_format
        self.offset = offset
        self.limit = limit
        self.retry_failed = retry_failed
        self.progress = progress
        self.roles = dict(roles) if roles is not None else role_routes(dispatcher)
        self.summary = RunSummary()
        # What the written output holds, for its LLaMA-Factory entry: its format and every column
        # any row has (LLaMA-Factory reads only the columns it is told of).
        self.output_fmt: str | None = None
        self.output_columns: set[str] = set()
        self.dataset_info: Path | None = None
        self._fresh_causes: Counter[str] = Counter()  # failures of this run, by error type
        self._cause_example: dict[str, str] = {}
        self.settings = config.loop_settings()
        self.conversation = config.conversation_settings()
        self._window = _Window(config.samples_in_flight or config.concurrency)
        self._reorder = _Reorder()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop_error: list[BaseException] = []
        self._out: _Outputs | None = None
        if config.max_budget is not None:
            dispatcher.after_send = self._check_spend

    # the run -----------------------------------------------------------------------------------
    async def run(self, store: Store) -> RunSummary:
        """Process the whole input. Raises why it stopped early, after a clean stop."""
        started = time.monotonic()
        try:
            self._out = _Outputs(self.paths, self._input_schema())
            await self._feed(store)
            while self._tasks and not self._stop_error:
                await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
            if self._stop_error:
                raise self._stop_error[0]
            await self.dispatcher.drain()
            self.dataset_info = self._out.commit(self.output_fmt, self.output_columns)
            self.summary.complete = True
        except BaseException as exc:
            await self._stop(exc)
            raise
        finally:
            self.summary.elapsed = time.monotonic() - started
        return self.summary

    def _input_schema(self) -> Any:
        """Rows written back in their own format keep a Parquet input's column types."""
        same_shape = self.output_format is None or self.output_format == self.input_format
        return parquet_schema(self.paths.input) if same_shape else None

    async def _feed(self, store: Store) -> None:
        """Admission: read rows lazily and start each one when there is room for it."""
        window = self._window
        rows = read_examples(self.paths.input, fmt=self.input_format, offset=self.offset, limit=self.limit)
        for position, item in enumerate(rows):
            # Replayed and rejected rows finish at once; they must not pile up behind a slow one.
            await window.wait_until(lambda: bool(self._stop_error) or len(self._reorder) < window.ahead)
            if self._stop_error:
                return
            if isinstance(item, BadRow):
                self._finish(position, item, None, resumed=False)
                continue
            key = resume_key(item, self.fingerprint)
            replayed = self._lookup(store, key, item)
            if replayed is not None:
                self._finish(position, item, replayed, resumed=True)
                continue
            await window.wait_until(
                lambda: (
                    bool(self._stop_error)
                    or (window.active < window.size and len(self._reorder) < window.ahead)
                )
            )
            if self._stop_error:
                return
            window.active += 1
            task = asyncio.create_task(self._work(store, position, item, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

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

    async def _work(self, store: Store, position: int, example: Example, key: str) -> None:
        try:
            outcome = await refine_example(
                example, self.dispatcher, self.prompts, self.settings, self.conversation, roles=self.roles
            )
            store.put_sample(key, outcome.status.value, outcome.to_payload())
            self._finish(position, example, outcome, resumed=False)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._stop_error.append(exc)
        finally:
            await self._window.done()

    def _finish(
        self, position: int, item: Example | BadRow, outcome: ExampleOutcome | None, *, resumed: bool
    ) -> None:
        if outcome is None:
            self.summary.add_bad_row()
        else:
            self.summary.add(outcome, resumed=resumed)
        self._reorder.put(position, (item, outcome))
        for ready in self._reorder.ready():
            self._emit(*ready)
        if self.progress is not None:
            self.progress(self.summary, self.dispatcher.stats)
        if not resumed and outcome is not None and outcome.status is Status.FAILED:
            failure = outcome.failure
            cause = failure.type if failure is not None else "unknown"
            self._fresh_causes[cause] += 1
            self._cause_example.setdefault(cause, failure.message if failure is not None else "")
        self._check_budgets()
        self._check_judge()

    # ordered emission --------------------------------------------------------------------------
    def _emit(self, item: Example | BadRow, outcome: ExampleOutcome | None) -> None:
        """Write one finished row; every earlier row is already written."""
        out = self._out
        assert out is not None
        if isinstance(item, BadRow):
            out.reject(item.line, item.error, item.raw)
            return
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
        out.trace.write(outcome.record.to_dict())
        if out.pairs is not None:
            for pair in outcome.pairs:
                out.pairs.write(pair)

    # stop handling -----------------------------------------------------------------------------
    async def _stop(self, exc: BaseException) -> None:
        """Cancel every sample, wait for each to unwind (even through a second Ctrl-C), drain the
        dispatcher so no call outlives the run, and keep the partial files."""
        for task in self._tasks:
            task.cancel()
        pending = set(self._tasks)
        while pending:
            try:
                _, pending = await asyncio.wait(pending)
            except asyncio.CancelledError:
                for task in pending:
                    task.cancel()
        await self.dispatcher.drain()
        if self._out is not None:
            self._out.abort()
        self.summary.resumable = _resumable(exc)
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
            self.summary.stopped = "interrupted"
        elif isinstance(exc, BudgetExceeded | ConfigError):
            self.summary.stopped = str(exc)
        else:
            self.summary.stopped = f"{type(exc).__name__}: {exc}"

    def _check_budgets(self) -> None:
        """Stop on ``--max-errors`` (failures of this run; replayed ones are old news) or ``--max-budget``."""
        limit = self.config.max_errors
        failed = sum(self._fresh_causes.values())
        if limit is not None and failed > limit:
            causes = "; ".join(
                f"{n} x {cause}: {_shorten(self._cause_example[cause])}"
                for cause, n in self._fresh_causes.most_common()
            )
            raise BudgetExceeded(f"{failed} samples failed, more than --max-errors {limit} ({causes})")
        self._check_spend()

    def _check_spend(self) -> None:
        """``--max-budget``: checked after every sent call as well as after every sample."""
        budget = self.config.max_budget
        if budget is not None:
            spent = _cost(self.config, self.dispatcher.stats)
            if spent >= budget:
                raise BudgetExceeded(f"spent ${spent:.4f} of --max-budget ${budget}")

    def _check_judge(self) -> None:
        """A judge that never gives a usable verdict is a setup problem, not a run of kept rows."""
        threshold = self.config.max_unparseable
        s = self.summary
        if threshold is None or s.judged < self.config.min_judged or s.unparseable_rate <= threshold:
            return
        raise ConfigError(
            f"the judge gave no usable verdict in {s.unparseable} of {s.judged} comparisons "
            f"({s.unparseable_rate:.0%}, more than max_unparseable {threshold:.0%}): check the judge "
            "model (it must answer with the verdict on its first line) and its prompt"
        )


def role_routes(dispatcher: Dispatcher) -> dict[str, RoleRoute]:
    """Which model and endpoint serves each role, for the trace."""
    return {role: RoleRoute(r.model, r.shown) for role, r in dispatcher.routes.items()}


def _shorten(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
