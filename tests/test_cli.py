"""The command line end to end: a real ``coevol`` process against the fake server over loopback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coevol.testing import FakeOpenAIServer
from coevol.testing.responders import EDIT_MARK, CoEvolResponder, accept_up_to

from .conftest import ALPACA_ROWS, coevol_cli

SECRET = "sk-test-DO-NOT-LEAK-4f1c9a"


async def test_refine_alpaca_json_keeps_shape_order_and_extra_fields(
    write_json: Callable[[str, Any], Path], tmp_path: Path
) -> None:
    src = write_json("data.json", ALPACA_ROWS)
    out = tmp_path / "out" / "refined.json"
    out.parent.mkdir()  # coevol refuses an output folder that does not exist
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(2)), api_key=SECRET) as server:
        code, stdout, stderr = await coevol_cli(
            "refine", str(src), "-o", str(out), "--base-url", server.base_url, "--model", "m",
            "--max-rounds", "3", "--quiet", env={"OPENAI_API_KEY": SECRET},
        )  # fmt: skip
        assert code == 0, stderr
        assert all(r.has_auth for r in server.requests)
        assert len(server.requests) == 3 * 8 * 3  # accept 2, reject the 3rd: 3 iterations each

    rows = json.loads(out.read_text())
    assert [r["id"] for r in rows] == ["a1", "a2", "a3"]
    for before, after in zip(ALPACA_ROWS, rows, strict=True):
        assert after == {**before, "output": before["output"] + EDIT_MARK * 2}
        assert list(after) == list(before)

    trace = [json.loads(line) for line in Path(f"{out}.trace.jsonl").read_text().splitlines()]
    assert [t["id"] for t in trace] == ["a1", "a2", "a3"]
    first = trace[0]
    assert first["status"] == "refined" and first["accepted_rounds"] == 2
    its = first["turns"][0]["iterations"]
    assert [it["accepted"] for it in its] == [True, True, False]
    assert set(its[0]["debate"]) == {
        "positive_stage1",
        "critical_stage1",
        "positive_stage2",
        "critical_stage2",
    }
    assert its[0]["suggestions"]["text"].startswith("1. ")
    assert its[0]["edited"] == "16" + EDIT_MARK
    orders = its[0]["judge"]["orders"]
    assert [o["order"] for o in orders] == ["forward", "reverse"]
    assert [o["verdict"] for o in orders] == ["assistant 2", "assistant 1"]
    assert its[0]["judge"]["score_edited"] == 1.0 and its[0]["judge"]["score_previous"] == 0.0
    assert its[0]["usage"]["judge"]["calls"] == 2

    assert "accepted edits" in stderr and "rows" in stderr
    # The key never leaves the environment: not in any output, file or message.
    for text in (stdout, stderr, out.read_text(), Path(f"{out}.trace.jsonl").read_text()):
        assert SECRET not in text
    assert SECRET.encode() not in Path(f"{out}.coevol.db").read_bytes()


async def test_second_run_replays_everything_and_sends_nothing(
    write_json: Callable[[str, Any], Path], tmp_path: Path
) -> None:
    src = write_json("data.jsonl", ALPACA_ROWS)
    out = tmp_path / "refined.jsonl"
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as server:
        args = ("refine", str(src), "-o", str(out), "--base-url", server.base_url, "--model", "m", "-q")
        code, _, err = await coevol_cli(*args)
        assert code == 0, err
        first = out.read_bytes()
        sent = len(server.requests)
        code, _, err = await coevol_cli(*args)
        assert code == 0, err
        assert len(server.requests) == sent
        assert out.read_bytes() == first
        assert "replayed from the store" in err


async def test_show_prints_debate_suggestions_edit_and_verdicts(
    write_json: Callable[[str, Any], Path], tmp_path: Path
) -> None:
    src = write_json("data.json", ALPACA_ROWS[:1])
    out = tmp_path / "refined.json"
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(0))) as server:
        code, stdout, err = await coevol_cli(
            "refine", str(src), "-o", str(out), "--base-url", server.base_url, "--model", "m", "-q",
            "--show", "1",
        )  # fmt: skip
    assert code == 0, err
    for needle in (
        "positive debater, stage 1",
        "critical debater, stage 2",
        "advisor: suggestions",
        "editor: edited response",
        "judge (previous first): assistant 1",
        "judge (edited first): assistant 2",
        "kept the previous response",
    ):
        assert needle in stdout


async def test_wrong_key_fails_fast_with_a_clear_message(
    write_json: Callable[[str, Any], Path], tmp_path: Path
) -> None:
    src = write_json("data.json", ALPACA_ROWS)
    async with FakeOpenAIServer(CoEvolResponder(), api_key="the-right-key") as server:
        code, stdout, stderr = await coevol_cli(
            "refine", str(src), "-o", str(tmp_path / "o.json"), "--base-url", server.base_url,
            "--model", "m", "-q", env={"OPENAI_API_KEY": SECRET},
        )  # fmt: skip
        assert len(server.requests) <= 2 * 3  # no retries: the first wave of debaters only
    assert code == 1
    assert "AuthenticationError" in stderr and "401" in stderr
    assert "Traceback" not in stderr
    assert SECRET not in stdout + stderr
    assert not (tmp_path / "o.json").exists()


async def test_config_prints_effective_yaml_without_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: base\nroles:\n  judge:\n    model: strong\n    api_key_env: JUDGE_KEY\n")
    code, stdout, err = await coevol_cli(
        "config", "--config", str(cfg), "--max-rounds", "2", env={"JUDGE_KEY": SECRET}
    )
    assert code == 0, err
    assert "max_rounds: 2" in stdout and "model: strong" in stdout
    assert "# JUDGE_KEY: set (***)" in stdout
    assert SECRET not in stdout


async def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("roles:\n  judge:\n    modle: x\n")
    code, _, err = await coevol_cli("config", "--config", str(cfg))
    assert code == 1
    assert "unknown key 'roles.judge.modle'" in err
