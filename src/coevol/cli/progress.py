"""The progress bar during a run and the summary after it (stderr, so stdout stays clean).

Everything shown is built as ``Text`` from inert strings: a path, a failure cause or a stop reason
that carries console markup or escape sequences is shown as written, never obeyed. A server that
asks to wait (429 ``Retry-After``, backoff after errors) or stalls is named on its own line, with
what waits and until when, so a paused run is not mistaken for a hung one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from coevol.audit import judge_finding
from coevol.domain import Role
from coevol.engine.dispatch import RunStats
from coevol.engine.endpoints import describe_pool
from coevol.engine.runner import RunPaths, RunSummary
from coevol.llm.batch import describe_batches
from coevol.textsafe import inert_line

__all__ = ["STALL_AFTER", "RunDisplay", "describe_spend", "describe_waits", "eta_seconds", "spent"]

STALL_AFTER = 30.0
"""Seconds without an answer after which a request in flight is reported as waiting."""


def _tokens(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))


_ROLE_ABBREV: dict[str, str] = {
    Role.POSITIVE: "pos",
    Role.CRITICAL: "crt",
    Role.ADVISOR: "adv",
    Role.EDITOR: "edt",
    Role.JUDGE: "jdg",
}
"""Short names for the progress line; a role without one is shown by its full name."""


def describe_waits(
    stats: RunStats, now: float, mono: float, *, clock: Callable[[float], str] = _clock
) -> str:
    """What is waiting and until when, in one line ("" when nothing waits). Pure.

    ``now`` is the wall clock (``time.time()``, for the ``until`` times), ``mono`` the monotonic
    clock the dispatcher stamps requests in flight with.
    """
    parts = [
        f"{p.roles} server paused by {p.reason} until {clock(p.until)}"
        for p in stats.pauses.values()
        if p.until > now
    ]
    waits = [w for w in stats.waits.values() if w.until > now]
    if waits:
        reasons = sorted({f"{w.roles} {w.reason}" for w in waits})
        shown = ", ".join(reasons[:4]) + (", ..." if len(reasons) > 4 else "")
        last = max(w.until for w in waits)
        noun = "request" if len(waits) == 1 else "requests"
        parts.append(f"{len(waits)} {noun} backing off ({shown}) until {clock(last)}")
    stalled = [(role, mono - start) for role, start in stats.sending.values() if mono - start >= STALL_AFTER]
    if stalled:
        role, longest = max(stalled, key=lambda item: item[1])
        noun = "request" if len(stalled) == 1 else "requests"
        parts.append(f"{len(stalled)} {noun} without an answer for {longest:.0f}s+ (longest: {role})")
    return inert_line("waiting: " + "; ".join(parts)) if parts else ""


Prices = dict[str, tuple[float, float]]
"""Dollars per million (prompt, completion) tokens, by role."""


def spent(stats: RunStats, prices: Prices | None) -> float | None:
    """Dollars spent on calls actually sent (replayed calls cost nothing); None without prices. Pure."""
    if not prices:
        return None
    total = 0.0
    for role, u in stats.usage.items():
        p, c = prices.get(role, (0.0, 0.0))
        total += (u.prompt_tokens * p + u.completion_tokens * c) / 1e6
    return total


def eta_seconds(
    elapsed: float, rows: int, total: int | None, calls: int, calls_per_row: float | None
) -> float | None:
    """Seconds left: from finished rows once there are some, else from answered calls and the
    expected calls per row (a run of slow calls has no finished row for a long time). Pure."""
    if total is None or elapsed <= 0:
        return None
    if rows > 0:
        return max(0.0, (total - rows) * elapsed / rows)
    if calls > 0 and calls_per_row:
        return max(0.0, (total * calls_per_row - calls) * elapsed / calls)
    return None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "eta -"
    s = int(seconds)
    return f"eta {s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def describe_spend(stats: RunStats, prices: Prices | None, rows: int, total: int | None) -> str:
    """``$0.0123 so far, ~$0.51 for the run`` ("" without prices). Pure."""
    cost = spent(stats, prices)
    if cost is None:
        return ""
    text = f"${cost:.4f} so far"
    if total and rows:
        text += f", ~${cost * total / rows:.4f} for the run"
    return text


class RunDisplay:
    """A live bar with sample counts, a line of calls and tokens per role, and a line of waits.

    ``refresh()`` redraws from the counters it was last given; the CLI calls it twice a second, so
    calls answered, in flight and waiting move while a slow sample is still running.
    """

    def __init__(
        self,
        console: Console,
        *,
        total: int | None,
        quiet: bool,
        prices: Prices | None = None,
        calls_per_row: float | None = None,
        online_prices: Prices | None = None,
    ) -> None:
        self.console = console
        self.quiet = quiet
        self.total = total
        self.prices = prices
        self.online_prices = online_prices  # --batch: what the same calls would cost online
        self.calls_per_row = calls_per_row
        self._state: tuple[RunSummary, RunStats] | None = None
        self._last = 0.0
        self._progress = Progress(
            TextColumn("[bold]refining"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}", markup=False),
            TextColumn("{task.fields[rate]}", markup=False),
            TextColumn("{task.fields[counts]}", markup=False),
            console=console,
        )
        self._task = self._progress.add_task("refine", total=total, counts="", rate="", eta="eta -")
        self._started = time.monotonic()
        self._detail = Text("", style="dim", no_wrap=True, overflow="ellipsis")
        self._waits = Text("", style="yellow", no_wrap=True, overflow="ellipsis")
        self._endpoints = Text("", style="dim", no_wrap=True, overflow="ellipsis")
        self._batches = Text("", style="cyan", no_wrap=True, overflow="ellipsis")
        self._finding = Text("", style="bold yellow")
        self._live = Live(
            Group(self._progress, self._detail, self._waits, self._endpoints, self._batches, self._finding),
            console=console,
            refresh_per_second=10,
        )

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
        self._state = (summary, stats)
        now = time.monotonic()
        if now - self._last < 0.1 and not force:
            return
        self._last = now
        counts = (
            f"{summary.refined} refined, {summary.kept} kept, {summary.failed} failed, "
            f"{summary.rejected} rejected"
        )
        elapsed = max(now - self._started, 1e-9)
        rate = f"{summary.rows / elapsed:.1f} rows/s, {stats.sent / elapsed:.1f} calls/s"
        eta = eta_seconds(elapsed, summary.rows, self.total, stats.sent, self.calls_per_row)
        eta_text = _duration(eta) if summary.rows or eta is None else "~" + _duration(eta)
        self._progress.update(self._task, completed=summary.rows, counts=counts, rate=rate, eta=eta_text)
        roles = "  ".join(
            f"{_ROLE_ABBREV.get(role, role)} {_tokens(u.prompt_tokens + u.completion_tokens)}"
            for role, u in stats.usage.items()
        )
        retries = f", {stats.retries} retries" if stats.retries else ""
        limited = f" ({stats.rate_limited} answered 429)" if stats.rate_limited else ""
        spend = describe_spend(stats, self.prices, summary.rows, self.total)
        self._detail.plain = inert_line(
            f"  calls {stats.sent} answered, {len(stats.sending)} in flight, {stats.cached} replayed"
            f"{retries}{limited} | tokens {roles or '-'}" + (f" | {spend}" if spend else "")
        )
        waits = describe_waits(stats, time.time(), now)
        self._waits.plain = f"  {waits}" if waits else ""
        pools = [describe_pool(pool.states(now)) for pool in stats.pools]
        self._endpoints.plain = "\n".join(f"  {line}" for line in pools if line)
        self._batches.plain = "\n".join(f"  {inert_line(line)}" for line in batch_lines(stats, now))
        finding = judge_finding(summary.audit.to_dict())  # None until enough comparisons are in
        self._finding.plain = f"  warning: {finding}" if finding else ""

    def refresh(self) -> None:
        """Redraw with the counters last given (they are live objects the run keeps updating)."""
        if self._state is not None:
            self.update(*self._state)

    def summary(self, summary: RunSummary, stats: RunStats, paths: RunPaths) -> None:
        c = self.console
        c.print(summary_table(summary, stats, self.prices, self.online_prices))
        finding = judge_finding(summary.audit.to_dict())
        if finding:
            c.print(Text(f"warning: {finding}", style="bold yellow"), highlight=False, soft_wrap=True)
        if summary.complete:
            lines = [f"output: {paths.output}", f"trace:  {paths.trace}"]
            if summary.rejected:
                lines.append(f"rejects: {paths.rejects}")
            if paths.pairs is not None:
                lines.append(f"pairs:  {paths.pairs}")
            for line in lines:
                c.print(Text(inert_line(line)), highlight=False, soft_wrap=True)
            return
        why = inert_line(summary.stopped or "stopped")
        if summary.resumable:
            text = f"not finished ({why}). Finished work is kept in {inert_line(_store_name(paths))}: "
            text += "rerun the same command to resume."
        else:
            text = f"not finished ({why}). Fix the setup, then rerun: finished work is kept."
        c.print(Text(text, style="yellow"), highlight=False, soft_wrap=True)


def batch_lines(stats: RunStats, now: float) -> list[str]:
    """``--batch``: one line per batch in flight, and how many were sent so far. Pure."""
    views = [v for backend in stats.batches for v in backend.views.values()]
    sent = sum(backend.batches_sent for backend in stats.batches)
    if not stats.batches:
        return []
    return [f"batches: {sent} sent, {len(views)} in flight", *describe_batches(views, now)[:8]]


def _store_name(paths: RunPaths) -> str:
    """The store's name beside the output; its path in a run folder (``coevol.db`` alone says little)."""
    return paths.store.name if paths.run_dir is None else str(paths.store)


def summary_table(
    summary: RunSummary, stats: RunStats, prices: Prices | None = None, online: Prices | None = None
) -> Table:
    """The end-of-run table; every cell is ``Text`` made inert (causes and reasons may quote data)."""
    table = Table(title="coevol run", show_header=False, box=None)

    def row(label: str, value: object) -> None:
        table.add_row(Text(label), Text(inert_line(str(value))))

    row("rows", summary.rows)
    row("refined (>= 1 accepted edit)", summary.refined)
    row("kept as they were", summary.kept)
    row("failed", summary.failed)
    row("rejected rows", summary.rejected)
    if summary.resumed:
        row("replayed from the store", summary.resumed)
    row("accepted edits", summary.accepted_edits)
    hist = ", ".join(f"{k}: {v}" for k, v in sorted(summary.rounds.items()))
    row("accepted rounds per turn", hist or "-")
    if summary.stop_reasons:
        row("loop stopped by", ", ".join(f"{k}: {v}" for k, v in summary.stop_reasons.items()))
    if summary.failure_causes:
        row("failure causes", ", ".join(f"{k}: {v}" for k, v in summary.failure_causes.items()))
    if summary.judged:
        # A stop message counts at the moment of the stop; calls in flight finish after it.
        after = " (all, with those finished after the stop)" if summary.stopped else ""
        row("judge verdicts unparseable", f"{summary.unparseable} of {summary.judged}{after}")
    row("calls sent / replayed", f"{stats.sent} / {stats.cached}")
    if stats.retries:
        row("retries", stats.retries)
    if stats.rate_limited:
        row("answered 429", stats.rate_limited)
    for role, u in stats.usage.items():
        row(f"tokens {role}", f"{_tokens(u.prompt_tokens)} in, {_tokens(u.completion_tokens)} out")
    cost = spent(stats, prices)
    if cost is not None:
        row("cost (calls sent)", f"${cost:.4f}")
    if stats.batches:
        sent = sum(b.batches_sent for b in stats.batches)
        row("batches sent (--batch)", f"{sent} ({sum(b.lines_sent for b in stats.batches)} lines)")
        online_cost = spent(stats, online)
        if online_cost is not None:
            row("the same calls online", f"${online_cost:.4f}")
    row("elapsed", f"{summary.elapsed:.1f}s")
    return table
