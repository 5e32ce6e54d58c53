"""Exact JSON for dataset rows: what was read is what is written, number for number.

orjson is the fast path, but it silently changes some rows: an integer beyond 64 bits becomes a
float, a number with more digits than a double holds is rounded, ``1e400`` is refused, and of two
equal keys the last one silently wins. A cheap scan of each row's text (one regex pass) tells when
the fast path is exact; only the rare rows that need it take the stdlib parser, which keeps big
integers as ``int`` and imprecise numbers as ``RawNumber`` (their text, written back verbatim).

A row nested deeper than ``MAX_DEPTH`` is refused before parsing: parsers and encoders recurse,
and such a row is never SFT data.
"""

from __future__ import annotations

import base64
import json
import re
from decimal import Decimal
from typing import Any

import orjson

__all__ = [
    "MAX_DEPTH",
    "RawNumber",
    "RowJSONError",
    "canonical",
    "check_depth",
    "dumps",
    "loads",
    "loads_row",
]

MAX_DEPTH = 64
"""The deepest nesting a row may have (an SFT row has 3 or 4 levels; orjson's encoder stops at 255)."""

# Every token the checks need, in one pass: a whole string (group 1: a colon after it, i.e. a key),
# an opening or closing bracket, or a number. Outside strings there are no quotes, so every match of
# the string branch starts at a real opening quote.
_SCAN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"(\s*:)?|[\[{]|[\]}]|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?')
_MAX_EXACT_INT_DIGITS = 18  # orjson keeps integers to 64 bits; 18 digits always fit
_MAX_EXACT_FLOAT_DIGITS = 15  # a double holds 15 significant decimal digits for sure


class RowJSONError(ValueError):
    """A row's text is not one JSON value coevol can keep exactly; the message says why."""


class RawNumber(Decimal):
    """A JSON number a float cannot hold exactly; ``text`` is written back as it was read."""

    text: str

    def __new__(cls, text: str) -> RawNumber:
        self = super().__new__(cls, text)
        self.text = text
        return self

    def __reduce__(self) -> tuple[type[RawNumber], tuple[str]]:
        return (RawNumber, (self.text,))


def _scan(text: bytes, max_depth: int = MAX_DEPTH) -> tuple[int, bool]:
    """(keys in the text, whether a number needs the exact parser); raises when too deep."""
    keys = depth = 0
    exotic = False
    for m in _SCAN.finditer(text):
        first = text[m.start()]
        if first == 34:  # '"'
            if m.start(1) >= 0:
                keys += 1
        elif first in b"[{":
            depth += 1
            if depth > max_depth:
                raise RowJSONError(f"nested deeper than {max_depth} levels")
        elif first in b"]}":
            depth -= 1
        elif not exotic:
            exotic = _needs_exact(m.group())
    return keys, exotic


def _needs_exact(number: bytes) -> bool:
    if b"." not in number and b"e" not in number and b"E" not in number:
        return len(number.lstrip(b"-")) > _MAX_EXACT_INT_DIGITS
    if b"e" in number or b"E" in number:
        return True
    digits = number.lstrip(b"-").replace(b".", b"").lstrip(b"0")
    return len(digits) > _MAX_EXACT_FLOAT_DIGITS


def _count_keys(obj: Any) -> int:
    count = 0
    stack = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            count += len(node)
            stack.extend(v for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, dict | list))
    return count


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise RowJSONError(f"duplicate key {key!r} (a JSON object names each key once)")
        out[key] = value
    return out


def _exact_float(text: str) -> float | RawNumber:
    """A float when writing it back gives the same number (``0.1`` does), else the text itself."""
    value = float(text)
    if value - value == 0 and Decimal(repr(value)) == Decimal(text):  # finite, and nothing lost
        return value
    return RawNumber(text)


def _no_constant(name: str) -> Any:
    raise RowJSONError(f"{name} is not valid JSON")


def _slow_loads(text: bytes | str) -> Any:
    try:
        return json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_float=_exact_float,
            parse_int=int,
            parse_constant=_no_constant,
        )
    except RowJSONError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RowJSONError(f"not valid JSON: {exc}") from None


def loads_row(text: bytes) -> Any:
    """Parse one row's text exactly: orjson when that is exact, else the stdlib parser.

    Raises ``RowJSONError`` for invalid JSON, duplicate keys and rows nested too deep.
    """
    keys, exotic = _scan(text)
    if exotic:
        return _slow_loads(text)
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise RowJSONError(f"not valid JSON: {_json_error(text)}") from None
    if keys and _count_keys(obj) != keys:
        return _slow_loads(text)  # raises, naming the duplicate key
    return obj


def _json_error(text: bytes) -> str:
    """orjson's message for the line without its newline, so positions read "line 1 column N"."""
    try:
        orjson.loads(text.rstrip(b"\r\n"))
    except orjson.JSONDecodeError as e:
        return str(e)
    return "invalid JSON"


def loads(text: bytes | str) -> Any:
    """Parse JSON that coevol wrote (a store payload): exact, without the row-only checks."""
    raw = text.encode() if isinstance(text, str) else text
    _, exotic = _scan(raw, 8 * MAX_DEPTH)
    return _slow_loads(raw) if exotic else orjson.loads(raw)


def check_depth(obj: Any) -> None:
    """Refuse an already-parsed row (Parquet, datasets) nested deeper than ``MAX_DEPTH``."""
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list | tuple):
            if depth >= MAX_DEPTH:
                raise RowJSONError(f"nested deeper than {MAX_DEPTH} levels")
            values = node.values() if isinstance(node, dict) else node
            stack.extend((v, depth + 1) for v in values if isinstance(v, dict | list | tuple))


def _default(value: Any) -> Any:
    """Values JSON has no type for: decimals (from Parquet) as strings, bytes as base64.

    A ``RawNumber`` is refused here on purpose, so that ``dumps`` takes the exact path.
    """
    if isinstance(value, RawNumber):
        raise TypeError("exact number")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"cannot write a {type(value).__name__} value as JSON")


def dumps(obj: Any, *, sort_keys: bool = False) -> bytes:
    """Compact JSON, exact for every value ``loads_row`` returns (orjson unless it cannot be)."""
    try:
        return orjson.dumps(obj, default=_default, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except TypeError:  # orjson.JSONEncodeError: a big int, a RawNumber, or a real type error
        parts: list[str] = []
        _write(obj, parts, sort_keys, 0)
        return "".join(parts).encode("utf-8", errors="surrogatepass")


def canonical(obj: Any) -> bytes:
    """The row's content as stable bytes (keys sorted), for resume keys."""
    return dumps(obj, sort_keys=True)


def _write(obj: Any, out: list[str], sort_keys: bool, depth: int) -> None:
    if depth > 8 * MAX_DEPTH:
        raise TypeError("value nested too deep to write as JSON")
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, str):
        out.append(json.dumps(obj, ensure_ascii=False))
    elif isinstance(obj, RawNumber):
        out.append(obj.text)
    elif isinstance(obj, int):
        out.append(str(int(obj)))
    elif isinstance(obj, float):
        out.append(orjson.dumps(obj).decode())
    elif isinstance(obj, dict):
        items = sorted(obj.items()) if sort_keys else obj.items()
        out.append("{")
        for i, (key, value) in enumerate(items):
            if i:
                out.append(",")
            out.append(json.dumps(str(key), ensure_ascii=False))
            out.append(":")
            _write(value, out, sort_keys, depth + 1)
        out.append("}")
    elif isinstance(obj, list | tuple):
        out.append("[")
        for i, value in enumerate(obj):
            if i:
                out.append(",")
            _write(value, out, sort_keys, depth + 1)
        out.append("]")
    else:
        _write(_default(obj), out, sort_keys, depth + 1)
