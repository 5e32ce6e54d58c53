"""A Hugging Face dataset saved with ``save_to_disk``, read through the real ``datasets`` library."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coevol.api import arefine_file
from coevol.config import Config
from coevol.testing import FakeOpenAIServer
from coevol.testing.responders import EDIT_MARK, CoEvolResponder, accept_up_to

from .conftest import ALPACA_ROWS, coevol_cli

datasets = pytest.importorskip("datasets", reason="pip install 'coevol[datasets]'")


@pytest.mark.parametrize("as_dict", [False, True])
async def test_refine_a_saved_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_dict: bool) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    rows_in = [{**row, "src": i} for i, row in enumerate(ALPACA_ROWS[:2])]
    ds = datasets.Dataset.from_list(rows_in)
    folder = tmp_path / "saved"
    (datasets.DatasetDict({"train": ds}) if as_dict else ds).save_to_disk(str(folder))
    out = tmp_path / "refined.jsonl"
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as server:
        code, _, err = await coevol_cli(
            "refine", str(folder), "-o", str(out), "--base-url", server.base_url, "--model", "m", "-q"
        )
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [{**row, "output": row["output"] + EDIT_MARK} for row in rows_in]


async def test_a_hub_id_runs_through_arefine_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``hf://owner/name`` (a Path folds it to ``hf:/``): streamed from the Hub, never a local file."""
    asked: list[tuple[str, str, bool]] = []

    def load_dataset(name: str, *, split: str, streaming: bool) -> Any:
        asked.append((name, split, streaming))
        return iter(ALPACA_ROWS[:2])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    out = tmp_path / "refined.jsonl"
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(0))) as server:
        cfg = Config(base_url=server.base_url, model="m")
        run = await arefine_file("hf://owner/name:validation", out, cfg)
        again = await arefine_file(Path("hf://owner/name:validation"), out, cfg)
    assert asked == [("owner/name", "validation", True)] * 2
    assert run.summary.kept == 2 and again.summary.resumed == 2
    assert [json.loads(line) for line in out.read_text().splitlines()] == ALPACA_ROWS[:2]
