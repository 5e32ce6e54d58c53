"""A word-level diff between two texts, for ``coevol show`` and the report's sample viewer. Pure.

The texts are split into words, runs of whitespace and single punctuation marks, and compared with
``difflib``'s longest-matching-block algorithm. The result is a list of operations whose ``equal``
and ``delete`` texts concatenate back to ``a`` and whose ``equal`` and ``insert`` texts concatenate
back to ``b`` (nothing is lost or normalised), with adjacent operations of the same kind merged and
a replacement given as its deletion first, then its insertion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Literal

__all__ = ["DEFAULT_MAX_TOKENS", "DiffKind", "DiffOp", "diff_stats", "word_diff"]

DiffKind = Literal["equal", "delete", "insert"]

# Above this many tokens on either side the matcher's quadratic worst case is not worth it: the
# diff becomes one deletion and one insertion (still exact, only coarse).
DEFAULT_MAX_TOKENS = 20_000

_TOKEN_RE = re.compile(r"\w+|\s+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True, slots=True)
class DiffOp:
    """One run of the diff: ``text`` is common to both (``equal``), only in ``a`` (``delete``) or
    only in ``b`` (``insert``)."""

    kind: DiffKind
    text: str


def _tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def _append(ops: list[DiffOp], kind: DiffKind, text: str) -> None:
    if not text:
        return
    if ops and ops[-1].kind == kind:
        ops[-1] = DiffOp(kind, ops[-1].text + text)
    else:
        ops.append(DiffOp(kind, text))


def word_diff(a: str, b: str, *, max_tokens: int = DEFAULT_MAX_TOKENS) -> list[DiffOp]:
    """The operations that turn ``a`` into ``b``, word by word (see the module docstring)."""
    ta, tb = _tokens(a), _tokens(b)
    ops: list[DiffOp] = []
    if a == b:
        _append(ops, "equal", a)
        return ops
    if len(ta) > max_tokens or len(tb) > max_tokens:
        _append(ops, "delete", a)
        _append(ops, "insert", b)
        return ops
    matcher = SequenceMatcher(None, ta, tb, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            _append(ops, "equal", "".join(ta[i1:i2]))
            continue
        if tag in ("delete", "replace"):
            _append(ops, "delete", "".join(ta[i1:i2]))
        if tag in ("insert", "replace"):
            _append(ops, "insert", "".join(tb[j1:j2]))
    return ops


def diff_stats(ops: list[DiffOp]) -> tuple[int, int]:
    """(words deleted, words inserted): how much an edit changed, for a one-line summary."""
    deleted = sum(len(re.findall(r"\w+", op.text)) for op in ops if op.kind == "delete")
    inserted = sum(len(re.findall(r"\w+", op.text)) for op in ops if op.kind == "insert")
    return deleted, inserted
