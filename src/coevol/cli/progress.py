"""The progress bar during a run and the summary after it (stderr, so stdout stays clean)."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from coevol.engine.dispatch import RunStats
from coevol.engine.runner import RunPaths, RunSummary

__all__ = ["RunDisplay"]


def _tokens(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


class RunDisplay:
    """A live bar with counts, calls and tokens per role; refreshed at most 10 times a second."""

    def __init__(self, console: Console, *, total: int | None, quiet: bool, local: bool) -> None:
        self.console = console
        self.local = local
        self._last = 0.0
        self._progress = Progress(
            TextColumn("[bold]refining"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            disable=quiet,
            transient=False,
        )
        self._task = self._progress.add_task("refine", total=total, info="")

    def __enter__(self) -> RunDisplay:
        self._progress.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def update(self, summary: RunSummary, stats: RunStats, *, force: bool = False) -> None:
        now = time.monotonic()
        if now - self._last < 0.1 and not force:
            return
        self._last = now
        roles = " ".join(
            f"{role[:3]}:{_tokens(u.prompt_tokens + u.completion_tokens)}" for role, u in stats.usage.items()
        )
        info = (
            f"refined {summary.refined} kept {summary.kept} failed {summary.failed} "
            f"rejected {summary.rejected} | calls {stats.sent} (+{stats.cached} cached) | tok {roles}"
        )
        self._progress.update(self._task, completed=summary.rows, info=info)

    def summary(self, summary: RunSummary, stats: RunStats, paths: RunPaths) -> None:
        c = self.console
        table = Table(title="coevol run", show_header=False, box=None)
        table.add_row("rows", str(summary.rows))
        table.add_row("refined (>= 1 accepted edit)", str(summary.refined))
        table.add_row("kept as they were", str(summary.kept))
        table.add_row("failed", str(summary.failed))
        table.add_row("rejected rows", str(summary.rejected))
        if summary.resumed:
            table.add_row("replayed from the store", str(summary.resumed))
        table.add_row("accepted edits", str(summary.accepted_edits))
        hist = ", ".join(f"{k}: {v}" for k, v in sorted(summary.rounds.items()))
        table.add_row("accepted rounds per turn", hist or "-")
        if summary.stop_reasons:
            table.add_row("loop stopped by", ", ".join(f"{k}: {v}" for k, v in summary.stop_reasons.items()))
        if summary.failure_causes:
            table.add_row("failure causes", ", ".join(f"{k}: {v}" for k, v in summary.failure_causes.items()))
        table.add_row("calls sent / replayed", f"{stats.sent} / {stats.cached}")
        if stats.retries:
            table.add_row("retries", str(stats.retries))
        for role, u in stats.usage.items():
            table.add_row(
                f"tokens {role}", f"{_tokens(u.prompt_tokens)} in, {_tokens(u.completion_tokens)} out"
            )
        table.add_row("elapsed", f"{summary.elapsed:.1f}s")
        c.print(table)
        if summary.complete:
            c.print(f"output: {paths.output}\ntrace:  {paths.trace}")
            if summary.rejected:
                c.print(f"rejects: {paths.rejects}")
            if paths.pairs is not None:
                c.print(f"pairs:  {paths.pairs}")
        else:
            why = summary.stopped or "stopped"
            c.print(
                f"[yellow]not finished ({why}). Finished work is kept in {paths.store.name}: "
                "rerun the same command to resume.[/]",
                highlight=False,
            )
