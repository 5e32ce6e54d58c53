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
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["VERDICT_TOKENS", "boundaries", "neutralise"]

VERDICT_TOKENS = ("<assistant 1>", "<assistant 2>", "<equal>")
"""What the judge answers with; data must not be able to put one in front of it."""

_SLOT_RE = re.compile(r"\{[a-z_]+\}")  # the slots ``coevol.prompts.templates.fill`` substitutes
_INLINE_TOKEN_RE = re.compile(r"<[^<>\n]{1,40}>")
_OPENERS, _CLOSERS = "[<{#", ":]>}"
_SWAP = str.maketrans({"[": "(", "]": ")", "<": "(", ">": ")", "{": "(", "}": ")", "#": "="})
_COLON = str.maketrans({":": ";"})
_APOSTROPHES = "'\u2018\u2019`"
_SPACE = r"[\s\u00a0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff]"  # ASCII mode: name them
_VERDICT_RE = rf"<{_SPACE}*(?:assistant{_SPACE}*[12]|equal){_SPACE}*>"


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
    """``marker`` as a regex: any (ASCII) case, any run of whitespace, straight or curly apostrophes."""
    out: list[str] = []
    for part in re.split(r"(\s+)", marker):
        if not part:
            continue
        if part.isspace():
            out.append(_SPACE + "+")
        else:
            out.append(f"[{_APOSTROPHES}]".join(re.escape(p) for p in part.split("'")))
    return "".join(out)


_WORD_RE = re.compile(r"[^\W_]+")


@dataclass(frozen=True, slots=True)
class _Guard:
    """A marker set compiled: the pattern of all markers, and two cheap tests most text fails at
    once (every match starts with one of ``starts`` and holds one of ``keys``, lower-cased)."""

    starts: tuple[str, ...]
    keys: tuple[str, ...]
    pattern: re.Pattern[str]

    def may_match(self, text: str) -> bool:
        if not any(c in text for c in self.starts):
            return False
        lower = text.lower()
        return any(key in lower for key in self.keys)


def _first_chars(marker: str) -> set[str]:
    """Every character a match of ``marker`` can start with (see ``_pattern``)."""
    first = marker[0]
    return set(_APOSTROPHES) if first == "'" else {first, first.lower(), first.upper()}


@lru_cache(maxsize=256)
def _guard(markers: frozenset[str]) -> _Guard:
    guard = [m for m in markers if m.strip()]
    starts = {c for m in guard for c in _first_chars(m)} | {"<"}
    keys = {max(_WORD_RE.findall(m.lower()), key=len, default="") for m in guard} | {"assistant", "equal"}
    # Longest first, so a marker that contains a shorter one is matched whole. ASCII case folding
    # only, so that the lower-cased keys test can never miss what the pattern matches (Unicode
    # folding would let "ſ" match "s", which ``str.lower`` does not).
    alternatives = [_pattern(m) for m in sorted(guard, key=lambda m: (-len(m), m))] + [_VERDICT_RE]
    pattern = re.compile("|".join(alternatives), re.IGNORECASE | re.ASCII)
    return _Guard(tuple(sorted(starts)), tuple(sorted(keys)), pattern)


def _defuse(match: re.Match[str]) -> str:
    text = match.group(0)
    swapped = text.translate(_SWAP)
    return swapped if swapped != text else text.translate(_COLON)


def neutralise(text: str, guard: Iterable[str]) -> str:
    """``text`` with every occurrence of a marker in ``guard`` (and of a verdict token) defused.

    Repeats until nothing matches: defusing only removes bracket, ``#`` and ``:`` characters, and
    every marker holds one, so this ends, and its result never spells another marker.
    """
    compiled = _guard(frozenset(guard))
    if not compiled.may_match(text):
        return text
    while True:
        defused = compiled.pattern.sub(_defuse, text)
        if defused == text:
            return text
        text = defused
