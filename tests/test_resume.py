"""Never pay twice: kill -9 / SIGTERM / Ctrl-C mid-run, rerun, and get the same bytes for fewer calls.

The CLI runs as a child process against a fake server on a thread of this process, which counts
every request it receives. The responder is deterministic, so an uninterrupted run fixes both the
expected output and the exact number of calls a run needs.
"""

from __future__ import annotations

import random
import shutil
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from coevol.prompts.templates import load_prompts
from coevol.store.sqlite import Store
from coevol.testing import FakeOpenAIServer, Fault, FaultKind
from coevol.testing.responders import CoEvolResponder, identify_role

from .engine_support import (
    ThreadedServer,
    alpaca_rows,
    kill_when,
    refine_file,
    run_cli,
    start_cli,
    write_jsonl,
)

CONCURRENCY = 8


@pytest.fixture(scope="module")
def server() -> Any:
    # A few milliseconds per answer so that a run lasts long enough to be interrupted anywhere.
    with ThreadedServer(responder=CoEvolResponder(), latency=0.004) as s:
        yield s


def args(server: ThreadedServer, *extra: str) -> list[str]:
    return ["--base-url", server.base_url, "--model", "fake", "-q", "--concurrency", str(CONCURRENCY), *extra]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "in.jsonl", alpaca_rows(24))


class Reference:
    def __init__(self, folder: Path, output: bytes, trace: bytes, calls: int, roles: Counter[str]) -> None:
        self.folder, self.output, self.trace, self.calls, self.roles = folder, output, trace, calls, roles


@pytest.fixture(scope="module")
def reference(server: ThreadedServer, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    folder = tmp_path_factory.mktemp("reference")
    out = folder / "out.jsonl"
    start = server.count()
    done = run_cli("refine", data, "-o", out, *args(server))
    assert done.returncode == 0, done.stderr
    calls = server.count() - start
    assert Store(folder / "out.jsonl.coevol.db").count_calls() == calls  # every call stored, once
    trace = (folder / "out.jsonl.trace.jsonl").read_bytes()
    return Reference(folder, out.read_bytes(), trace, calls, server.roles_since(start))


def stored_calls(out: Path) -> int:
    db = out.with_name(out.name + ".coevol.db")
    if not db.exists():
        return 0
    with Store(db) as store:
        return store.count_calls()


def test_kill_9_at_random_points_resends_only_what_was_in_flight(
    server: ThreadedServer, data: Path, reference: Reference, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    rng = random.Random(20240917)
    resent = kills = 0
    total_start = server.count()
    for _ in range(3):
        before = stored_calls(out)
        remaining = reference.calls - before
        start = server.count()
        proc = start_cli("refine", data, "-o", out, *args(server))
        killed = kill_when(proc, server, start + rng.randint(1, max(1, remaining * 3 // 4)))
        proc.communicate(timeout=30)
        if not killed:
            break
        assert proc.returncode == -signal.SIGKILL
        assert not out.exists()
        kills += 1
        sent = server.count() - start
        kept = stored_calls(out) - before
        # Whatever the server answered but the store does not hold was in flight at the kill,
        # and the in-flight limit bounds that.
        assert 0 <= sent - kept <= CONCURRENCY
        resent += sent - kept
    assert kills >= 2

    before = stored_calls(out)
    start = server.count()
    done = run_cli("refine", data, "-o", out, *args(server))
    assert done.returncode == 0, done.stderr
    assert server.count() - start == reference.calls - before  # exactly the missing calls
    assert out.read_bytes() == reference.output
    assert out.with_name("out.jsonl.trace.jsonl").read_bytes() == reference.trace
    assert server.count() - total_start == reference.calls + resent
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_and_resumes(
    server: ThreadedServer, data: Path, reference: Reference, tmp_path: Path, sig: int
) -> None:
    out = tmp_path / "out.jsonl"
    start = server.count()
    proc = start_cli("refine", data, "-o", out, *args(server))
    assert kill_when(proc, server, start + reference.calls // 3, sig)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), stderr
    assert "Traceback" not in stderr
    assert "resume" in stderr
    assert not out.exists()
    sent = server.count() - start
    kept = stored_calls(out)
    assert 0 <= sent - kept <= CONCURRENCY  # cancelled in-flight calls are the only loss

    start = server.count()
    done = run_cli("refine", data, "-o", out, *args(server))
    assert done.returncode == 0, done.stderr
    assert server.count() - start == reference.calls - kept
    assert out.read_bytes() == reference.output


def test_changing_one_roles_model_resends_only_that_roles_calls(
    server: ThreadedServer, data: Path, reference: Reference, tmp_path: Path
) -> None:
    for name in ("out.jsonl", "out.jsonl.coevol.db"):
        shutil.copy(reference.folder / name, tmp_path / name)
    config = tmp_path / "run.yaml"
    config.write_text("roles:\n  judge:\n    model: another-judge\n")
    start = server.count()
    done = run_cli("refine", data, "-o", tmp_path / "out.jsonl", "--config", config, *args(server))
    assert done.returncode == 0, done.stderr
    resent = server.roles_since(start)
    assert set(resent) == {"judge"}
    assert resent["judge"] == reference.roles["judge"]
    assert {r.body["model"] for r in server.requests[start:]} == {"another-judge"}
    assert (tmp_path / "out.jsonl").read_bytes() == reference.output

    start = server.count()
    again = run_cli("refine", data, "-o", tmp_path / "out.jsonl", "--config", config, *args(server))
    assert again.returncode == 0, again.stderr
    assert server.count() == start  # and now nothing at all


def test_retry_failed_reruns_only_the_failed_samples(server: ThreadedServer, tmp_path: Path) -> None:
    rows = alpaca_rows(12, seed=5)
    for i in (2, 7, 9):
        rows[i]["instruction"] += " FAILME"
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "run" / "out.jsonl"
    out.parent.mkdir()

    def fail_marked(body: dict[str, Any], seen: int) -> Fault | None:
        text = body["messages"][-1]["content"]
        return Fault(FaultKind.BAD_REQUEST) if "FAILME" in text and "[edit]" in text else None

    server.server.faults = fail_marked  # the marked rows fail once their first edit exists
    try:
        first = run_cli("refine", data, "-o", out, *args(server))
        assert first.returncode == 4, first.stderr  # complete, but some samples failed
        assert "BadRequestError" in first.stderr
        assert "3 samples failed" in first.stderr and "--retry-failed" in first.stderr
        written = out.read_text().splitlines()
        for i in (2, 7, 9):  # a failed sample keeps its original row
            assert '"output":"' + rows[i]["output"] + '"' in written[i]

        start = server.count()
        plain = run_cli("refine", data, "-o", out, *args(server))
        assert plain.returncode == 4, plain.stderr
        assert server.count() == start  # failures are replayed as failures, nothing is sent
    finally:
        server.server.faults = None

    start = server.count()
    retried = run_cli("refine", data, "-o", out, "--retry-failed", *args(server))
    assert retried.returncode == 0, retried.stderr
    sent = server.requests[start:]
    assert sent
    assert all(any("FAILME" in m["content"] for m in r.body["messages"]) for r in sent)

    (tmp_path / "clean").mkdir()
    clean = run_cli("refine", data, "-o", tmp_path / "clean" / "out.jsonl", *args(server))
    assert clean.returncode == 0, clean.stderr
    assert out.read_bytes() == (tmp_path / "clean" / "out.jsonl").read_bytes()


async def test_changing_one_prompt_resends_only_the_calls_that_use_it(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(10, seed=8))
    out = tmp_path / "out.jsonl"
    async with FakeOpenAIServer(CoEvolResponder()) as server:
        await refine_file(server.base_url, data, out)
        first = Counter(identify_role(r.body["messages"]) for r in server.requests)
        expected = out.read_bytes()
        folder = tmp_path / "prompts"
        folder.mkdir()
        (folder / "judge.txt").write_text(
            load_prompts().texts["judge"] + "\nBe strict."
        )  # forward order only
        start = len(server.requests)
        summary, _ = await refine_file(server.base_url, data, out, prompts_dir=str(folder))
        resent = server.requests[start:]
    assert summary.complete
    assert resent and all(r.body["messages"][-1]["content"].endswith("Be strict.") for r in resent)
    assert len(resent) == first["judge"] // 2  # the forward half of the judge calls
    assert out.read_bytes() == expected
