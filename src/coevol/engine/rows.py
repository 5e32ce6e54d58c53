"""The one row runner: every job (refine a file, refine rows in memory, a Ray Data batch, judge a
comparison) runs its work items through it, so each obeys the same admission, order and stop rules.

A job supplies three things:

- a ``Work``: ``ready(item)`` gives an item's result without a call (a bad row, one replayed from
  the store, an identical pair), ``run(item)`` computes it, ``finish(item, result)`` counts it in
  the job's summary and says what the stop rules must know (a ``StopTally``);
- a sink, ``emit(item, result)``, called once per item in input order (write files, collect
  results in memory, build a batch);
- the ``Guard`` of its stop rules and the dispatcher its calls go through.

The parts:

- **admission** (``_Window``): at most ``window`` items run at once, and finished results may run
  at most ``4 x`` that far ahead of the slowest unfinished item, so memory stays flat whatever the
  input size (items are drawn from the iterable lazily);
- **ordered emission** (``_Reorder``): results come in any order, the sink gets them in order;
- **stop handling**: the first error that is not an item's own failure (``BudgetExceeded`` from the
  guard, a ``ConfigError``, a cancellation) cancels every running item, waits for each to unwind
  (even through a second Ctrl-C), drains the dispatcher so no call outlives the job, and propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from coevol.engine.dispatch import Dispatcher
from coevol.engine.stops import Guard
from coevol.llm.batch import work_unit

__all__ = ["RowRunner", "StopTally", "Work"]

T = TypeVar("T")
R = TypeVar("R")
T_contra = TypeVar("T_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class StopTally:
    """What one finished item tells the stop rules (see ``Guard.after_item``)."""

    failure: tuple[str, str] | None = None  # (cause, message) of an item that failed in this job
    judged: int = 0
    unparseable: int = 0


class Work(Protocol[T_contra, R]):
    """What a job does with one item; see the module docstring."""

    def ready(self, item: T_contra) -> R | None: ...

    def run(self, item: T_contra) -> Awaitable[R]: ...

    def finish(self, item: T_contra, result: R) -> StopTally: ...


Emit = Callable[[T, R], None]


class _Reorder(Generic[T, R]):
    """The one reorder buffer: results come in any order, ``ready()`` gives them in input order."""

    def __init__(self) -> None:
        self._waiting: dict[int, tuple[T, R]] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def put(self, position: int, item: T, result: R) -> None:
        self._waiting[position] = (item, result)

    def ready(self) -> Iterator[tuple[T, R]]:
        while self._next in self._waiting:
            entry = self._waiting.pop(self._next)
            self._next += 1
            yield entry


class _Window:
    """Admission: how many items run, and how far finished results may run ahead."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.ahead = 4 * size  # finished results allowed to wait for a slower earlier item
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


class RowRunner(Generic[T, R]):
    """Runs a job's items through its work, in a bounded window, into its sink, under its guard."""

    def __init__(
        self,
        work: Work[T, R],
        emit: Emit[T, R],
        guard: Guard,
        dispatcher: Dispatcher,
        *,
        window: int,
        progress: Callable[[], None] | None = None,
    ) -> None:
        self.work = work
        self.emit = emit
        self.guard = guard
        self.dispatcher = dispatcher
        self.progress = progress
        self._window = _Window(window)
        self._reorder: _Reorder[T, R] = _Reorder()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop_error: list[BaseException] = []

    async def run(self, items: Iterable[T]) -> None:
        """Every item, then a drained dispatcher. Raises why it stopped early, after a clean stop."""
        try:
            self.guard.check()  # a job that goes on after a stop (a next batch) stops at once
            await self._feed(items)
            while self._tasks and not self._stop_error:
                await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
            if self._stop_error:
                raise self._stop_error[0]
            await self.dispatcher.drain()
        except BaseException:
            await self._stop()
            raise

    async def _feed(self, items: Iterable[T]) -> None:
        """Admission: draw items lazily and start each one when there is room for it."""
        window = self._window
        for position, item in enumerate(items):
            # Items finished at once must not pile up behind a slow one either.
            await window.wait_until(lambda: bool(self._stop_error) or len(self._reorder) < window.ahead)
            if self._stop_error:
                return
            result = self.work.ready(item)
            if result is not None:
                self._finish(position, item, result)
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
            task = asyncio.create_task(self._run(position, item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, position: int, item: T) -> None:
        try:
            with work_unit():  # --batch: a stage is sent once every item in flight waits on it
                result = await self.work.run(item)
            self._finish(position, item, result)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._stop_error.append(exc)
        finally:
            await self._window.done()

    def _finish(self, position: int, item: T, result: R) -> None:
        """Count, emit what is now in order, report progress, then check the stop rules."""
        tally = self.work.finish(item, result)
        self._reorder.put(position, item, result)
        for ready in self._reorder.ready():
            self.emit(*ready)
        if self.progress is not None:
            self.progress()
        self.guard.after_item(failure=tally.failure, judged=tally.judged, unparseable=tally.unparseable)

    async def _stop(self) -> None:
        """Cancel every item, wait for each to unwind (even through a second Ctrl-C), and drain
        the dispatcher so no call outlives the job."""
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
