"""Issue 17: an editor, debater or advisor answering no text is a failed call, never "kept"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coevol.testing import CoEvolResponder, FakeOpenAIServer, identify_role

from .conftest import ALPACA_ROWS, coevol_cli, read_jsonl


@pytest.mark.parametrize("role", ["positive", "advisor", "editor"])
async def test_a_role_answering_nothing_fails_its_samples_with_the_reason(tmp_path: Path, role: str) -> None:
    def responder(body: dict[str, Any]) -> str:
        return "" if identify_role(body["messages"]) == role else CoEvolResponder()(body)

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ALPACA_ROWS))
    out = tmp_path / "out.jsonl"
    async with FakeOpenAIServer(responder) as server:
        code, _, err = await coevol_cli(
            "refine", str(src), "-o", str(out), "--base-url", server.base_url, "-q"
        )
    assert code == 4, err  # some samples failed: rerun with --retry-failed
    assert "3 samples failed" in err and "kept 3" not in err
    trace = read_jsonl(Path(f"{out}.trace.jsonl"))
    assert [t["status"] for t in trace] == ["failed"] * 3
    assert all(f"the {role} answered an empty text 3 times" in t["failure"]["message"] for t in trace)
    assert [r["output"] for r in read_jsonl(out)] == [r["output"] for r in ALPACA_ROWS]  # unchanged
