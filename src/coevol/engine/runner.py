"""Run a whole dataset: stream rows in, refine many at once, write results out in input order.

Memory stays flat: rows are read lazily, at most ``samples_in_flight`` examples run at a time, and
finished results (replayed and rejected rows included) wait in a reorder buffer that admission
keeps bounded. Every finished example goes to the store, so a rerun replays it without a call and
rewrites every file from scratch: output, trace, pairs and rejects are written to ``.partial``
files and renamed into place only when the whole input is done, so a row is never lost or written
twice. A run ends by draining the dispatcher, so no call outlives it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from coevol.config import Config
from coevol.domain import BadRow, Example
from coevol.engine.dispatch import Dispatcher, RunStats
from coevol.errors import BudgetExceeded, DataError
from coevol.io.files import OrderedWriter, RejectsWriter, parquet_schema, read_examples
from coevol.io.formats import render_example
from coevol.multiturn import ExampleOutcome, refine_example, sample_key
from coevol.prompts.templates import PromptSet
from coevol.store.sqlite import Store

__all__ = ["RunPaths", "RunSummary", "Runner"]


@dataclass(frozen=True, slots=True)
class RunPaths:
    """The files of one run, all beside the output."""

    input: Path
    output: Path
    trace: Path
    rejects: Path
    store: Path
    pairs: Path | None = None

    @classmethod
    def beside(cls, input: Path, output: Path, pairs: Path | None = None) -> RunPaths:
        return cls(
            input=input,
            output=output,
            trace=output.with_name(output.name + ".trace.jsonl"),
            rejects=output.with_name(output.name + ".rejects.jsonl"),
            store=output.with_name(output.name + ".coevol.db"),
            pairs=pairs,
        )


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
    elapsed: float = 0.0
    stopped: str | None = None  # why the run ended early, if it did
    complete: bool = False

    def add(self, outcome: ExampleOutcome, *, resumed: bool) -> None:
        self.rows += 1
        self.resumed += resumed
        if outcome.status == "refined":
            self.refined += 1
        elif outcome.status == "kept":
            self.kept += 1
        elif outcome.status == "failed":
            self.failed += 1
            self.failure_causes[outcome.error_type or "unknown"] += 1
        else:
            self.rejected += 1
            self.failure_causes[outcome.error_type or "unknown"] += 1
        self.accepted_edits += outcome.accepted_rounds
        for turn in outcome.trace.get("turns", []):
            self.rounds[turn["accepted_rounds"]] += 1
            self.stop_reasons[turn["stop_reason"]] += 1

    def reject_converted(self, status: str) -> None:
        """A refined or kept row that ``--output-format`` could not hold: count it as rejected."""
        if status == "refined":
            self.refined -= 1
        elif status == "kept":
            self.kept -= 1
        self.rejected += 1
        self.failure_causes["cannot convert"] += 1


ProgressFn = Callable[[RunSummary, RunStats], None]


def _cost(config: Config, stats: RunStats) -> float:
    total = 0.0
    for role, usage in stats.usage.items():
        price = config.role(role).price
        if price is not None:
            total += (usage.prompt_tokens * price.prompt + usage.completion_tokens * price.completion) / 1e6
    return total


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
        self.summary = RunSummary()
        # What the written output holds, for its LLaMA-Factory entry: its format and every column
        # any row has (LLaMA-Factory reads only the columns it is told of).
        self.output_fmt: str | None = None
        self.output_columns: set[str] = set()
        self._fresh_causes: Counter[str] = Counter()  # failures of this run, by error type
        self._cause_example: dict[str, str] = {}
        self.settings = config.loop_settings()
        self.conversation = config.conversation_settings()
        self.window = config.samples_in_flight or config.concurrency
        if config.max_budget is not None:
            dispatcher.after_send = self._check_spend

    async def run(self, store: Store) -> RunSummary:
        """Process the whole input. Raises ``BudgetExceeded`` after a clean stop on a budget."""
        started = time.monotonic()
        # Rows written back in their own format keep a Parquet input's column types.
        same_shape = self.output_format is None or self.output_format == self.input_format
        schema = parquet_schema(self.paths.input) if same_shape else None
        output = OrderedWriter(self.paths.output, parquet_schema=schema)
        trace = OrderedWriter(self.paths.trace)
        pairs = OrderedWriter(self.paths.pairs) if self.paths.pairs else None
        writers = [w for w in (output, trace, pairs) if w is not None]
        # Rejects are rebuilt by every run (from the input and the store) like the output, so they
        # too go to a partial file that replaces the old one only when the run completes.
        rejects_partial = self.paths.rejects.with_name(self.paths.rejects.name + ".partial")
        rejects_partial.unlink(missing_ok=True)
        rejects = RejectsWriter(rejects_partial)
        ready: dict[int, tuple[Example | BadRow, ExampleOutcome | None]] = {}
        counts = {"next": 0, "rows": 0, "pairs": 0, "active": 0}
        ahead = 4 * self.window  # finished results allowed to wait for a slower earlier row
        room = asyncio.Condition()
        tasks: set[asyncio.Task[None]] = set()
        stop: list[BaseException] = []

        def emit() -> None:
            """Write every finished item whose predecessors are all written."""
            while counts["next"] in ready:
                item, outcome = ready.pop(counts["next"])
                counts["next"] += 1
                if isinstance(item, BadRow):
                    rejects.write(item)
                elif outcome is not None and outcome.status == "rejected":
                    rejects.write(BadRow(item.line, outcome.error or "rejected", _raw_text(item)))
                elif outcome is not None:
                    try:
                        row = render_example(item, outcome.turns, self.output_format)
                    except DataError as exc:  # e.g. a conversation --output-format cannot hold
                        rejects.write(BadRow(item.line, str(exc), _raw_text(item)))
                        self.summary.reject_converted(outcome.status)
                        continue
                    self.output_fmt = self.output_fmt or self.output_format or item.fmt
                    self.output_columns.update(row)
                    output.submit(counts["rows"], row)
                    trace.submit(counts["rows"], outcome.trace)
                    counts["rows"] += 1
                    if pairs is not None:
                        for pair in outcome.pairs:
                            pairs.submit(counts["pairs"], pair)
                            counts["pairs"] += 1

        def finish(
            position: int, item: Example | BadRow, outcome: ExampleOutcome | None, resumed: bool
        ) -> None:
            if outcome is not None:
                self.summary.add(outcome, resumed=resumed)
            else:
                self.summary.rows += 1
                self.summary.rejected += 1
                self.summary.failure_causes["bad row"] += 1
            ready[position] = (item, outcome)
            emit()
            if self.progress is not None:
                self.progress(self.summary, self.dispatcher.stats)
            if not resumed and outcome is not None and outcome.status == "failed":
                cause = outcome.error_type or "unknown"
                self._fresh_causes[cause] += 1
                self._cause_example.setdefault(cause, outcome.error or "")
            self._check_budgets()

        async def work(position: int, example: Example, key: str) -> None:
            try:
                outcome = await refine_example(
                    example, self.dispatcher, self.prompts, self.settings, self.conversation
                )
                store.put_sample(key, outcome.status, outcome.to_payload())
                finish(position, example, outcome, False)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                stop.append(exc)
            finally:
                counts["active"] -= 1
                async with room:
                    room.notify_all()

        def admissible() -> bool:
            # Bound the work in flight and how far results may run ahead of the slowest
            # unfinished row, so memory stays flat whatever the input size.
            return bool(stop) or (counts["active"] < self.window and len(ready) < ahead)

        def behind() -> bool:
            return bool(stop) or len(ready) < ahead

        try:
            rows = read_examples(
                self.paths.input, fmt=self.input_format, offset=self.offset, limit=self.limit
            )
            for position, item in enumerate(rows):
                if not behind():
                    # Replayed and rejected rows finish at once; they must not pile up behind
                    # a slow sample either.
                    async with room:
                        await room.wait_for(behind)
                if stop:
                    break
                if isinstance(item, BadRow):
                    finish(position, item, None, False)
                    continue
                key = sample_key(item, self.fingerprint)
                cached = store.get_sample(key)
                if cached is not None and not (self.retry_failed and cached[0] == "failed"):
                    finish(position, item, ExampleOutcome.from_payload(cached[1]), True)
                    continue
                if not admissible():
                    async with room:
                        await room.wait_for(admissible)
                if stop:
                    break
                counts["active"] += 1
                task = asyncio.create_task(work(position, item, key))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks and not stop:
                await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
            if stop:
                raise stop[0]
            await self.dispatcher.drain()
            for writer in writers:
                writer.close()
            rejects.close()
            if rejects.count:
                os.replace(rejects_partial, self.paths.rejects)
            else:
                rejects_partial.unlink(missing_ok=True)
                self.paths.rejects.unlink(missing_ok=True)  # a previous run's, now stale
            self.summary.complete = True
        except BaseException as exc:
            for task in tasks:
                task.cancel()
            pending = set(tasks)
            while pending:
                # Wait for every cancelled sample to unwind, even through a second Ctrl-C, so no
                # call is still running when the caller closes the store.
                try:
                    _, pending = await asyncio.wait(pending)
                except asyncio.CancelledError:
                    for task in pending:
                        task.cancel()
            await self.dispatcher.drain()
            for writer in writers:
                writer.abort()
            if isinstance(exc, BudgetExceeded):
                self.summary.stopped = str(exc)
            elif isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
                self.summary.stopped = "interrupted"
            else:
                self.summary.stopped = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            rejects.close()
            self.summary.elapsed = time.monotonic() - started
        return self.summary

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


def _shorten(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _raw_text(example: Example) -> str:
    return orjson.dumps(example.raw, default=str).decode()
