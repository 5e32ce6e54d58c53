"""The README's Python snippets run as written (issue 16): each ```python block is executed as a
script in a fresh folder holding the files it names, with the fake server standing in for the
server the README points at (the only substitution)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from coevol.testing import serve_in_subprocess

from .conftest import ALPACA_ROWS

README = Path(__file__).resolve().parent.parent / "README.md"
SERVERS = ("http://localhost:8000/v1", "http://vllm-svc:8000/v1")


def python_blocks() -> list[tuple[int, str]]:
    """(line, code) of every ```python block."""
    out, lines = [], README.read_text(encoding="utf-8").splitlines()
    start = None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == "```python":
            start = number
        elif start is not None and line.strip() == "```":
            out.append((start, "\n".join(lines[start : number - 1]) + "\n"))
            start = None
    return out


def _needs_ray(code: str) -> bool:
    return re.search(r"^import ray$", code, re.M) is not None


BLOCKS = [(line, code) for line, code in python_blocks() if not _needs_ray(code)]


def test_the_readme_has_the_snippets_we_run() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_a_readme_snippet_runs_as_written(line: int, code: str, tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ALPACA_ROWS))
    with serve_in_subprocess() as url:
        for server in SERVERS:
            code = code.replace(server, url)
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
            env={**os.environ},
        )
    assert proc.returncode == 0, f"README.md line {line}:\n{proc.stderr[-3000:]}"


RAY_BLOCKS = [(line, code) for line, code in python_blocks() if _needs_ray(code)]
RAY_START = "import ray\nray.init(num_cpus=2, include_dashboard=False)\n"
"""A local Ray of 2 CPUs (the machine the snippet once hung on), started before the block runs."""


def _parquet_paths(code: str) -> list[str]:
    return re.findall(r'"(s3://[^"]+)"', code)


def test_the_readme_has_the_ray_data_snippet() -> None:
    assert len(RAY_BLOCKS) == 1
    assert len(_parquet_paths(RAY_BLOCKS[0][1])) == 2


@pytest.mark.parametrize(("line", "code"), RAY_BLOCKS, ids=[f"README.md:{line}" for line, _ in RAY_BLOCKS])
def test_the_ray_data_snippet_runs_as_written_on_two_cpus(line: int, code: str, tmp_path: Path) -> None:
    """Only the s3:// paths (local folders), the store folder and the server's URL are replaced; the run must end,
    refine every row and leave no unclosed HTTP session behind."""
    pq = pytest.importorskip("pyarrow.parquet")
    pytest.importorskip("ray")
    import pyarrow as pa

    source, target = _parquet_paths(code)
    (tmp_path / "in").mkdir()
    pq.write_table(pa.Table.from_pylist(ALPACA_ROWS), tmp_path / "in" / "part-0.parquet")
    code = code.replace(source, str(tmp_path / "in")).replace(target, str(tmp_path / "out"))
    # The snippet's store folder too: a store left there by another run (another version, another
    # server) must not decide this test.
    assert code.count('"/tmp/coevol-calls"') == 1
    code = code.replace('"/tmp/coevol-calls"', repr(str(tmp_path / "calls")))
    with serve_in_subprocess() as url:
        for server in SERVERS:
            code = code.replace(server, url)
        proc = subprocess.run(
            [sys.executable, "-c", RAY_START + code],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=400,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"README.md line {line}:\n{said[-3000:]}"
    assert "Unclosed client session" not in said, said[-3000:]
    assert "Unclosed connector" not in said, said[-3000:]
    rows = pq.read_table(tmp_path / "out").to_pylist()
    assert sorted(r["instruction"] for r in rows) == sorted(r["instruction"] for r in ALPACA_ROWS)
    assert {r["coevol_status"] for r in rows} <= {"refined", "kept"}
