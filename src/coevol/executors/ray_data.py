"""Refine rows inside a Ray Data pipeline: a callable class for ``Dataset.map_batches``.

    import ray
    from coevol.executors.ray_data import RefineBatches

    ds = ray.data.read_parquet("s3://bucket/sft/")
    ds = ds.map_batches(
        RefineBatches,
        fn_constructor_kwargs={"config": {"base_url": "http://vllm:8000/v1", "model": "qwen"},
                               "store_dir": "/local/coevol-calls"},
        concurrency=4, batch_size=64,
    )
    ds.write_parquet("s3://bucket/sft-refined/")

Each actor builds one engine (one HTTP session per server, the ordinary dispatcher with its limits,
retries and cache) on its own event loop and keeps it for every batch; the rows of a batch are
refined concurrently, up to ``samples_in_flight``. Rows keep their format (Alpaca, ShareGPT or
``messages``) and extra columns; ``coevol_status`` says what became of each row (``refined``,
``kept``, ``failed``, ``rejected``), and a row that cannot be parsed comes back unchanged. With
``store_dir`` each actor takes a store of its own there (the first one no other actor holds), so
a rerun replays the calls already paid for; SQLite is never shared between processes or hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coevol.config import Config
from coevol.errors import DataError, OutputError
from coevol.executors.on_ray import check_ray_config

__all__ = ["RefineBatches"]

STATUS_COLUMN = "coevol_status"


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
        self.store_dir = Path(store_dir) if store_dir is not None else None
        self.input_format = input_format
        self.status_column = status_column
        self._engine: Any = None
        self._store: Any = None
        self._lock_fd: int | None = None
        self._window: asyncio.Semaphore | None = None

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

    async def _ready(self) -> Any:
        if self._engine is None:
            from coevol.engine.build import build_engine
            from coevol.store.sqlite import Store

            if self.store_dir is not None:
                self._store = Store(self._own_store())
            self._engine = await build_engine(self.config, store=self._store)
            cfg = self.config
            self._window = asyncio.Semaphore(cfg.samples_in_flight or cfg.concurrency)
        return self._engine

    async def _one(self, index: int, row: dict[str, Any]) -> dict[str, Any]:
        from coevol.io.formats import parse_example, render_example
        from coevol.multiturn import refine_example

        engine = self._engine
        try:
            example = parse_example(row, self.input_format, index=index, line=index + 1)
        except DataError:
            return self._with_status(row, "rejected")
        assert self._window is not None
        async with self._window:
            outcome = await refine_example(
                example, engine.dispatcher, engine.prompts, self.config.loop_settings(),
                self.config.conversation_settings(),
            )  # fmt: skip
        return self._with_status(render_example(example, outcome.turns), outcome.status.value)

    def _with_status(self, row: dict[str, Any], status: str) -> dict[str, Any]:
        return {**row, self.status_column: status} if self.status_column else row

    async def __call__(self, batch: Any) -> Any:
        rows, kind = batch_rows(batch)
        await self._ready()
        done = await asyncio.gather(*(self._one(i, row) for i, row in enumerate(rows)))
        return rows_batch(list(done), kind)

    async def aclose(self) -> None:
        """Close the sessions and the store and free the store for another actor (Ray ends an
        actor's process anyway; call this when using the class yourself)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispatcher.drain()
            await engine.aclose()
        store, self._store = self._store, None
        if store is not None:
            store.close()
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        fd = getattr(self, "_lock_fd", None)  # absent when __init__ refused the config
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
