"""Refine rows inside a Ray Data pipeline: a callable class for ``Dataset.map_batches``.

    import ray
    from coevol.executors.ray_data import RefineBatches

    ds = ray.data.read_parquet("s3://bucket/sft/")
    ds = ds.map_batches(
        RefineBatches,
        fn_constructor_kwargs={"config": {"base_url": "http://vllm:8000/v1", "model": "qwen"},
                               "store_dir": "/local/coevol-calls"},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=4), num_cpus=0.25, batch_size=64,
    )
    ds.write_parquet("s3://bucket/sft-refined/")

Each actor opens one job (one HTTP session per server, the ordinary dispatcher with its limits,
retries and cache) on its own event loop and keeps it for every batch; the rows of a batch go
through the one row runner, up to ``samples_in_flight`` at once, under the run's stop rules:
``max_budget`` and ``max_errors`` raise ``BudgetExceeded`` and a judge without usable verdicts
(``max_unparseable``) raises ``ConfigError``, which fails the pipeline. Each actor counts its own
calls and rows (actors share nothing), so these limits hold per actor: give each actor its share
(``max_budget`` divided by the number of actors) for a limit on the whole pipeline. There is no
output file (the pipeline writes the rows), so no file refusal or lock applies.

Rows keep their format (Alpaca, ShareGPT or ``messages``) and extra columns; ``coevol_status``
says what became of each row (``refined``, ``kept``, ``failed``, ``rejected``), and a row that
cannot be parsed comes back unchanged. With
``store_dir`` each actor takes a store of its own there (the first one no other actor holds), so
a rerun replays the calls already paid for; SQLite is never shared between processes or hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coevol.config import Config
from coevol.domain import BadRow, Example
from coevol.engine.runner import Refined, RunSummary
from coevol.engine.runplan import RunPlan
from coevol.errors import DataError, OutputError
from coevol.executors.on_ray import check_ray_config
from coevol.io.formats import parse_example, render_example

if TYPE_CHECKING:
    from coevol.engine.job import Job

__all__ = ["RefineBatches"]

STATUS_COLUMN = "coevol_status"
_CLOSE_TIMEOUT = 30.0  # seconds a torn-down actor waits for its sessions to close


def plain(value: Any) -> Any:
    """Numpy arrays and scalars (as Ray Data hands nested columns over) as plain Python. Pure."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    tolist = getattr(value, "tolist", None)
    if tolist is not None and type(value).__module__ == "numpy":
        return plain(tolist())
    return value


def batch_rows(batch: Any) -> tuple[list[dict[str, Any]], str]:
    """The batch's rows and its kind ("pandas" or "columns")."""
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):
        return [plain(r) for r in batch.to_dict("records")], "pandas"
    if isinstance(batch, Mapping):
        columns = {k: list(v) for k, v in batch.items()}
        n = len(next(iter(columns.values()))) if columns else 0
        return [{k: plain(v[i]) for k, v in columns.items()} for i in range(n)], "columns"
    raise DataError(f"map_batches handed a {type(batch).__name__}; use batch_format='numpy' or 'pandas'")


def rows_batch(rows: list[dict[str, Any]], kind: str) -> Any:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    columns = {name: [row.get(name) for row in rows] for name in names}
    if kind == "pandas":
        import importlib

        return importlib.import_module("pandas").DataFrame(columns)
    return columns


def _close_on(
    loop: asyncio.AbstractEventLoop, close: Callable[[], Coroutine[Any, Any, None]], thread: int | None
) -> None:
    """Run ``close()`` on ``loop``: waited for from another thread (Ray Data runs an async UDF's
    loop in a thread of its own), or to the end when the loop is stopped; from the loop's own
    thread it can only be scheduled."""
    if threading.get_ident() == thread:
        loop.create_task(close())
    elif loop.is_running():
        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=_CLOSE_TIMEOUT)
    else:
        loop.run_until_complete(close())


class RefineBatches:
    """A ``map_batches`` callable class: refines each batch's rows on this actor's engine."""

    def __init__(
        self,
        config: Config | Mapping[str, Any] | None = None,
        *,
        store_dir: str | os.PathLike[str] | None = None,
        input_format: str | None = None,
        status_column: str | None = STATUS_COLUMN,
        **overrides: Any,
    ) -> None:
        base = config.model_dump() if isinstance(config, Config) else dict(config or {})
        self.config = Config.from_mapping({**base, **overrides}, source="RefineBatches")
        check_ray_config(self.config)
        self.plan = RunPlan.of(self.config)
        self.store_dir = Path(store_dir) if store_dir is not None else None
        self.input_format = input_format
        self.status_column = status_column
        self.summary = RunSummary()  # this actor's rows, across its batches
        self._job: Job | None = None
        self._lock_fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the job's sessions live on
        self._loop_thread: int | None = None

    def _own_store(self) -> Path:
        """The first store under ``store_dir`` that no other actor holds (an ``flock`` says so)."""
        assert self.store_dir is not None
        try:
            self.store_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create store_dir {self.store_dir}: {exc.strerror or exc}") from None
        for k in range(10_000):
            lock = self.store_dir / f"actor-{k:04d}.lock"
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._lock_fd = fd
            return self.store_dir / f"actor-{k:04d}.coevol.db"
        raise OutputError(f"{self.store_dir}: every actor store is held")

    async def _ready(self) -> Job:
        if self._job is None:
            from coevol.engine.job import Job

            self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()

            store = self._own_store() if self.store_dir is not None else None
            self._job = await Job.open(self.plan, cache=store)  # the actor's calls, kept for a rerun
        return self._job

    async def __call__(self, batch: Any) -> Any:
        """Refine one batch through the one row runner, under the actor's stop rules (they count
        across the actor's batches: once tripped, every later batch stops at once)."""
        from coevol.engine.runner import RefineWork

        rows, kind = batch_rows(batch)
        job = await self._ready()
        done: list[dict[str, Any]] = []

        def emit(item: Example | BadRow, result: Refined) -> None:
            row = rows[len(done)]  # results come in input order
            outcome = result.outcome
            if outcome is None:
                done.append(self._with_status(row, "rejected"))
            else:
                assert isinstance(item, Example)
                done.append(self._with_status(render_example(item, outcome.turns), outcome.status.value))

        await job.runner(RefineWork(job, self.summary), emit).run(self._parsed(rows))
        return rows_batch(done, kind)

    def _parsed(self, rows: list[dict[str, Any]]) -> Iterator[Example | BadRow]:
        for index, row in enumerate(rows):
            try:
                yield parse_example(row, self.input_format, index=index, line=index + 1)
            except DataError as exc:
                yield BadRow(index + 1, str(exc), "")

    def _with_status(self, row: dict[str, Any], status: str) -> dict[str, Any]:
        return {**row, self.status_column: status} if self.status_column else row

    async def aclose(self) -> None:
        """Close the sessions and the store and free the store for another actor (Ray ends an
        actor's process anyway; call this when using the class yourself)."""
        job, self._job = self._job, None
        if job is not None:
            await job.aclose()
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        """Ray Data deletes the instance when it tears the actor down: close the sessions and the
        store on the loop that opened them (aiohttp warns of every session left open)."""
        loop: asyncio.AbstractEventLoop | None = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(Exception):  # nothing may escape a finaliser
                _close_on(loop, self.aclose, getattr(self, "_loop_thread", None))
        fd = getattr(self, "_lock_fd", None)  # absent when __init__ refused the config
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
