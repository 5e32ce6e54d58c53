"""Faults: transient ones cost retries but never change the output; permanent ones fail a sample,
a budget of failures stops the run, a bad key stops it at once, and the key never leaks."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coevol.testing import FakeOpenAIServer, Fault, FaultKind, first_attempt_faults
from coevol.testing.responders import CoEvolResponder, GarbleFirstJudge, identify_role

from .engine_support import ThreadedServer, alpaca_rows, child_env, marked, refine_file, run_cli, write_jsonl

KEY = "sk-coevol-TEST-7Hq2ZpX91vLmQ4e8"  # distinctive: grep-able anywhere it could leak


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", alpaca_rows(16, seed=2))


async def reference_output(data: Path, tmp_path: Path) -> bytes:
    (tmp_path / "clean").mkdir()
    async with FakeOpenAIServer(CoEvolResponder()) as clean:
        summary, _ = await refine_file(clean.base_url, data, tmp_path / "clean" / "out.jsonl")
    assert summary.complete and summary.failed == 0
    return (tmp_path / "clean" / "out.jsonl").read_bytes()


@pytest.mark.usefixtures("http_transport")
async def test_transient_faults_and_garbled_verdicts_do_not_change_the_output(
    data: Path, tmp_path: Path
) -> None:
    expected = await reference_output(data, tmp_path)
    faults = first_attempt_faults(
        [
            Fault(FaultKind.RATE_LIMIT, retry_after=0.05),
            FaultKind.SERVER_ERROR,
            Fault(FaultKind.HANG, hang_seconds=5.0),
            FaultKind.DISCONNECT,
            FaultKind.GARBAGE,
        ],
        rate=0.3,
        seed=7,
    )
    async with FakeOpenAIServer(GarbleFirstJudge(CoEvolResponder()), faults=faults) as server:
        summary, stats = await refine_file(
            server.base_url, data, tmp_path / "faulty" / "out.jsonl", request_timeout=0.3
        )
        seen = server.stats()["faults"]
    assert summary.complete and summary.failed == 0
    assert set(seen) == {"rate_limit", "server_error", "hang", "disconnect", "garbage"}
    assert stats.retries >= sum(seen.values())
    assert stats.rate_limited == seen["rate_limit"]
    assert (tmp_path / "faulty" / "out.jsonl").read_bytes() == expected
    # A garbled verdict is re-asked (attempt 1), and both answers are in the trace.
    trace = (tmp_path / "faulty" / "out.jsonl.trace.jsonl").read_text()
    assert "Let me think about both responses" in trace


@pytest.mark.usefixtures("http_transport")
async def test_exhausted_retries_fail_the_sample_and_the_run_goes_on(tmp_path: Path) -> None:
    rows = alpaca_rows(10, seed=3)
    for i in (1, 6):
        rows[i]["instruction"] += " BROKEN"
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    policy = marked("BROKEN", Fault(FaultKind.SERVER_ERROR))
    async with FakeOpenAIServer(CoEvolResponder(), faults=policy) as server:
        summary, stats = await refine_file(server.base_url, data, tmp_path / "out.jsonl", max_retries=1)
        broken = sum(1 for r in server.requests if r.fault is not None)
    assert summary.complete
    assert summary.failed == 2 and summary.refined + summary.kept == 8
    assert dict(summary.failure_causes) == {"ServerError": 2}
    assert broken >= 2 * summary.failed and stats.retries >= summary.failed  # retried, then given up
    out = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(out) == 10
    trace = (tmp_path / "out.jsonl.trace.jsonl").read_text().splitlines()
    assert '"status":"failed"' in trace[1] and "HTTP 500" in trace[1]


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer(responder=CoEvolResponder()) as s:
        yield s


def test_max_errors_stops_the_run_with_a_summary_of_causes(server: ThreadedServer, tmp_path: Path) -> None:
    rows = alpaca_rows(30, seed=4)
    for row in rows[::2]:
        row["instruction"] += " BROKEN"
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    server.server.faults = marked("BROKEN", Fault(FaultKind.SERVER_ERROR, message="GPU fell off the bus"))
    try:
        done = run_cli(
            "refine", data, "-o", tmp_path / "out.jsonl", "--base-url", server.base_url, "--model", "fake",
            "-q", "--max-errors", "2", "--max-retries", "0", "--concurrency", "4",
        )  # fmt: skip
    finally:
        server.server.faults = None
    assert done.returncode == 3, done.stderr
    err = " ".join(done.stderr.split())
    assert "more than --max-errors 2" in err
    assert "ServerError" in err and "GPU fell off the bus" in err
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_bad_key_fails_fast_with_a_clear_message_and_never_leaks(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(40, seed=5))
    out = tmp_path / "out.jsonl"
    with ThreadedServer(responder=CoEvolResponder(), api_key="sk-the-right-one") as server:
        done = run_cli(
            "refine", data, "-o", out, "--base-url", server.base_url, "--model", "fake", "-q",
            "--api-key-env", "MY_TEST_KEY", "--concurrency", "4",
            env=child_env(MY_TEST_KEY=KEY),
        )  # fmt: skip
        sent = server.count()
    assert done.returncode == 1
    assert "AuthenticationError" in done.stderr and "401" in done.stderr
    assert "Traceback" not in done.stderr
    assert sent <= 4  # the first answers stop the run: no retries, nothing more is sent
    assert not out.exists()
    assert_no_leak(done.stdout + done.stderr, tmp_path)


def test_key_never_reaches_output_trace_store_or_logs(tmp_path: Path) -> None:
    rows = alpaca_rows(12, seed=6)
    rows[3]["instruction"] += " ECHO"
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    # A proxy that echoes the Authorization header into its error message.
    echo = marked("ECHO", Fault(FaultKind.BAD_REQUEST, message=f"bad request from Bearer {KEY}"))
    with ThreadedServer(responder=CoEvolResponder(), api_key=KEY, faults=echo) as server:
        done = run_cli(
            "refine", data, "-o", tmp_path / "out.jsonl", "--base-url", server.base_url, "--model", "fake",
            "--api-key-env", "MY_TEST_KEY", env=child_env(MY_TEST_KEY=KEY),
        )  # fmt: skip
        assert all(r.has_auth for r in server.requests)
    assert done.returncode == 4, done.stderr  # complete; the ECHO sample failed
    trace = (tmp_path / "out.jsonl.trace.jsonl").read_text()
    assert "bad request from Bearer ***" in trace  # the error is kept, the key masked
    assert_no_leak(done.stdout + done.stderr, tmp_path)


def assert_no_leak(logs: str, folder: Path) -> None:
    assert KEY not in logs
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".coevol.db") for p in files)
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path


@pytest.mark.usefixtures("http_transport")
async def test_a_failed_samples_detached_call_does_not_outlive_the_run(tmp_path: Path) -> None:
    # The positive debater is refused at once while the critical one is still thinking: the sample
    # fails, and the critical call must not keep running (or retrying) after the run has ended.
    def refuse_positive(body: dict[str, Any], seen: int) -> Fault | None:
        return Fault(FaultKind.BAD_REQUEST) if identify_role(body["messages"]) == "positive" else None

    def slow_critic(body: dict[str, Any]) -> float:
        return 0.3 if identify_role(body["messages"]) == "critical" else 0.0

    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(3, seed=11))
    async with FakeOpenAIServer(CoEvolResponder(), faults=refuse_positive, latency=slow_critic) as server:
        summary, _ = await refine_file(server.base_url, data, tmp_path / "out.jsonl")
        await asyncio.sleep(0.5)  # time for anything left behind to show up at the server
        roles = Counter(identify_role(r.body["messages"]) for r in server.requests)
    assert summary.complete and summary.failed == 3
    assert roles == {"positive": 3, "critical": 3}
