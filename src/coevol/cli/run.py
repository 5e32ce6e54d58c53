"""``coevol refine``: run a dataset file through ``arefine_file`` with a progress display, a summary
and an exit code that says how it went (see ``coevol.cli.exit_codes``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import Any

from rich.text import Text

from coevol.cli.console import signal_handled, term_cancels
from coevol.cli.exit_codes import (
    EXIT_BUDGET,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_TERMINATED,
    judge_check_exit,
)
from coevol.config import Config
from coevol.engine.dispatch import RunStats
from coevol.engine.runner import RunPaths, RunSummary, run_dir_of
from coevol.errors import BudgetExceeded, CoevolError
from coevol.io.readers import count_rows, require_usable_row
from coevol.judge_check.run import JudgeCheckFailed
from coevol.textsafe import inert_line

__all__ = ["refine_command"]


def _error(err: Any, message: str) -> None:
    """One line, never parsed as console markup (paths and server errors may hold ``[/b]``)."""
    err.print(Text.assemble(("error: ", "bold red"), inert_line(message)), soft_wrap=True)


def _total(ns: argparse.Namespace) -> int | None:
    total = count_rows(ns.input)
    if total is None:
        return None
    total = max(0, total - int(ns.offset))
    return min(total, int(ns.limit)) if ns.limit is not None else total


def _dry_run(ns: argparse.Namespace, config: Config) -> int:
    from coevol.cli.dryrun import estimate, format_estimate, format_expected, judge_check_cost, measured_rows
    from coevol.prompts.templates import load_prompts

    est = estimate(
        config,
        ns.input,
        input_format=ns.input_format,
        offset=ns.offset,
        limit=ns.limit,
        prompts=load_prompts(config.prompts_dir),
        calls_per_second=ns.rate,
    )
    sys.stdout.write(format_estimate(est))
    judge_check_cost(config)
    store = config.cache or _paths(ns, config).store
    measured = measured_rows(Path(store))
    if measured is not None and est.examples:
        sys.stdout.write(format_expected(measured, est.examples, config.prices() or {}) + "\n")
    return EXIT_OK


def _calls_per_row(config: Config) -> float:
    """The calls one row is expected to take (midway between its fewest and most), for an ETA
    before the first row finishes."""
    from coevol.plan import calls_per_turn

    fewest, most = calls_per_turn(config.mode, config.max_rounds, early_exit=config.judge_early_exit)
    return (fewest + most) / 2


async def _tick(live: _Live, every: float = 0.5) -> None:
    """Redraw the display twice a second, so it moves as calls finish, not only as rows do."""
    while True:
        await asyncio.sleep(every)
        live.refresh()


class _Live:
    """The run's live counters as ``arefine_file`` hands them over, kept for the summary.

    The display starts with the first update, which comes only once the paths, the lock and the
    engine have passed their checks: a refused run prints its one line and nothing else.
    """

    def __init__(self, display: Any) -> None:
        self.display = display
        self.summary = RunSummary()
        self.stats = RunStats()
        self.started = False

    def __call__(self, summary: RunSummary, stats: RunStats) -> None:
        self.summary, self.stats = summary, stats
        if not self.started:
            self.started = True
            self.display.__enter__()
        self.display.update(summary, stats)

    def refresh(self) -> None:
        if self.started:
            self.display.refresh()

    def stop(self) -> None:
        if self.started:
            self.display.update(self.summary, self.stats, force=True)
            self.display.__exit__(None, None, None)


class _Interrupt:
    """Ctrl-C during a run: the first is acknowledged at once and stops the run cleanly (calls in
    flight finish or are cancelled, finished work is kept); the second abandons what is still in
    flight and exits within a moment, as after ``kill -9`` (every answered call is already stored).
    An embedded model's call can take minutes, which is what the second Ctrl-C is for."""

    def __init__(self, err: Any, live: _Live, task: asyncio.Task[Any] | None) -> None:
        self.err = err
        self.live = live
        self.task = task
        self.pressed = 0

    def __call__(self) -> None:
        self.pressed += 1
        in_flight = len(self.live.stats.sending)
        calls = "call" if in_flight == 1 else "calls"
        if self.pressed == 1:
            self.err.print(
                f"stopping: waiting for {in_flight} {calls} in flight, Ctrl-C again to abandon them",
                highlight=False,
                markup=False,
            )
            if self.task is not None:
                self.task.cancel()
            return
        self.err.print(
            f"abandoned {in_flight} {calls} in flight; finished work is kept: rerun the same command "
            "to resume",
            highlight=False,
            markup=False,
        )
        os._exit(EXIT_INTERRUPTED)


def refine_command(ns: argparse.Namespace, config: Config, err: Any) -> int:
    if ns.dry_run:
        return _dry_run(ns, config)
    if ns.push_to_hub:
        from coevol.cli.hub import check_push

        check_push(ns.push_to_hub)
    terminated: list[int] = []

    async def run() -> int:
        from coevol.cli.progress import RunDisplay
        from coevol.executors import file_runner

        arefine_file = file_runner(ns)  # --executor: this process, or shards on Ray
        # An input with nothing to refine is refused before anything is created (an empty output
        # and exit 0 would pass for a finished run); a Ray shard of only bad rows is fine.
        require_usable_row(ns.input, fmt=ns.input_format, offset=ns.offset, limit=ns.limit)

        display = RunDisplay(
            err,
            total=_total(ns),
            quiet=ns.quiet,
            prices=config.prices(),
            calls_per_row=_calls_per_row(config),
            online_prices=config.prices(online=True) if config.batched_roles() else None,
        )
        live = _Live(display)
        ticker = asyncio.create_task(_tick(live))
        task = asyncio.current_task()
        signals = contextlib.ExitStack()
        signals.enter_context(signal_handled(signal.SIGTERM, term_cancels(terminated)))
        signals.enter_context(signal_handled(signal.SIGINT, _Interrupt(err, live, task)))
        code = EXIT_OK
        result = None
        try:
            try:
                result = await arefine_file(
                    ns.input,
                    ns.output,
                    config,
                    pairs=ns.pairs,
                    input_format=ns.input_format,
                    output_format=ns.output_format,
                    offset=ns.offset,
                    limit=ns.limit,
                    retry_failed=ns.retry_failed,
                    progress=live,
                )
            finally:
                ticker.cancel()
                live.stop()
        except BudgetExceeded:
            code = EXIT_BUDGET
        except JudgeCheckFailed as exc:
            from coevol.cli.judge_check import print_result

            print_result(exc.result)
            _error(err, str(exc))
            return judge_check_exit(exc.result.verdict.value)
        except asyncio.CancelledError:
            code = EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
        except CoevolError as exc:
            _error(err, str(exc))
            if not live.summary.stopped:  # refused before the run began: nothing to summarise
                return EXIT_ERROR
            code = EXIT_ERROR
        finally:
            signals.close()  # the handlers from before: a SIGTERM during the summary still exits 143
        paths = _paths(ns, config)
        if getattr(ns, "executor", "local") == "ray":  # its stores live in the shards' folder
            paths = dataclasses.replace(paths, store=ns.work_dir or paths.shards)
        display.summary(live.summary, live.stats, paths)
        if result is not None:
            code = _finished(ns, err, result.summary, result.dataset_info, result.recovered, paths)
            if ns.push_to_hub:
                from coevol.cli.hub import push_run

                push_run(
                    ns.output,
                    ns.push_to_hub,
                    config,
                    source=str(ns.input),
                    private=ns.hub_private,
                    err=err,
                    run_dir=paths.run_dir,
                )
        return code

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        err.print("interrupted; rerun the same command to resume", highlight=False, markup=False)
        return EXIT_INTERRUPTED


def _paths(ns: argparse.Namespace, config: Config) -> RunPaths:
    return RunPaths.of(ns.input, ns.output, ns.pairs, run_dir_of(config.run_dir, ns.output))


def _finished(
    ns: argparse.Namespace, err: Any, summary: RunSummary, info: Any, recovered: bool, paths: RunPaths
) -> int:
    """A completed run: say what else was written, and exit 4 when some samples failed."""
    if recovered:
        err.print(
            "note: the previous run had stopped between its final renames; its set was completed first",
            highlight=False,
            markup=False,
        )
    if info is not None:
        err.print(
            f"LLaMA-Factory entry: {info} (merge it into your dataset_info.json)",
            highlight=False,
            markup=False,
        )
    if ns.show:
        from coevol.cli.show import show_trace

        show_trace(paths.trace, limit=ns.show)
    if summary.failed:
        err.print(
            f"{summary.failed} samples failed (written unchanged); "
            "rerun with --retry-failed to try them again",
            highlight=False,
            markup=False,
        )
        return EXIT_PARTIAL
    return EXIT_OK
