"""The progress bar during a run and the summary after it (stderr, so stdout stays clean)."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from coevol.engine.dispatch import RunStats
from coevol.engine.runner import RunPaths, RunSummary

__all__ = ["RunDisplay"]


def _tokens(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


_ROLE_ABBREV = {"positive": "pos", "critical": "crt", "advisor": "adv", "editor": "edt", "judge": "jdg"}


class RunDisplay:
    """A live bar with sample counts, and a line of calls and tokens per role (stderr, 10 Hz)."""

    def __init__(self, console: Console, *, total: int | None, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet
        self._last = 0.0
        self._progress = Progress(
            TextColumn("[bold]refining"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[counts]}"),
            console=console,
        )
        self._task = self._progress.add_task("refine", total=total, counts="")
        self._detail = Text("", style="dim", no_wrap=True, overflow="ellipsis")
        self._live = Live(Group(self._progress, self._detail), console=console, refresh_per_second=10)

    def __enter__(self) -> RunDisplay:
        if not self.quiet:
            self._live.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.quiet:
            self._live.stop()

    def update(self, summary: RunSummary, stats: RunStats, *, force: bool = False) -> None:
        now = time.monotonic()
        if now - self._last < 0.1 and not force:
            return
        self._last = now
        counts = (
            f"{summary.refined} refined, {summary.kept} kept, {summary.failed} failed, "
            f"{summary.rejected} rejected"
        )
        self._progress.update(self._task, completed=summary.rows, counts=counts)
        roles = "  ".join(
            f"{_ROLE_ABBREV.get(role, role)} {_tokens(u.prompt_tokens + u.completion_tokens)}"
            for role, u in stats.usage.items()
        )
        retries = f", {stats.retries} retries" if stats.retries else ""
        self._detail.plain = (
            f"  calls {stats.sent} sent, {stats.cached} replayed{retries} | tokens {roles or '-'}"
        )

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
            c.print(f"output: {paths.output}\ntrace:  {paths.trace}", highlight=False)
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
