"""A word-level diff between two texts, for ``coevol show`` and the report's sample viewer. Pure.

The texts are split into words and single punctuation marks, each with the whitespace that follows
it (leading whitespace is a token of its own), and compared with ``difflib``'s longest-matching-block
algorithm after the common head and tail are set aside (an edit usually changes a middle part or
appends, so this keeps long texts fast). The result is a list of operations whose ``equal``
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

# Above this many differing tokens (between the common head and tail) on either side the matcher's
# quadratic worst case is not worth it: that part becomes one deletion and one insertion (exact,
# only coarse).
DEFAULT_MAX_TOKENS = 20_000

_TOKEN_RE = re.compile(r"\w+\s*|[^\w\s]\s*|\s+", re.UNICODE)


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
    head = 0
    while head < min(len(ta), len(tb)) and ta[head] == tb[head]:
        head += 1
    tail = 0
    while tail < min(len(ta), len(tb)) - head and ta[-1 - tail] == tb[-1 - tail]:
        tail += 1
    _append(ops, "equal", "".join(ta[:head]))
    mid_a, mid_b = ta[head : len(ta) - tail], tb[head : len(tb) - tail]
    if len(mid_a) > max_tokens or len(mid_b) > max_tokens:
        _append(ops, "delete", "".join(mid_a))
        _append(ops, "insert", "".join(mid_b))
        _append(ops, "equal", "".join(ta[len(ta) - tail :]))
        return ops
    matcher = SequenceMatcher(None, mid_a, mid_b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            _append(ops, "equal", "".join(mid_a[i1:i2]))
            continue
        if tag in ("delete", "replace"):
            _append(ops, "delete", "".join(mid_a[i1:i2]))
        if tag in ("insert", "replace"):
            _append(ops, "insert", "".join(mid_b[j1:j2]))
    _append(ops, "equal", "".join(ta[len(ta) - tail :]))
    return ops


def diff_stats(ops: list[DiffOp]) -> tuple[int, int]:
    """(words deleted, words inserted): how much an edit changed, for a one-line summary."""
    deleted = sum(len(re.findall(r"\w+", op.text)) for op in ops if op.kind == "delete")
    inserted = sum(len(re.findall(r"\w+", op.text)) for op in ops if op.kind == "insert")
    return deleted, inserted
