"""How a run ends: exit codes, a judge that never gives a verdict, whether a rerun can help, and
trace positions that always describe this run's input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coevol.api import arefine_file
from coevol.config import Config
from coevol.engine.runner import RunSummary
from coevol.errors import AuthenticationError, BudgetExceeded, ConfigError
from coevol.testing import FakeOpenAIServer, Fault, FaultKind
from coevol.testing.responders import CoEvolResponder, GarbleFirstJudge, accept_up_to

from .engine_support import ThreadedServer, alpaca_rows, marked, run_cli, write_jsonl


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer(responder=CoEvolResponder(accept_up_to(1))) as s:
        yield s


def args(server: ThreadedServer | FakeOpenAIServer) -> list[str]:
    return ["--base-url", server.base_url, "--model", "m", "-q"]


def never_a_verdict() -> GarbleFirstJudge:
    return GarbleFirstJudge(CoEvolResponder(), times=10**6)


async def test_a_judge_without_usable_verdicts_stops_the_run_as_a_setup_error(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(40, seed=21))
    async with FakeOpenAIServer(never_a_verdict()) as fake:
        cfg = Config(base_url=fake.base_url, model="m", samples_in_flight=4)
        live: list[RunSummary] = []
        with pytest.raises(ConfigError, match="check the judge model") as info:
            await arefine_file(data, tmp_path / "out.jsonl", cfg, progress=lambda s, _: live.append(s))
    summary = live[-1]
    assert summary.judged >= cfg.min_judged and summary.unparseable == summary.judged
    assert summary.unparseable_rate == 1.0
    assert f"in {summary.unparseable} of {summary.judged} comparisons (100%" in str(info.value)
    assert not summary.complete and not summary.resumable
    assert summary.rows < 40  # stopped early, not 40 "kept" rows
    assert not (tmp_path / "out.jsonl").exists()


async def test_a_few_unparseable_verdicts_or_a_small_run_do_not_stop_it(tmp_path: Path) -> None:
    async with FakeOpenAIServer(never_a_verdict()) as fake:
        small = write_jsonl(tmp_path / "small.jsonl", alpaca_rows(5, seed=22))  # 5 < 20 comparisons
        run = await arefine_file(
            small, tmp_path / "small-out.jsonl", Config(base_url=fake.base_url, model="m")
        )
    assert run.summary.complete and run.summary.kept == 5 and run.summary.unparseable_rate == 1.0
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(30, seed=23))
    async with FakeOpenAIServer(never_a_verdict()) as fake:
        cfg = Config(base_url=fake.base_url, model="m", max_unparseable=None)
        run = await arefine_file(data, tmp_path / "off.jsonl", cfg)
    assert run.summary.complete and run.summary.judged >= 20


def test_the_judge_stop_through_the_cli_exits_1_with_advice(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(40, seed=24))
    with ThreadedServer(responder=never_a_verdict()) as bad:
        done = run_cli("refine", data, "-o", tmp_path / "out.jsonl", *args(bad), "--max-unparseable", "0.3")
    assert done.returncode == 1, done.stderr
    assert "error: the judge gave no usable verdict" in done.stderr
    assert "check the judge model" in done.stderr and "Traceback" not in done.stderr


def test_exit_codes_0_and_3(server: ThreadedServer, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(6, seed=25))
    ok = run_cli("refine", data, "-o", tmp_path / "ok.jsonl", *args(server))
    assert ok.returncode == 0, ok.stderr
    server.server.faults = marked("Task", Fault(FaultKind.BAD_REQUEST))
    try:
        stopped = run_cli("refine", data, "-o", tmp_path / "stop.jsonl", *args(server), "--max-errors", "0",
                          "--samples-in-flight", "1")  # fmt: skip
    finally:
        server.server.faults = None
    assert stopped.returncode == 3, stopped.stderr
    assert "more than --max-errors 0" in stopped.stderr


async def test_setup_errors_are_not_resumable_and_budget_stops_are(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(4, seed=26))
    live: list[RunSummary] = []
    async with FakeOpenAIServer(CoEvolResponder(), api_key="right") as fake:
        cfg = Config(base_url=fake.base_url, model="m", api_key_env="COEVOL_TEST_WRONG_KEY")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("COEVOL_TEST_WRONG_KEY", "wrong")
            with pytest.raises(AuthenticationError):
                await arefine_file(data, tmp_path / "a.jsonl", cfg, progress=lambda s, _: live.append(s))
    assert not live[-1].complete and not live[-1].resumable  # rerunning cannot fix a wrong key
    async with FakeOpenAIServer(CoEvolResponder()) as fake:
        cfg = Config(base_url=fake.base_url, model="m", max_errors=0)
        fake.faults = marked("Task", Fault(FaultKind.BAD_REQUEST))
        live.clear()
        with pytest.raises(BudgetExceeded, match="max-errors"):
            await arefine_file(data, tmp_path / "b.jsonl", cfg, progress=lambda s, _: live.append(s))
    assert live[-1].resumable and not live[-1].complete


def test_duplicate_rows_and_an_edited_input_keep_trace_positions_of_this_run(
    server: ThreadedServer, tmp_path: Path
) -> None:
    a, b, c, d = alpaca_rows(4, seed=27)
    data = write_jsonl(tmp_path / "in.jsonl", [a, b, a, c])
    out = tmp_path / "out.jsonl"
    first = run_cli("refine", data, "-o", out, *args(server))
    assert first.returncode == 0, first.stderr

    def trace() -> list[dict[str, Any]]:
        return [json.loads(line) for line in (tmp_path / "out.jsonl.trace.jsonl").read_text().splitlines()]

    assert [(t["index"], t["line"]) for t in trace()] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    write_jsonl(data, [d, c, "not json", a, a, b])  # edited between runs: new, moved and repeated rows
    sent = server.count()
    again = run_cli("refine", data, "-o", out, *args(server))
    assert again.returncode == 0, again.stderr
    records = trace()
    assert [(t["index"], t["line"]) for t in records] == [(0, 1), (1, 2), (3, 4), (4, 5), (5, 6)]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["instruction"] for r in rows] == [r["instruction"] for r in (d, c, a, a, b)]
    assert [t["turns"][-1]["final"] for t in records] == [r["output"] for r in rows]
    assert server.count() > sent  # only row d was new
    shown = run_cli("show", tmp_path / "out.jsonl.trace.jsonl", "--index", "4")
    assert shown.returncode == 0, shown.stderr
    assert a["instruction"] in shown.stdout


async def test_a_stored_outcome_that_no_longer_parses_is_recomputed_from_the_stored_calls(
    tmp_path: Path,
) -> None:
    import sqlite3

    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(6, seed=31))
    out = tmp_path / "out.jsonl"
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as fake:
        cfg = Config(base_url=fake.base_url, model="m")
        first = await arefine_file(data, out, cfg)
        expected = out.read_bytes()
        with sqlite3.connect(f"{out}.coevol.db") as db:  # a hand-edited or damaged sample table
            db.execute("UPDATE samples SET payload = ?", (b'{"record": {"schema": "other"}}',))
        sent = fake.stats()["requests"]
        again = await arefine_file(data, out, cfg)
        assert fake.stats()["requests"] == sent  # every call replayed from the store
    assert first.summary.complete and again.summary.complete
    assert again.summary.resumed == 0 and out.read_bytes() == expected
