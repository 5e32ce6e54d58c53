"""The one trace reader: ``coevol show``, ``coevol report`` and the Ray merge read traces here.

A trace is read only from a regular file: a FIFO, a device or a link to one (``/dev/zero``) is
refused with one line before a byte is read, so a planted path can neither hang the reader nor fill
its memory. Lines are streamed; one longer than ``MAX_LINE_BYTES`` is skipped without being held
in memory. Each record goes through the one declaration of the schema (``TraceRecord.from_dict``);
what a caller does with a line that is not a record (stop, or count it and go on) is its choice,
so every problem comes back as an ``Unreadable`` with the line's number.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from pydantic_core import from_json

from coevol.domain import TraceRecord, check_schema
from coevol.errors import TraceError, TraceSchemaError
from coevol.io.guard import open_regular
from coevol.textsafe import inert_line

__all__ = ["MAX_LINE_BYTES", "Problem", "Unreadable", "read_trace", "trace_lines"]

MAX_LINE_BYTES = 64 * 1024 * 1024
"""The longest trace line read. A record holds every answer of one example; answers are capped at
``max_answer_bytes`` (8 MiB by default), and a real line is kilobytes, rarely megabytes."""

_CHUNK = 1 << 20


class Problem(StrEnum):
    """Why a line is not a record."""

    TOO_LONG = "too_long"
    NOT_JSON = "not_json"
    NOT_RECORD = "not_record"  # JSON, but not a trace record at all (a dataset row, say)
    VERSION = "version"  # a record of a schema version this coevol does not read
    MALFORMED = "malformed"  # a record with a missing or mistyped field


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A line that is not a record this coevol reads; ``message`` never quotes the line."""

    number: int
    problem: Problem
    message: str


def _open(path: Path) -> BinaryIO:
    where = inert_line(str(path))
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise TraceError(f"no such trace file: {where}") from None
    except IsADirectoryError:
        raise TraceError(f"{where} is a folder, not a trace file (give OUT.trace.jsonl)") from None
    except OSError as exc:
        raise TraceError(f"cannot read {where}: {inert_line(exc.strerror or str(exc))}") from None


def _skip_rest(fh: BinaryIO) -> None:
    """Read past the end of an overlong line, a chunk at a time."""
    while True:
        chunk = fh.readline(_CHUNK)
        if not chunk or chunk.endswith(b"\n"):
            return


def trace_lines(path: Path) -> Iterator[tuple[int, bytes | None]]:
    """(1-based number, line without its newline) for every non-blank line; ``None`` for a line
    longer than ``MAX_LINE_BYTES`` (it is skipped, never held whole). Raises ``TraceError`` (one
    line) when the file is missing, a folder, not a regular file or cannot be read."""
    where = inert_line(str(path))
    with _open(path) as fh:
        number = 0
        try:
            while line := fh.readline(MAX_LINE_BYTES + 1):
                number += 1
                if len(line) > MAX_LINE_BYTES:
                    _skip_rest(fh)
                    yield number, None
                elif line.strip():
                    yield number, line.rstrip(b"\r\n")
        except OSError as exc:
            raise TraceError(f"cannot read {where}: {inert_line(exc.strerror or str(exc))}") from None


def _record(number: int, line: bytes) -> TraceRecord | Unreadable:
    try:
        data = from_json(line, allow_inf_nan=False)  # as fast as orjson, and a big integer stays exact
    except ValueError as exc:
        return Unreadable(number, Problem.NOT_JSON, f"line {number}: not JSON ({inert_line(str(exc))})")
    if not isinstance(data, dict):
        return Unreadable(number, Problem.NOT_RECORD, f"line {number}: not a trace record (not an object)")
    if "schema" not in data and "turns" not in data:  # a dataset row, say: the wrong file
        return Unreadable(number, Problem.NOT_RECORD, f"line {number}: not a trace record (no schema field)")
    try:
        check_schema(data)
    except TraceSchemaError as exc:
        return Unreadable(number, Problem.VERSION, f"line {number}: {inert_line(str(exc))}")
    try:
        return TraceRecord.from_dict(data)
    except TraceSchemaError as exc:
        return Unreadable(number, Problem.MALFORMED, f"line {number}: {inert_line(str(exc))}")


def read_trace(path: Path) -> Iterator[TraceRecord | Unreadable]:
    """Every line of the trace, streamed, as a record or as why it is not one."""
    for number, line in trace_lines(path):
        if line is None:
            yield Unreadable(
                number, Problem.TOO_LONG, f"line {number}: longer than {MAX_LINE_BYTES >> 20} MiB"
            )
        else:
            yield _record(number, line)
