"""Every stop rule through every entry point, against the fake server on loopback.

The rules: ``max_budget`` (checked after every sent call), ``max_errors`` (failed items of this
run), ``max_unparseable`` (a judge that never gives a verdict) and cancellation (Ctrl-C, SIGTERM, a
cancelled task). The entry points: ``arefine_file`` (what ``coevol refine`` and each Ray shard
run), ``arefine`` (``coevol.refine``), ``acompare_files`` (``coevol compare``) and Ray Data's
``RefineBatches`` (called in-process, as an actor would, without starting Ray). Each stops early,
with the rule's error, after a bounded number of requests, and sends nothing after it returns.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import coevol
from coevol.api import arefine, arefine_file
from coevol.compare.run import acompare_files
from coevol.config import Config, Price
from coevol.errors import BudgetExceeded, ConfigError
from coevol.executors.ray_data import RefineBatches
from coevol.testing import FakeOpenAIServer, FaultKind, Reply, always
from coevol.testing.responders import CoEvolResponder, GarbleFirstJudge, identify_role

from .engine_support import ThreadedServer, alpaca_rows, write_jsonl

ROWS = 20
ENTRIES = ["refine_file", "arefine", "compare", "batches"]


def priced(body: dict[str, Any]) -> Reply:
    """Every answer costs 1,000 prompt and 1,000 completion tokens: $0.002 at $1 per million."""
    return Reply(CoEvolResponder()(body), prompt_tokens=1000, completion_tokens=1000)


def never_a_verdict() -> GarbleFirstJudge:
    return GarbleFirstJudge(CoEvolResponder(), times=10**6)


async def run_entry(entry: str, tmp_path: Path, config: Config) -> Any:
    """Run ``entry`` on ``ROWS`` distinct rows (compare: those rows against edited ones)."""
    rows = alpaca_rows(ROWS, seed=31)
    if entry == "refine_file":
        data = write_jsonl(tmp_path / "in.jsonl", rows)
        return await arefine_file(data, tmp_path / "out.jsonl", config)
    if entry == "arefine":
        return await arefine(rows, config)
    if entry == "compare":
        base = write_jsonl(tmp_path / "base.jsonl", rows)
        cand = write_jsonl(tmp_path / "cand.jsonl", [{**r, "output": r["output"] + " More."} for r in rows])
        return await acompare_files(base, [cand], tmp_path / "result.json", config)
    actor = RefineBatches(config)
    try:
        columns = {key: [r[key] for r in rows] for key in rows[0]}
        return await actor(columns)
    finally:
        await actor.aclose()


def no_output(entry: str, tmp_path: Path) -> None:
    """A stopped file run commits nothing: no output, no result."""
    assert not (tmp_path / "out.jsonl").exists()
    assert not (tmp_path / "result.json").exists()


async def quiet_after(server: FakeOpenAIServer) -> None:
    """Nothing is sent once the entry point has returned: every call was drained (no retry or
    detached call goes on). The server may still be reading a request sent before the stop, so
    it is given a moment first."""
    await asyncio.sleep(0.2)
    sent = len(server.requests)
    await asyncio.sleep(0.6)  # longer than the first retry's backoff (0.5 s at most)
    assert len(server.requests) == sent


@pytest.mark.parametrize("entry", ENTRIES)
async def test_max_budget_stops_each_entry_point(entry: str, tmp_path: Path) -> None:
    async with FakeOpenAIServer(priced) as server:
        cfg = Config(
            base_url=server.base_url, model="m", price=Price(prompt=1.0, completion=1.0),
            max_budget=0.01, concurrency=2, samples_in_flight=2,
        )  # fmt: skip
        with pytest.raises(BudgetExceeded, match=r"spent \$0\.01\d* of --max-budget \$0\.01"):
            await run_entry(entry, tmp_path, cfg)
        # $0.01 is reached at the 5th answer; only requests already in flight (2) may follow it.
        assert 5 <= len(server.requests) <= 5 + 2
        await quiet_after(server)
    no_output(entry, tmp_path)


@pytest.mark.parametrize("entry", ENTRIES)
async def test_max_errors_stops_each_entry_point(entry: str, tmp_path: Path) -> None:
    async with FakeOpenAIServer(CoEvolResponder(), faults=always(FaultKind.SERVER_ERROR)) as server:
        cfg = Config(
            base_url=server.base_url, model="m", max_errors=2, max_retries=0, concurrency=4,
            samples_in_flight=2,
        )  # fmt: skip
        with pytest.raises(BudgetExceeded, match=r"3 (samples|pairs) failed, more than --max-errors 2"):
            await run_entry(entry, tmp_path, cfg)
        # Each failed item sent at most its two concurrent first calls; 3 failed, 1 more was running.
        assert len(server.requests) <= 8
        await quiet_after(server)
    no_output(entry, tmp_path)


@pytest.mark.parametrize("entry", ENTRIES)
async def test_max_unparseable_stops_each_entry_point(entry: str, tmp_path: Path) -> None:
    async with FakeOpenAIServer(never_a_verdict()) as server:
        cfg = Config(
            base_url=server.base_url, model="m", max_unparseable=0.1, min_judged=3, judge_reasks=0,
            samples_in_flight=1,
        )  # fmt: skip
        with pytest.raises(ConfigError, match=r"no usable verdict in 3 of 3 comparisons \(100%"):
            await run_entry(entry, tmp_path, cfg)
        await quiet_after(server)
    no_output(entry, tmp_path)


@pytest.mark.parametrize("entry", ENTRIES)
async def test_cancellation_stops_each_entry_point_and_drains(entry: str, tmp_path: Path) -> None:
    answered = asyncio.Event()
    inner = CoEvolResponder()

    def responder(body: dict[str, Any]) -> str:
        answered.set()
        return inner(body)

    async with FakeOpenAIServer(responder, latency=0.05) as server:
        cfg = Config(base_url=server.base_url, model="m", concurrency=4, samples_in_flight=2)
        task = asyncio.ensure_future(run_entry(entry, tmp_path, cfg))
        await answered.wait()  # the run is under way
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(server.requests) < ROWS * 2  # stopped, not finished
        await quiet_after(server)
    no_output(entry, tmp_path)


async def test_sync_refine_with_a_budget_raises_after_a_few_calls() -> None:
    """The reported case: ``coevol.refine`` with a budget refined every row; now it stops.
    (Blocking, so it runs on a thread while the server runs on this loop.)"""
    rows = alpaca_rows(ROWS, seed=32)
    async with FakeOpenAIServer(priced) as server:
        with pytest.raises(BudgetExceeded, match="--max-budget"):
            await asyncio.to_thread(
                coevol.refine, rows, base_url=server.base_url, model="m", max_budget=0.05,
                price={"prompt": 1000, "completion": 1000}, concurrency=4,
            )  # fmt: skip
        # One answer costs $2 here, past the budget at once: only the requests in flight (at most
        # 4) and those that took a freed slot before the stop follow it, not 20 rows' worth.
        assert len(server.requests) <= 2 * 4
        await quiet_after(server)


async def test_sync_refine_with_max_errors_stops_against_a_failing_server() -> None:
    rows = alpaca_rows(ROWS, seed=33)
    async with FakeOpenAIServer(CoEvolResponder(), faults=always(FaultKind.SERVER_ERROR)) as server:
        with pytest.raises(BudgetExceeded, match="more than --max-errors 3"):
            await asyncio.to_thread(
                coevol.refine, rows, base_url=server.base_url, model="m", max_errors=3, max_retries=1,
                concurrency=4,
            )  # fmt: skip
        # The report: 254 failing requests and 20 results. Now: 4 failed samples at most 4 more in
        # flight, each 2 calls sent twice, against 80 for every row.
        assert len(server.requests) <= (4 + 4) * 2 * 2
        await quiet_after(server)


async def test_the_api_results_carry_the_summary_and_the_judge_audit() -> None:
    async with FakeOpenAIServer(CoEvolResponder()) as server:
        results = await arefine(alpaca_rows(4, seed=34), base_url=server.base_url, model="m")
    assert len(results) == 4 and results.summary.rows == 4 and results.summary.complete
    assert results.summary.refined + results.summary.kept == 4
    assert results.summary.judged == results.summary.audit.comparisons > 0
    assert results.stats.sent == len(server.requests)
    assert results.finding is None  # 4 comparisons: too few for a finding


async def test_the_api_results_name_a_position_biased_judge() -> None:
    """The judge finding holds in memory too: a judge that always prefers the second response."""
    from .compare_support import always as always_prefers

    inner = CoEvolResponder()

    def second_wins(body: dict[str, Any]) -> str:
        return always_prefers("2")(body) if identify_role(body["messages"]) == "judge" else inner(body)

    async with FakeOpenAIServer(second_wins) as server:
        results = await arefine(alpaca_rows(12, seed=37), base_url=server.base_url, model="m")
    assert results.finding is not None and "second" in results.finding


async def test_refine_batches_counts_across_batches_and_stays_stopped(tmp_path: Path) -> None:
    """An actor's stop rules hold over its lifetime: once tripped, the next batch stops at once."""
    rows = alpaca_rows(6, seed=35)
    async with FakeOpenAIServer(priced) as server:
        cfg = Config(
            base_url=server.base_url, model="m", price=Price(prompt=1.0, completion=1.0),
            max_budget=0.03, samples_in_flight=1, concurrency=2,
        )  # fmt: skip
        actor = RefineBatches(cfg)
        try:
            first = await actor({key: [r[key] for r in rows[:1]] for key in rows[0]})
            assert first["coevol_status"][0] in ("refined", "kept")
            with pytest.raises(BudgetExceeded):
                await actor({key: [r[key] for r in rows[1:]] for key in rows[0]})
            sent = len(server.requests)
            with pytest.raises(BudgetExceeded):
                await actor({key: [r[key] for r in rows[1:]] for key in rows[0]})
            assert len(server.requests) == sent
        finally:
            await actor.aclose()


def test_compare_cli_stops_on_a_judge_without_verdicts(tmp_path: Path) -> None:
    """Issue 17: ``coevol compare --max-unparseable 0.1`` with a judge that never gives a verdict
    said "30 of 30 unparseable" and exited 0; it now stops with one error line."""
    from .engine_support import run_cli

    rows = alpaca_rows(30, seed=36)
    base = write_jsonl(tmp_path / "base.jsonl", rows)
    cand = write_jsonl(tmp_path / "cand.jsonl", [{**r, "output": r["output"] + " More."} for r in rows])
    with ThreadedServer(responder=never_a_verdict()) as server:
        done = run_cli(
            "compare", base, cand, "-o", tmp_path / "result.json", "--base-url", server.base_url,
            "--model", "m", "--max-unparseable", "0.1", "-q",
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "error: the judge gave no usable verdict in 20 of 20 comparisons" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "result.json").exists()
