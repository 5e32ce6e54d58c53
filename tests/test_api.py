"""The Python API, sync and async, against the fake server."""

from __future__ import annotations

from pathlib import Path

from coevol import Config, arefine, refine
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
    assert results[4].accepted_rounds == 2 and len(results[4].trace["turns"]) == 2


def test_sync_refine_with_a_cache_pays_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache.db"
    with serve_in_subprocess("--responder", "coevol.testing.responders:responder") as url:
        first = refine(ALPACA_ROWS, base_url=url, model="m", cache=cache)
        sent = fetch_stats(url)["requests"]
        second = refine(ALPACA_ROWS, base_url=url, model="m", cache=cache)
        assert fetch_stats(url)["requests"] == sent
    assert [r.row for r in first] == [r.row for r in second]
    assert all(r.status in ("refined", "kept") for r in first)
