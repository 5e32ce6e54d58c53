"""Issue 17: ``compare --dry-run`` streams both files in step (flat memory, like refine's), and
says exactly what the in-memory matching says: the same estimates, the same refusals."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from coevol.cli.main import main
from coevol.compare.units import Misaligned, Side, match_rows, stream_pairs
from coevol.domain import Example
from coevol.errors import DataError
from coevol.io.readers import read_examples

from .compare_support import BASE_OUTPUTS, CAND_OUTPUTS, alpaca, write_rows


def _dry(base: Path, cand: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["compare", str(base), str(cand), "-o", str(base.with_name("r.json")), "--dry-run"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def _rows(path: Path) -> list[Example]:
    return [r for r in read_examples(path) if isinstance(r, Example)]


@pytest.mark.parametrize("ids", [False, True])
def test_streamed_pairs_are_match_rows_pairs(tmp_path: Path, ids: bool) -> None:
    base = write_rows(tmp_path / "b.jsonl", alpaca(BASE_OUTPUTS, ids=ids))
    cand = write_rows(tmp_path / "c.jsonl", alpaca(CAND_OUTPUTS, ids=ids))
    _, pairs = match_rows(Side("b", _rows(base)), Side("c", _rows(cand)))
    streamed = list(stream_pairs(iter(_rows(base)), iter(_rows(cand)), "b", "c"))
    assert [(p, b.line, c.line) for p, b, c in streamed] == [
        (i, b.line, c.line) for i, (b, c) in enumerate(pairs)
    ]


def test_ids_in_another_order_give_the_same_estimate_through_the_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = alpaca(CAND_OUTPUTS, ids=True)
    base = write_rows(tmp_path / "base.jsonl", alpaca(BASE_OUTPUTS, ids=True))
    in_order = write_rows(tmp_path / "cand.jsonl", rows)
    expected = _dry(base, in_order, capsys)
    assert "6 pairs, 1 identical (ties, no call); 10 judge calls (up to 30 with re-asks)" in expected
    write_rows(in_order, rows[::-1])
    with pytest.raises(Misaligned):
        list(stream_pairs(iter(_rows(base)), iter(_rows(in_order)), "b", "c"))
    assert _dry(base, in_order, capsys) == expected


def test_the_streamed_refusals_are_match_rows_refusals(tmp_path: Path) -> None:
    base = _rows(write_rows(tmp_path / "b.jsonl", alpaca(BASE_OUTPUTS)))
    short = base[:4]
    for b, c in ((base, short), (short, base)):
        with pytest.raises(DataError) as streamed:
            list(stream_pairs(iter(b), iter(c), "b", "c"))
        with pytest.raises(DataError) as matched:
            match_rows(Side("b", b), Side("c", c))
        assert str(streamed.value) == str(matched.value)
    other = _rows(write_rows(tmp_path / "o.jsonl", alpaca(CAND_OUTPUTS, prefix="Other")))
    with pytest.raises(DataError, match=r"row 0 \(b line 1, c line 1\) is not the same request"):
        list(stream_pairs(iter(base), iter(other), "b", "c"))


def _big(path: Path, n: int, suffix: str) -> Path:
    with path.open("w") as f:
        for i in range(n):
            row: dict[str, Any] = {
                "instruction": f"Task {i}: explain item {i} in detail.",
                "output": "x" * 40 + suffix,
            }
            f.write(json.dumps(row) + "\n")
    return path


def test_the_dry_run_holds_no_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """8,000 rows a side: the in-memory plan held every row and unit (a 12 MiB peak at this size,
    7.3 GB at 1M rows); streaming keeps the peak to what one row and the templates need (1.4 MiB)."""
    base = _big(tmp_path / "base.jsonl", 8_000, "")
    cand = _big(tmp_path / "cand.jsonl", 8_000, " more")
    tracemalloc.start()
    try:
        out = _dry(base, cand, capsys)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "8,000 pairs, 0 identical (ties, no call); 16,000 judge calls" in out
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB"
