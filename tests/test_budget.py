"""``--max-budget``: a run stops cleanly once its spend reaches the budget, and resumes later."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coevol.testing import FakeOpenAIServer, Reply
from coevol.testing.responders import CoEvolResponder, accept_up_to

from .conftest import coevol_cli

ROWS = [{"id": i, "instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."} for i in range(20)]


def priced_responder() -> Callable[[dict[str, Any]], Reply]:
    """Every answer costs exactly 1,000 prompt and 1,000 completion tokens."""
    inner = CoEvolResponder(accept_up_to(0))

    def respond(body: dict[str, Any]) -> Reply:
        return Reply(inner(body), prompt_tokens=1000, completion_tokens=1000)

    return respond


async def test_max_budget_stops_cleanly_then_a_bigger_budget_finishes(
    write_json: Callable[[str, Any], Path], tmp_path: Path
) -> None:
    src = write_json("data.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    cfg = tmp_path / "run.yaml"
    # $1 per 1M tokens each way: one call costs $0.002, one sample (8 calls) $0.016.
    cfg.write_text("price: {prompt: 1.0, completion: 1.0}\nconcurrency: 2\nsamples_in_flight: 1\n")
    async with FakeOpenAIServer(priced_responder()) as server:
        base = ("refine", str(src), "-o", str(out), "--base-url", server.base_url, "--model", "m")
        code, _, err = await coevol_cli(*base, "--config", str(cfg), "--max-budget", "0.05", "-q")
        assert code == 3, err
        assert re.search(r"spent \$0\.05\d* of --max-budget \$0\.05", err)
        assert not out.exists()
        sent = len(server.requests)
        # Checked after every call: $0.05 is reached at the 25th; at most one more was in flight.
        assert 25 <= sent <= 26

        code, _, err = await coevol_cli(*base, "--config", str(cfg), "-q")
        assert code == 0, err
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["id"] for r in rows] == list(range(20))
        # Every answer received before the stop was replayed; only a call cut off in flight (at most
        # one more, with 2 in flight) was sent again.
        assert 20 * 8 <= len(server.requests) <= 20 * 8 + 1
