"""The one job lifecycle: stores open, the engine built from the run plan, the stop rules armed,
and everything closed again in order, whatever the job (refine a file or rows, a Ray Data actor,
a comparison).

The refusals and the lock come before a job opens (only jobs that write files have them: see
``coevol.api.prepare`` and ``coevol.compare.run``); the work goes through ``Job.runner``, the one
row runner, so every entry point gets the same window, order, stop rules and clean stop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from coevol.engine.build import Engine, build_engine
from coevol.engine.rows import Emit, RowRunner, Work
from coevol.engine.runplan import RunPlan
from coevol.engine.stops import Guard
from coevol.llm.types import Backend
from coevol.store.sqlite import Store

__all__ = ["Job"]

T = TypeVar("T")
R = TypeVar("R")


class Job:
    """An open job: its engine, its stores and its guard. ``await Job.open(...)``, then ``aclose()``
    (or ``async with``)."""

    def __init__(
        self, plan: RunPlan, engine: Engine, guard: Guard, store: Store | None, stores: contextlib.ExitStack
    ) -> None:
        self.plan = plan
        self.engine = engine
        self.guard = guard
        self.store = store  # the job's own store (finished samples; its calls too without a cache)
        self._stores = stores

    @classmethod
    async def open(
        cls,
        plan: RunPlan,
        *,
        store: Path | None = None,
        cache: Path | None = None,
        backends: Mapping[str, Backend] | None = None,
        items: str = "samples",
    ) -> Job:
        """Open the stores, build the engine (servers checked, keys read) and arm the stop rules.

        ``store`` is the job's own store; ``cache`` a call store several jobs share (calls go there
        instead). ``items`` names what fails in a ``--max-errors`` message.
        """
        stores = contextlib.ExitStack()
        try:
            own = stores.enter_context(Store(store)) if store is not None else None
            calls = stores.enter_context(Store(cache)) if cache is not None else own
            engine = await build_engine(plan, store=calls, backends=dict(backends) if backends else None)
        except BaseException:
            stores.close()
            raise
        guard = Guard(plan.stops, plan.prices(), items=items)
        if plan.stops.max_budget is not None:
            engine.dispatcher.after_send = guard.after_send
        return cls(plan, engine, guard, own, stores)

    def runner(
        self, work: Work[T, R], emit: Emit[T, R], *, progress: Callable[[], None] | None = None
    ) -> RowRunner[T, R]:
        """The row runner for this job's items, in the plan's window of samples."""
        window = self.plan.limits.samples(self.engine.local)
        return RowRunner(work, emit, self.guard, self.engine.dispatcher, window=window, progress=progress)

    async def aclose(self) -> None:
        """Drain what is still in flight, close the backends, then the stores."""
        try:
            await self.engine.dispatcher.drain()
            await self.engine.aclose()
        finally:
            self._stores.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
