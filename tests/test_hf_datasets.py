"""A Hugging Face dataset saved with ``save_to_disk``, read through the real ``datasets`` library."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

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


def _hub_cache(home: Path, repo: str, files: dict[str, str], revision: str = "main") -> str:
    """Write a dataset into huggingface_hub's cache layout under ``home`` (as a download would)."""
    commit = hashlib.sha1(repo.encode() + revision.encode()).hexdigest()
    root = home / "hub" / f"datasets--{repo.replace('/', '--')}"
    for name, text in files.items():
        path = root / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / revision).write_text(commit)
    return commit


async def test_a_hub_dataset_is_read_from_the_hub_cache(tmp_path: Path) -> None:
    """``hf://datasets/OWNER/NAME@REV:SPLIT`` through huggingface_hub and datasets, as a user runs
    it with HF_HUB_OFFLINE=1 (no network here): the split's rows refined, in order, shape kept."""
    home = tmp_path / "hf"
    train = [{**row, "src": i} for i, row in enumerate(ALPACA_ROWS)]
    _hub_cache(
        home,
        "owner/sft-data",
        {
            "data/train-00000-of-00001.jsonl": "".join(json.dumps(r) + "\n" for r in train),
            "data/test-00000-of-00001.jsonl": json.dumps(ALPACA_ROWS[0]) + "\n",
        },
        revision="v1",
    )
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = tmp_path / "refined.jsonl"
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as server:
        code, _, err = await coevol_cli(
            "refine", "hf://datasets/owner/sft-data@v1:train", "-o", str(out),
            "--base-url", server.base_url, "--model", "m", "-q", env=env,
        )  # fmt: skip
        assert code == 0, err
        code, _, err = await coevol_cli(
            "refine", "hf://datasets/owner/sft-data@v2", "-o", str(tmp_path / "x.jsonl"),
            "--base-url", server.base_url, "--model", "m", "-q", env=env,
        )  # fmt: skip
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {**row, "output": row["output"] + EDIT_MARK} for row in train
    ]
    assert code == 1 and err.splitlines() == [
        "error: cannot read hf://datasets/owner/sft-data@v2:train: not in the local Hub cache, and the "
        "Hub cannot be reached"
    ], err
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("x.jsonl")]  # refused before any file
