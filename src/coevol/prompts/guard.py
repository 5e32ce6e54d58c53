"""Keep data from forging a prompt's structure. Pure functions, no I/O.

A template's boundaries are its own marker lines, read from its text: every piece of a line
outside the ``{slots}`` that starts with ``[``, ``<``, ``{`` or ``#`` or ends with ``:``, ``]``,
``>`` or ``}`` (``[The Start of Assistant 1's Response]``, ``### Input:``, ``[System]``), and every
``<...>`` token in its literal text (the verdict names the judge is asked for). The verdict tokens
``<assistant 1>``, ``<assistant 2>`` and ``<equal>`` are guarded in every prompt. Deriving the set
from the text protects a user's overridden templates exactly like the paper's.

Where data substituted into a slot contains one of these (case, runs of spaces and curly
apostrophes ignored), its brackets become parentheses and its ``#`` become ``=`` (``:`` becomes
``;`` when it has neither), so each boundary appears in the sent prompt only where the template
puts it. The change is visible, deterministic and keeps the text's length (the dry-run estimate
stays exact); it is made in the prompt only, never in the data that is written out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["VERDICT_TOKENS", "boundaries", "neutralise"]

VERDICT_TOKENS = ("<assistant 1>", "<assistant 2>", "<equal>")
"""What the judge answers with; data must not be able to put one in front of it."""

_SLOT_RE = re.compile(r"\{[a-z_]+\}")  # the slots ``coevol.prompts.templates.fill`` substitutes
_INLINE_TOKEN_RE = re.compile(r"<[^<>\n]{1,40}>")
_OPENERS, _CLOSERS = "[<{#", ":]>}"
_SWAP = str.maketrans({"[": "(", "]": ")", "<": "(", ">": ")", "{": "(", "}": ")", "#": "="})
_COLON = str.maketrans({":": ";"})
_VERDICT_RE = r"<\s*(?:assistant\s*[12]|equal)\s*>"


def _is_marker(piece: str) -> bool:
    return any(c.isalnum() for c in piece) and (piece[0] in _OPENERS or piece[-1] in _CLOSERS)


@lru_cache(maxsize=256)
def boundaries(template: str) -> frozenset[str]:
    """The marker texts ``template`` defines outside its slots (see the module docstring)."""
    found: set[str] = set()
    for line in template.splitlines():
        for piece in _SLOT_RE.split(line):
            piece = piece.strip()
            if piece and _is_marker(piece):
                found.add(piece)
            found.update(t for t in _INLINE_TOKEN_RE.findall(piece) if any(c.isalnum() for c in t))
    return frozenset(found)


def _pattern(marker: str) -> str:
    """``marker`` as a regex: any case, any run of whitespace, straight or curly apostrophes."""
    out: list[str] = []
    for part in re.split(r"(\s+)", marker):
        if not part:
            continue
        if part.isspace():
            out.append(r"\s+")
        else:
            out.append("['\u2018\u2019`]".join(re.escape(p) for p in part.split("'")))
    return "".join(out)


@lru_cache(maxsize=256)
def _guard_re(guard: frozenset[str]) -> re.Pattern[str]:
    # Longest first, so a marker that contains a shorter one is matched whole.
    alternatives = [_pattern(m) for m in sorted(guard, key=lambda m: (-len(m), m))] + [_VERDICT_RE]
    return re.compile("|".join(alternatives), re.IGNORECASE)


def _defuse(match: re.Match[str]) -> str:
    text = match.group(0)
    swapped = text.translate(_SWAP)
    return swapped if swapped != text else text.translate(_COLON)


def neutralise(text: str, guard: Iterable[str]) -> str:
    """``text`` with every occurrence of a marker in ``guard`` (and of a verdict token) defused.

    Repeats until nothing matches: defusing only removes bracket, ``#`` and ``:`` characters, and
    every marker holds one, so this ends, and its result never spells another marker.
    """
    pattern = _guard_re(frozenset(guard))
    while True:
        defused = pattern.sub(_defuse, text)
        if defused == text:
            return text
        text = defused
