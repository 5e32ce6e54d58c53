"""``benchmarks/ablation.py`` against the fake server: its figures are the runs' own, and a rerun is free."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coevol.testing import ThreadedServer
from coevol.testing.responders import CoEvolResponder, accept_up_to
from coevol.testing.tree import Label, TreeResponder

from .engine_support import alpaca_rows, write_jsonl

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "ablation.py"


def _votes(response: str) -> Sequence[Sequence[Label]]:
    return [["Yes"] * 5] if "[edit]" in response else [["No", "No", "No", "Yes", None]]


def _refine(parent: str, seed: int, nth: int) -> str:
    return f"{parent}|{seed} [edit]"


def _ablate(data: Path, out: Path, base_url: str, *modes: str) -> list[dict[str, Any]]:
    chosen = ["--modes", *modes] if modes else []
    flags = ["--base-url", base_url, "--model", "fake-model"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(data), "--out", str(out), *chosen, "--", *flags],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures: list[dict[str, Any]] = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    return figures


def _judged(out: Path) -> int:
    """The judge requests a compare made (each attempt of each order of each pair)."""
    doc = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    return sum(len(o["attempts"]) for c in doc["candidates"] for u in c["units"] for o in u["orders"])


def _untimed(figures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in f.items() if k != "seconds"} for f in figures]


def test_each_strategy_s_figures_are_the_requests_the_server_saw(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(3))
    responder = TreeResponder(_votes, _refine, fallback=CoEvolResponder(accept_up_to(1)))
    alone = []
    with ThreadedServer(responder=responder) as server:
        for mode in ("full", "tree", "ctree"):
            seen = server.count()
            (figures,) = _ablate(data, tmp_path / mode, server.base_url, mode)
            assert figures["mode"] == mode and figures["rows"] == 3 and figures["failed"] == 0
            assert server.count() - seen == figures["requests"] + _judged(tmp_path / mode)
            alone.append(figures)
        seen = server.count()
        assert _ablate(data, tmp_path / "tree", server.base_url, "tree") == [alone[1]]  # its time too
        assert server.count() == seen  # the rerun replayed the refine run and the compare
        together = _ablate(data, tmp_path / "all", server.base_url)
    assert _untimed(together) == _untimed(alone)
    assert alone[1]["stops"] == {"tree_pass": 3} and alone[1]["changed"] == 3
    table = (tmp_path / "all" / "ablation.md").read_text(encoding="utf-8")
    assert table.count("\n| ") == 4  # the rule line and one row per strategy
    assert "| SPaR tree (`--strategy tree`) | 3 of 3 | 3 | tree_pass 3 | 7.0 |" in table
    assert all(f["found"] == 3 for f in alone)
