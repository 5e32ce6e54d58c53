"""The streaming JSON-array scanner: a top-level array's elements, one at a time, in flat memory.

Only strings and bracket depth are tracked (regexes skip everything else in C), which is enough to
find the commas that separate elements; validating an element is the row parser's job.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from coevol.errors import DataError

__all__ = ["BOM", "WHITESPACE", "scan_array"]

BOM = b"\xef\xbb\xbf"
WHITESPACE = b" \t\r\n"
# A JSON array's elements are found from its tokens that matter: a whole string (so brackets and commas
# inside it are skipped in C; group 1 is its closing quote, absent when the chunk ends inside it) or a
# bracket or comma. _STRING_REST finishes a string that a chunk boundary cut.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(")?|[\[\]{},]', re.DOTALL)
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*(")?', re.DOTALL)
_TRUNCATED = "unexpected end of file: the JSON array is not closed (truncated file?)"
_TRAILING = "unexpected data after the end of the JSON array"


def _head(chunks: Iterator[bytes]) -> bytes:
    """The start of the file from its first non-space byte (after a BOM); empty for an empty file."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        if BOM.startswith(buf):
            continue
        buf = buf.removeprefix(BOM).lstrip(WHITESPACE)
        if buf:
            break
    return buf.removeprefix(BOM).lstrip(WHITESPACE)


def scan_array(chunks: Iterator[bytes]) -> Iterator[tuple[bytes, str | None]]:
    """Yields the text of each element of a top-level JSON array, holding one element in memory at a time.

    Only strings and bracket depth are tracked (regexes skip everything else in C), which is enough to
    find the commas that separate elements; validating an element is orjson's job. A broken
    end (truncated array, data after it) comes as a last element carrying its error, so the rows before
    it are still refined.
    """
    buf = _head(chunks)
    if not buf:
        return
    if buf[0] != ord("["):
        raise DataError("the top-level JSON value is not an array of rows")
    pos = start = 1
    depth = 1
    in_string = separated = False
    while True:
        if in_string:
            rest = _STRING_REST.match(buf, pos)
            assert rest is not None
            pos = rest.end()
            in_string = rest.start(1) < 0
        if not in_string:
            for m in _TOKEN.finditer(buf, pos):
                char = buf[m.start()]
                if char == ord('"'):
                    if m.start(1) < 0:
                        in_string = True
                        pos = m.end()
                        break
                elif char == ord(","):
                    if depth == 1:
                        yield buf[start : m.start()].strip(WHITESPACE), None
                        start = m.end()
                        separated = True
                elif char in b"[{":
                    depth += 1
                else:
                    depth -= 1
                    if depth == 0:
                        yield from _array_end(buf, start, m.end(), separated, chunks)
                        return
            else:
                pos = len(buf)
        chunk = next(chunks, b"")
        if not chunk:
            yield buf[start:].strip(WHITESPACE), _TRUNCATED
            return
        buf = buf[start:] + chunk
        pos -= start
        start = 0


def _array_end(
    buf: bytes, start: int, pos: int, separated: bool, chunks: Iterator[bytes]
) -> Iterator[tuple[bytes, str | None]]:
    """The last element of an array closed at ``pos``, then a complaint if anything but space follows."""
    last = buf[start : pos - 1].strip(WHITESPACE)
    if buf[pos - 1] != ord("]"):
        yield buf[start:pos].strip(WHITESPACE), "malformed JSON array: unbalanced '}'"
        return
    if last or separated:
        yield last, None
    tail = buf[pos:].strip(WHITESPACE)
    for chunk in chunks:
        if tail:
            break
        tail = chunk.strip(WHITESPACE)
    if tail:
        yield tail[:200], _TRAILING
