"""The Python API: refine rows in a notebook or a pipeline, sync or async.

    from coevol import refine
    results = refine([{"instruction": "...", "input": "", "output": "..."}],
                     base_url="http://localhost:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")
    results[0].row["output"], results[0].accepted_rounds, results[0].trace

Rows may be Alpaca, ShareGPT or OpenAI ``messages`` dicts; each result's ``row`` keeps the row's
shape and extra fields. A row that cannot be parsed or refined is a result with ``status`` set,
never an exception; configuration problems do raise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coevol.config import Config
from coevol.engine.build import build_engine
from coevol.errors import DataError
from coevol.io.formats import parse_example, render_example
from coevol.multiturn import refine_example
from coevol.store.sqlite import Store

__all__ = ["Result", "arefine", "refine"]


@dataclass(frozen=True, slots=True)
class Result:
    """One row's outcome. ``status``: refined, kept, failed or rejected."""

    row: dict[str, Any] | None
    status: str
    accepted_rounds: int
    trace: dict[str, Any]
    error: str | None = None


def _config(config: Config | None, overrides: dict[str, Any]) -> Config:
    base = config.model_dump() if config is not None else {}
    return Config.from_mapping({**base, **overrides}, source="refine()")


async def arefine(
    rows: Iterable[dict[str, Any]],
    config: Config | None = None,
    *,
    cache: Path | str | None = None,
    **overrides: Any,
) -> list[Result]:
    """Refine ``rows`` concurrently; results come back in input order.

    ``overrides`` are ``Config`` fields (``base_url=``, ``model=``, ``max_rounds=`` ...).
    ``cache`` names a SQLite store so that a second call with the same rows costs nothing.
    """
    cfg = _config(config, overrides)
    store = Store(cache) if cache is not None else None
    engine = await build_engine(cfg, store=store)
    settings, conv = cfg.loop_settings(), cfg.conversation_settings()
    window = asyncio.Semaphore(cfg.samples_in_flight or (1 if engine.local else cfg.concurrency))

    async def one(index: int, obj: dict[str, Any]) -> Result:
        try:
            example = parse_example(obj, None, index=index, line=index + 1)
        except DataError as exc:
            return Result(None, "rejected", 0, {"index": index, "error": str(exc)}, str(exc))
        async with window:
            outcome = await refine_example(example, engine.dispatcher, engine.prompts, settings, conv)
        row = None if outcome.status == "rejected" else render_example(example, outcome.turns)
        return Result(row, outcome.status, outcome.accepted_rounds, outcome.trace, outcome.error)

    try:
        return list(await asyncio.gather(*(one(i, obj) for i, obj in enumerate(rows))))
    finally:
        await engine.dispatcher.drain()  # a failed sample's detached call must not outlive the engine
        await engine.aclose()
        if store is not None:
            store.close()


def refine(
    rows: Iterable[dict[str, Any]],
    config: Config | None = None,
    *,
    cache: Path | str | None = None,
    **overrides: Any,
) -> list[Result]:
    """Synchronous ``arefine`` (not for use inside a running event loop: await ``arefine`` there)."""
    return asyncio.run(arefine(rows, config, cache=cache, **overrides))
