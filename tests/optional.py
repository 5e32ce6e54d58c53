"""Optional extras in tests: a test that needs one skips itself; the rest of its module still runs.

A module-level ``import pyarrow`` would make the whole file uncollectable without the extra, and
every JSONL test in it would vanish with the Parquet ones.
"""

from __future__ import annotations

from typing import Any

import pytest

PARQUET = "pip install 'coevol[parquet]'"


def pyarrow() -> tuple[Any, Any]:
    """``pyarrow`` and ``pyarrow.parquet``, or skip the calling test."""
    pa = pytest.importorskip("pyarrow", reason=PARQUET)
    pq = pytest.importorskip("pyarrow.parquet", reason=PARQUET)
    return pa, pq
