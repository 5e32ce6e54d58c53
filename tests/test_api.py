"""The Python API, sync and async, against the fake server."""

from __future__ import annotations

import json
from pathlib import Path

from coevol import Config, arefine, refine, refine_file
from coevol.testing import FakeOpenAIServer, fetch_stats, serve_in_subprocess
from coevol.testing.responders import EDIT_MARK, CoEvolResponder, accept_up_to

from .conftest import ALPACA_ROWS

SHAREGPT = {
    "id": "c1",
    "conversations": [
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello"},
        {"from": "human", "value": "Bye"},
        {"from": "gpt", "value": "Ciao"},
    ],
}


async def test_arefine_keeps_order_shape_and_reports_bad_rows() -> None:
    rows = [*ALPACA_ROWS, {"instruction": "", "output": "x"}, SHAREGPT]
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as server:
        results = await arefine(rows, Config(base_url=server.base_url, model="m"), max_rounds=2)
    assert [r.status for r in results] == ["refined", "refined", "refined", "rejected", "refined"]
    assert results[0].row == {**ALPACA_ROWS[0], "output": ALPACA_ROWS[0]["output"] + EDIT_MARK}
    assert results[3].row is None and results[3].error == "empty instruction"
    convo = results[4].row
    assert convo is not None
    assert [m["value"] for m in convo["conversations"]] == [
        "Hi",
        "Hello" + EDIT_MARK,
        "Bye",
        "Ciao" + EDIT_MARK,
    ]
    assert results[4].accepted_edits == 2 and len(results[4].trace["turns"]) == 2


def test_sync_refine_with_a_cache_pays_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache.db"
    with serve_in_subprocess("--responder", "coevol.testing.responders:responder") as url:
        first = refine(ALPACA_ROWS, base_url=url, model="m", cache=cache)
        sent = fetch_stats(url)["requests"]
        second = refine(ALPACA_ROWS, base_url=url, model="m", cache=cache)
        assert fetch_stats(url)["requests"] == sent
    assert [r.row for r in first] == [r.row for r in second]
    assert all(r.status in ("refined", "kept") for r in first)


def test_refine_file_sync_wrapper_and_the_roles_in_the_trace(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ALPACA_ROWS))
    with serve_in_subprocess("--responder", "coevol.testing.responders:responder") as url:
        run = refine_file(data, tmp_path / "out.jsonl", base_url=url, model="m", max_rounds=1)
        rows = refine(ALPACA_ROWS[:1], base_url=url, model="m", max_rounds=1)
    assert run.summary.complete and run.summary.rows == len(ALPACA_ROWS)
    assert run.dataset_info == tmp_path / "out.jsonl.dataset_info.json" and run.dataset_info.exists()
    record = json.loads(run.paths.trace.read_text().splitlines()[0])
    assert set(record["roles"]) == {"positive", "critical", "advisor", "editor", "judge"}
    assert record["roles"]["judge"] == {"model": "m", "endpoint": record["roles"]["judge"]["endpoint"]}
    assert "127.0.0.1" in record["roles"]["judge"]["endpoint"]
    assert rows[0].trace["roles"] == record["roles"]
