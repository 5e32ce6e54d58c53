"""The test harness itself: every test module collects without the optional extras installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# Blocks the extras as if they were not installed (an import of a None entry raises ImportError).
COLLECT_WITHOUT_EXTRAS = """
import sys
for name in ("pyarrow", "pyarrow.parquet", "datasets", "llama_cpp"):
    sys.modules[name] = None
import pytest
sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", sys.argv[1]]))
"""


def test_every_module_collects_without_the_optional_extras() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", COLLECT_WITHOUT_EXTRAS, str(TESTS)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=TESTS.parent,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    collected = proc.stdout
    assert "error" not in collected.splitlines()[-1].lower()
    # The JSONL halves of files that also test Parquet are still there.
    assert "test_files.py::test_round_trip_keeps_rows_identical[.jsonl-alpaca]" in collected
    assert "test_formats_cli.py::test_round_trip_without_accepted_edits_gives_the_input_back" in collected


def test_the_fake_server_runs_as_a_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "coevol.testing", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: python -m coevol.testing" in proc.stdout
    assert "--fault-kinds" in proc.stdout and "--api-key" in proc.stdout
