"""The dataset model the engine sees, whatever the file looked like.

Rows are parsed once into ``Example`` (turns to refine plus the untouched original row, so writing back
changes nothing but the refined texts) or kept as ``RejectedRow`` (so a bad row is reported, not lost).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Example", "RejectedRow", "Turn"]


@dataclass(slots=True)
class Turn:
    """One message. ``role`` is "system", "user", "assistant", or any other role kept verbatim."""

    role: str
    content: str
    input: str = ""
    """Alpaca only: the ``input`` field that goes with the instruction (kept apart for the prompt layer)."""


@dataclass(slots=True)
class Example:
    """A row that can be refined.

    ``index`` is the 0-based position among the items read (rejected rows count), so results that finish
    out of order can be written back in input order; ``line`` is the 1-based line (JSONL), element (JSON
    array) or row (Parquet, datasets) number for messages.
    """

    index: int
    line: int
    fmt: str
    turns: list[Turn]
    raw: dict[str, Any]


@dataclass(slots=True)
class RejectedRow:
    """A row that cannot be refined; ``raw`` is its text so the rejects file can be fixed and re-run."""

    line: int
    error: str
    raw: str
