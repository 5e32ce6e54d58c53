"""Run a judge check: the configured judge, in both orders, on the built-in pairs.

The check asks the judge exactly as a run would (the same prompt, kind, re-asks and margin) through
the engine's dispatcher, so its calls go through the store like any other: a rerun, or the run it
guards (``refine --judge-check``), replays them instead of paying again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path

import orjson

from coevol.config import Config
from coevol.engine.runplan import RunPlan
from coevol.errors import AuthenticationError, ConfigError, LLMError, NotFoundError
from coevol.judge_check.metrics import CheckPair, CheckResult, JudgeVerdict, PairResult, spread, summarize
from coevol.llm.types import Backend, Generate
from coevol.loop import LoopSettings
from coevol.prompts.render import Sample
from coevol.prompts.templates import PromptSet
from coevol.roles.agents import judge

__all__ = ["JudgeCheckFailed", "acheck_judge", "check_judge", "guard", "load_pairs"]

ProgressFn = Callable[[int, int], None]


class JudgeCheckFailed(ConfigError):
    """``--judge-check``: the judge is not usable, so the run stopped before any refinement call."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(
            f"the judge check says {result.verdict.value}, so nothing was refined: "
            f"{result.to_dict()['advice']} (see `coevol judge-check`; --judge-check-force runs anyway)"
        )
        self.result = result


def load_pairs() -> list[CheckPair]:
    """The built-in pairs shipped with coevol (``coevol/judge_check/data/pairs.jsonl``)."""
    text = resources.files("coevol.judge_check").joinpath("data/pairs.jsonl").read_bytes()
    return [CheckPair(**orjson.loads(line)) for line in text.splitlines() if line.strip()]


async def check_judge(
    generate: Generate,
    prompts: PromptSet,
    loop: LoopSettings,
    pairs: list[CheckPair] | None = None,
    *,
    in_flight: int = 64,
    progress: ProgressFn | None = None,
) -> CheckResult:
    """Judge every pair in both orders (the worse answer as the previous response, the better as
    the edit) and sum up. A failed call leaves its pair out (``failed``); a refused key or model
    stops the check, as it would stop a run."""
    items = pairs if pairs is not None else load_pairs()
    window = asyncio.Semaphore(in_flight)
    done = [0]

    async def one(pair: CheckPair) -> PairResult:
        async with window:
            sample = Sample(pair.instruction, pair.input, pair.worse)
            try:
                trace = await judge(
                    generate,
                    prompts,
                    sample,
                    pair.better,
                    kind=loop.judge,
                    reasks=loop.judge_reasks,
                    margin=loop.judge_margin,
                )
            except (AuthenticationError, NotFoundError):
                raise
            except LLMError:
                trace = None
        done[0] += 1
        if progress is not None:
            progress(done[0], len(items))
        return PairResult(pair, trace)

    results = await asyncio.gather(*(one(p) for p in items))
    return summarize(loop.judge, list(results))


async def acheck_judge(
    config: Config,
    store_path: Path,
    *,
    limit: int | None = None,
    backends: Mapping[str, Backend] | None = None,
    progress: ProgressFn | None = None,
) -> CheckResult:
    """``coevol judge-check``: build the judge alone (as ``compare`` does) and check it, its calls
    kept in the store at ``store_path``."""
    from coevol.engine.build import build_engine
    from coevol.store.sqlite import Store

    plan = RunPlan.of(config, roles=("judge",))  # the judge alone, as compare builds it
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(Store(store_path))
        engine = await build_engine(plan, store=store, backends=dict(backends) if backends else None)
        try:
            in_flight = 1 if engine.local else plan.limits.concurrency
            pairs = spread(load_pairs(), limit)
            return await check_judge(
                engine.dispatcher, engine.prompts, plan.loop, pairs, in_flight=in_flight, progress=progress
            )
        finally:
            await engine.dispatcher.drain()
            await engine.aclose()


async def guard(generate: Generate, prompts: PromptSet, plan: RunPlan, *, local: bool) -> CheckResult | None:
    """``--judge-check`` before a run: check the judge and raise ``JudgeCheckFailed`` unless it is
    usable or ``--judge-check-force`` is set. Nothing when the check is off."""
    if not plan.judge_check:
        return None
    result = await check_judge(
        generate, prompts, plan.loop, in_flight=1 if local else plan.limits.concurrency
    )
    if result.verdict is not JudgeVerdict.USABLE and not plan.judge_check_force:
        raise JudgeCheckFailed(result)
    return result
