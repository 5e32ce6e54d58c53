"""One measured client run, in its own process, printing one JSON line of figures.

``run.py`` starts this once per scenario so that each client's CPU time and peak RSS are its own
(``getrusage(RUSAGE_SELF)``, all threads), never the server's or another scenario's.

- ``coevol``: the file run exactly as ``coevol refine`` does it (``coevol.api.arefine_file``: the
  store, the engine, the runner), minus the progress bar. CPU and wall time are counted from
  the first row to the last; interpreter start-up and imports are not (they are in the RSS).
- ``baseline``: the reference implementation's structure: each sample's calls strictly one after
  another (debaters and judge orders too), ``--workers`` samples at a time like its threads, the
  same aiohttp client, no store, no retries.
- ``aiohttp``: the transport's floor: the same number of POSTs of a typical debater request
  (``--limit`` times 18) through one pooled ``aiohttp`` session, 256 at a time, nothing else.
- ``dryrun``: ``coevol.cli.dryrun.estimate`` over the input, to show that streaming keeps memory flat.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from coevol.api import arefine_file
from coevol.config import load_config
from coevol.conversation import ConversationSettings
from coevol.domain import Example
from coevol.engine.dispatch import RunStats
from coevol.engine.runner import RunSummary
from coevol.io.formats import render_example
from coevol.io.readers import read_examples
from coevol.llm.openai_http import OpenAIHTTPBackend
from coevol.llm.types import ChatRequest, Completion, GenParams, Message
from coevol.loop import LoopSettings
from coevol.multiturn import refine_example
from coevol.prompts.templates import load_prompts


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def run_coevol(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {"base_url": args.base_url, "model": "fake", "concurrency": args.concurrency}
    if args.judge_early_exit:
        overrides["judge_early_exit"] = True
    if args.mode:
        overrides["mode"] = args.mode
    config = load_config(None, overrides)
    started: list[float] = []

    def first_row(summary: RunSummary, stats: RunStats) -> None:
        if not started:  # called once before the first row: count from here, not from start-up
            started.extend((_cpu(), time.perf_counter()))

    run = await arefine_file(args.input, args.output, config, offset=args.offset, limit=args.limit,
                             progress=first_row)  # fmt: skip
    wall, cpu = time.perf_counter() - started[1], _cpu() - started[0]
    return {
        "rows": run.summary.rows,
        "calls": run.stats.sent,
        "retries": run.stats.retries,
        "failed": run.summary.failed,
        "wall_s": wall,
        "cpu_s": cpu,
        "store_commits": run.store_commits,
        "peak_in_flight": run.peak_in_flight,
    }


class _Sequential:
    """A ``generate`` that lets one call of its sample out at a time, as the reference code does."""

    def __init__(self, backend: OpenAIHTTPBackend, counter: list[int]) -> None:
        self.backend = backend
        self.counter = counter
        self.lock = asyncio.Lock()
        self.params = GenParams()

    async def __call__(
        self, role: str, messages: Sequence[Message], *, attempt: int = 0, seed: int | None = None, n: int = 1
    ) -> Completion:
        params = self.params if seed is None and n == 1 else replace(self.params, seed=seed, n=n)
        async with self.lock:
            request = ChatRequest(self.backend.endpoint, "fake", tuple(messages), params, attempt)
            completion = await self.backend.complete(request)
            self.counter[0] += 1
            return completion


async def run_baseline(args: argparse.Namespace) -> dict[str, Any]:
    backend = OpenAIHTTPBackend(args.base_url, max_connections=args.workers)
    prompts = load_prompts()
    settings = LoopSettings(judge_early_exit=args.judge_early_exit)
    conversation = ConversationSettings()
    rows = [
        r for r in read_examples(args.input, offset=args.offset, limit=args.limit) if isinstance(r, Example)
    ]
    results: list[dict[str, Any] | None] = [None] * len(rows)
    counter = [0]
    queue = iter(range(len(rows)))

    async def worker() -> None:
        for i in queue:
            outcome = await refine_example(
                rows[i], _Sequential(backend, counter), prompts, settings, conversation
            )
            results[i] = render_example(rows[i], outcome.turns)

    cpu, wall = _cpu(), time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(args.workers)))
    finally:
        await backend.aclose()
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    with args.output.open("wb") as f:
        for row in results:
            f.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
    return {"rows": len(rows), "calls": counter[0], "retries": 0, "failed": 0, "wall_s": wall, "cpu_s": cpu}


async def run_aiohttp(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    calls = (args.limit or 100) * 18
    body = orjson.dumps(
        {
            "model": "fake",
            "messages": [
                {"role": "system", "content": "You are a debater. " * 20},
                {"role": "user", "content": "Question: explain why. " * 60},
            ],
            "max_tokens": 1000,
            "temperature": 0.0,
            "top_p": 1.0,
        }
    )
    url = args.base_url.rstrip("/") + "/chat/completions"
    connector = aiohttp.TCPConnector(limit=1024, limit_per_host=0)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        left = iter(range(calls))

        async def worker() -> None:
            for _ in left:
                async with session.post(url, data=body, allow_redirects=False) as resp:
                    await resp.read()

        cpu, wall = _cpu(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(256)))
        wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    return {"rows": 0, "calls": calls, "retries": 0, "failed": 0, "wall_s": wall, "cpu_s": cpu}


def run_dryrun(args: argparse.Namespace) -> dict[str, Any]:
    from coevol.cli.dryrun import estimate

    config = load_config(None, {"base_url": args.base_url or "http://127.0.0.1:1/v1", "model": "fake"})
    cpu, wall = _cpu(), time.perf_counter()
    est = estimate(config, args.input, offset=args.offset, limit=args.limit, prompts=load_prompts())
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    return {
        "rows": est.rows,
        "calls_min": est.calls_min,
        "calls_max": est.calls_max,
        "wall_s": wall,
        "cpu_s": cpu,
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("engine", choices=["coevol", "baseline", "aiohttp", "dryrun"])
    p.add_argument("--base-url")
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--output", type=Path)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--limit", type=int)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--workers", type=int, default=1, help="baseline: samples at a time")
    p.add_argument("--judge-early-exit", action="store_true")
    p.add_argument("--mode")
    args = p.parse_args(argv)
    if args.engine == "dryrun":
        result = run_dryrun(args)
    else:
        runs = {"coevol": run_coevol, "baseline": run_baseline, "aiohttp": run_aiohttp}
        result = asyncio.run(runs[args.engine](args))
    result["peak_rss_mb"] = _peak_rss_mb()
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
