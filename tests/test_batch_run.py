"""``--batch`` end to end against the fake Files/Batches server: same output as online, no chat
call, at most 15 batches for K = 3, resumed after kill -9 without a batch sent twice, failed and
expired lines sent again alone, a provider error in one line, compare totals as online."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from coevol.cli.main import main
from coevol.engine.endpoints import group_endpoint
from coevol.store.sqlite import Store
from coevol.testing import ThreadedServer
from coevol.testing.batches import BatchTimeline, SubmittedBatch
from coevol.testing.responders import CoEvolResponder
from tests.engine_support import alpaca_rows, start_cli, write_jsonl


def refine(server: ThreadedServer, rows: Path, out: Path, *extra: str) -> int:
    args = ["refine", str(rows), "-o", str(out), "--base-url", server.base_url, "--model", "fake-model"]
    return main([*args, "-q", *extra])


BATCH = ("--batch", "--batch-poll", "0.001")


def bodies(batch: SubmittedBatch) -> list[bytes]:
    return [orjson.dumps(line["body"], option=orjson.OPT_SORT_KEYS) for line in batch.lines]


def sends(submitted: list[SubmittedBatch], these: list[bytes]) -> list[int]:
    """How many batches each of ``these`` bodies was sent in: 1, or 2 when it was sent again."""
    every = [body for b in submitted for body in bodies(b)]
    return [every.count(body) for body in these]


def same_files(a: Path, b: Path) -> bool:
    return all(
        x.read_bytes() == y.read_bytes()
        for x, y in [(a, b), (Path(f"{a}.trace.jsonl"), Path(f"{b}.trace.jsonl"))]
    )


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    data: list[dict[str, Any]] = alpaca_rows(6)
    return write_jsonl(tmp_path / "rows.jsonl", [*data, data[0]])  # a duplicate row, as SFT data has


def test_batch_output_equals_online_with_no_chat_call_and_at_most_15_batches(
    tmp_path: Path, rows: Path
) -> None:
    with ThreadedServer(responder=CoEvolResponder()) as server:
        assert refine(server, rows, tmp_path / "online.jsonl") == 0
        online_calls = server.count()
        assert refine(server, rows, tmp_path / "batch.jsonl", *BATCH) == 0
        assert server.count() == online_calls  # nothing more reached /v1/chat/completions
        submitted = server.server.batches.submitted
    assert same_files(tmp_path / "online.jsonl", tmp_path / "batch.jsonl")
    assert 5 <= len(submitted) <= 15  # K = 3: five dependent stages per round
    assert sum(len(b.lines) for b in submitted) == online_calls  # each distinct call once
    every = [body for b in submitted for body in bodies(b)]
    assert len(every) == len(set(every))


def test_failed_lines_go_again_alone_and_the_output_is_unchanged(tmp_path: Path, rows: Path) -> None:
    failing = {"1", "4"}
    given: list[str] = []

    def faults(cid: str, body: dict[str, Any], seen: int) -> int | None:
        if cid in failing and len(given) < len(failing):  # two lines of the first batch, once
            given.append(cid)
            return 500
        return None

    with ThreadedServer(responder=CoEvolResponder()) as server:
        assert refine(server, rows, tmp_path / "online.jsonl") == 0
        server.server.batches.line_faults = faults
        assert refine(server, rows, tmp_path / "batch.jsonl", *BATCH) == 0
        submitted = list(server.server.batches.submitted)
    assert same_files(tmp_path / "online.jsonl", tmp_path / "batch.jsonl")
    first = bodies(submitted[0])
    assert sends(submitted, first) == [2 if str(i) in failing else 1 for i in range(len(first))]


def test_an_expired_batch_keeps_its_answers_and_sends_the_rest_again_alone(
    tmp_path: Path, rows: Path
) -> None:
    with ThreadedServer(responder=CoEvolResponder()) as server:
        assert refine(server, rows, tmp_path / "online.jsonl") == 0
        fake = server.server.batches
        fake.timeline = BatchTimeline(window=6)
        fake.batch_faults = lambda n: "expire" if n == 0 else None
        assert refine(server, rows, tmp_path / "batch.jsonl", *BATCH) == 0
        submitted = list(fake.submitted)
    assert same_files(tmp_path / "online.jsonl", tmp_path / "batch.jsonl")
    assert submitted[0].status == "expired"
    first = bodies(submitted[0])
    half = len(first) // 2
    assert sends(submitted, first) == [1] * half + [2] * (len(first) - half)  # the unfinished half again


def test_a_batch_that_fails_whole_is_sent_again(tmp_path: Path, rows: Path) -> None:
    with ThreadedServer(responder=CoEvolResponder()) as server:
        assert refine(server, rows, tmp_path / "online.jsonl") == 0
        server.server.batches.batch_faults = lambda n: "failed" if n == 0 else None
        assert refine(server, rows, tmp_path / "batch.jsonl", *BATCH) == 0
        submitted = list(server.server.batches.submitted)
    assert same_files(tmp_path / "online.jsonl", tmp_path / "batch.jsonl")
    assert submitted[0].status == "failed"
    first = bodies(submitted[0])
    assert sends(submitted, first) == [2] * len(first)


def test_a_provider_error_is_one_clear_line(
    tmp_path: Path, rows: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ThreadedServer(responder=CoEvolResponder()) as server:
        server.server.batches.batch_faults = lambda n: "failed"
        code = refine(
            server, rows, tmp_path / "batch.jsonl", *BATCH, "--max-retries", "0", "--max-errors", "0"
        )
    err = capsys.readouterr().err
    assert code != 0
    lines = [line for line in err.splitlines() if "the batch could not be run" in line]
    assert len(lines) == 1, err
    assert "batch batch-fake-" in lines[0] and "failed: server_error" in lines[0]
    assert "Traceback" not in err


def test_a_server_without_the_batch_api_is_refused_before_anything_is_sent(
    tmp_path: Path, rows: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ThreadedServer(responder=CoEvolResponder(), batch_api=False) as server:
        assert refine(server, rows, tmp_path / "batch.jsonl", *BATCH) == 1
        assert server.count() == 0
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "does not offer the Batch API" in err
    assert not (tmp_path / "batch.jsonl").exists()


def test_kill_9_while_a_batch_is_in_progress_then_rerun_sends_no_batch_twice(
    tmp_path: Path, rows: Path
) -> None:
    out = tmp_path / "batch.jsonl"
    with ThreadedServer(responder=CoEvolResponder()) as server:
        assert refine(server, rows, tmp_path / "online.jsonl") == 0
        fake = server.server.batches
        fake.timeline = BatchTimeline(in_progress=10**9)  # the first batch never finishes
        args: list[str | Path] = [
            "refine",
            rows,
            "-o",
            out,
            "--base-url",
            server.base_url,
            "--model",
            "fake-model",
            "-q",
            *BATCH,
        ]
        proc = start_cli(*args)
        deadline = time.monotonic() + 60
        while not (fake.submitted and fake.submitted[0].polls >= 2):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        with Store(Path(f"{out}.coevol.db")) as store:
            stored = store.open_batches(group_endpoint("pool"))  # a single server is a group of one
        assert [s.batch_id for s in stored] == [fake.submitted[0].id]  # stored before the first poll
        assert len(fake.submitted) == 1
        fake.timeline = BatchTimeline()  # the provider catches up
        assert refine(server, rows, out, *BATCH) == 0
        submitted = list(fake.submitted)
    assert same_files(tmp_path / "online.jsonl", out)
    every = [body for b in submitted for body in bodies(b)]
    assert len(every) == len(set(every))  # no call was sent in two batches
    assert len(submitted) <= 15


def test_compare_batch_gives_the_same_totals_as_online(tmp_path: Path) -> None:
    base_rows = alpaca_rows(5)
    cand_rows = [{**r, "output": r["output"] + " [edit]"} for r in base_rows]
    base = write_jsonl(tmp_path / "base.jsonl", base_rows)
    cand = write_jsonl(tmp_path / "cand.jsonl", cand_rows)
    with ThreadedServer(responder=CoEvolResponder()) as server:
        args = ["compare", str(base), str(cand), "--base-url", server.base_url, "--model", "fake-model", "-q"]
        assert main([*args, "-o", str(tmp_path / "online.json")]) == 0
        chat = server.count()
        assert main([*args, "-o", str(tmp_path / "batch.json"), *BATCH]) == 0
        assert server.count() == chat
        batches = len(server.server.batches.submitted)
    online = json.loads((tmp_path / "online.json").read_text())
    batch = json.loads((tmp_path / "batch.json").read_text())
    totals = ("win", "tie", "loss", "failed")
    assert {k: online.get(k) for k in totals} == {k: batch.get(k) for k in totals}
    assert batches == 1  # both orders of every pair in one batch


def test_a_hostile_provider_error_is_shown_inert(
    tmp_path: Path, rows: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ThreadedServer(responder=CoEvolResponder()) as server:
        server.server.batches.batch_faults = lambda n: "failed"
        server.server.batches.failure = {"code": "x", "message": "[bold red]boom\x1b[2J\nsecond line"}
        refine(server, rows, tmp_path / "batch.jsonl", *BATCH, "--max-retries", "0", "--max-errors", "0")
    err = capsys.readouterr().err
    assert "\x1b" not in err and "[bold red]boom" in err
    assert [line for line in err.splitlines() if line.startswith("second line")] == []


def test_dry_run_budget_and_summary_use_batch_prices(
    tmp_path: Path, rows: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices = ["--price-prompt", "2", "--price-completion", "8"]
    with ThreadedServer(responder=CoEvolResponder()) as server:
        assert refine(server, rows, tmp_path / "x.jsonl", "--dry-run", *prices) == 0
        online = capsys.readouterr().out
        assert refine(server, rows, tmp_path / "x.jsonl", "--dry-run", *prices, "--batch") == 0
        batch = capsys.readouterr().out
        assert refine(server, rows, tmp_path / "b.jsonl", *BATCH, *prices) == 0
        summary = capsys.readouterr().err

    def most(text: str) -> float:
        line = next(x for x in text.splitlines() if x.startswith("cost $"))
        return float(line.rsplit("$", 1)[1])

    assert most(batch) == pytest.approx(most(online) / 2, rel=0.02)
    paid = float(summary.split("cost (calls sent)")[1].split("$")[1].split()[0])
    would = float(summary.split("the same calls online")[1].split("$")[1].split()[0])
    assert paid > 0 and would == pytest.approx(2 * paid, rel=0.01)
    assert "batches sent (--batch)" in summary
