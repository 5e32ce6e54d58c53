"""Make text from the data or a model inert before a terminal shows it. Pure functions.

A row or a server answer may carry escape sequences (clear the screen, set the window title,
OSC 8 hyperlinks) or console markup (``[/b]``, ``[link=...]``). Everything coevol prints that it
did not write itself goes through ``inert`` and is printed as plain text (never parsed as markup).
"""

from __future__ import annotations

import re

__all__ = ["inert", "inert_line"]

# C0 controls except tab and newline, DEL, C1 controls (which include the 8-bit CSI and OSC),
# and the Unicode bidi overrides that reorder what a terminal shows.
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    ch = match.group(0)
    code = ord(ch)
    if code == 0x1B:
        return "\\e"
    if code == 0x0D:
        return "\\r"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def inert(text: str) -> str:
    """``text`` with every control character shown as an escape (``\\e``, ``\\x07``); tabs and
    newlines stay. Console markup needs no change here: print the result as plain text."""
    return _CONTROL_RE.sub(_visible, text)


def inert_line(text: str) -> str:
    """``inert`` for one-line places (progress, summary, error messages): newlines become ``\\n``."""
    return inert(text).replace("\n", "\\n").replace("\t", " ")
