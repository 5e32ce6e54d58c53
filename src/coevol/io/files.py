"""Streaming dataset files in and out with flat memory.

Inputs (JSONL, JSON arrays, Parquet, ``datasets`` folders, Hub ids) are read row by row and turned into
``Example`` or ``BadRow`` items, so a bad row is reported instead of stopping the run. Outputs go to
``<path>.partial`` in input order and are renamed onto the final path only when complete, so a crashed
run never leaves a file that looks finished.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import time
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple, Self

import orjson

from coevol.domain import BadRow, Example
from coevol.errors import ConfigError, DataError, MissingExtra
from coevol.io.formats import FORMATS, parse_example

__all__ = [
    "FILE_FORMATS",
    "JsonlAppender",
    "OrderedWriter",
    "RejectsWriter",
    "count_rows",
    "parquet_schema",
    "read_examples",
]

FILE_FORMATS: tuple[str, ...] = ("jsonl", "json", "parquet", "hf-disk", "hf")
"""Input kinds: JSON Lines, a JSON array, Parquet, a ``save_to_disk`` folder, a Hub id (``hf://``)."""

_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}
_OUTPUT_FORMATS = ("jsonl", "json", "parquet")
_CHUNK_SIZE = 1 << 20
_PARQUET_BATCH = 1024
_PARQUET_HOLD = 16
_FLUSH_SECONDS = 1.0
_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n"
# A JSON array's elements are found from its tokens that matter: a whole string (so brackets and commas
# inside it are skipped in C; group 1 is its closing quote, absent when the chunk ends inside it) or a
# bracket or comma. _STRING_REST finishes a string that a chunk boundary cut.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(")?|[\[\]{},]', re.DOTALL)
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*(")?', re.DOTALL)
_TRUNCATED = "unexpected end of file: the JSON array is not closed (truncated file?)"
_TRAILING = "unexpected data after the end of the JSON array"

Item = Example | BadRow
PathLike = str | os.PathLike[str]


class _Raw(NamedTuple):
    """One row before parsing: JSON text (JSONL, JSON arrays) or an object (Parquet, datasets)."""

    line: int
    text: bytes | None
    obj: Any
    error: str | None = None
    keep_text: bool = True
    """Report ``text`` as the rejected row's raw text (else the parsed row, re-serialized on one line)."""


def _json_default(value: Any) -> Any:
    """Values Parquet can hold but JSON cannot: decimals as strings, bytes as base64."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"cannot write a {type(value).__name__} value as JSON")


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_json_default)


def _file_error(path: PathLike, message: str) -> DataError:
    """A problem with a whole file: the message starts with the file's name, so a user sees which one."""
    return DataError(f"{os.fspath(path)}: {message}", source=os.fspath(path))


def _input_kind(path: PathLike, file_format: str | None) -> str:
    if file_format is not None:
        kind = "jsonl" if file_format == "ndjson" else file_format
        if kind not in FILE_FORMATS:
            raise ConfigError(
                f"unknown file format {file_format!r}; expected one of {', '.join(FILE_FORMATS)}"
            )
        return kind
    if str(path).startswith("hf://"):
        return "hf"
    p = Path(path)
    if p.is_dir():
        return "hf-disk"
    suffix_kind = _SUFFIXES.get(p.suffix.lower())
    if suffix_kind is None:
        raise _file_error(
            path,
            f"cannot tell the file format from the suffix {p.suffix!r}; use .jsonl, .json or .parquet, "
            "a datasets folder or hf://owner/name",
        )
    return suffix_kind


def _output_kind(path: PathLike, file_format: str | None) -> str:
    kind = file_format if file_format is not None else _SUFFIXES.get(Path(path).suffix.lower())
    if kind == "ndjson":
        kind = "jsonl"
    if kind is None or kind not in _OUTPUT_FORMATS:
        raise ConfigError(f"cannot write {os.fspath(path)!r}: output must be .jsonl, .json or .parquet")
    return kind


def _import_pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise MissingExtra("Parquet files", "parquet") from None
    return pyarrow, pyarrow.parquet


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise MissingExtra("Hugging Face datasets", "datasets") from None
    return datasets


def _first_byte(path: Path) -> int | None:
    """The first non-space byte of a file (after a BOM), to tell a JSON array from JSON Lines."""
    with path.open("rb") as f:
        head = True
        while chunk := f.read(1 << 16):
            if head:
                chunk = chunk.removeprefix(_BOM)
                head = False
            stripped = chunk.lstrip(_WHITESPACE)
            if stripped:
                return stripped[0]
    return None


def read_examples(
    path: PathLike,
    *,
    fmt: str | None = None,
    file_format: str | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> Iterator[Item]:
    """Streams the rows of a dataset as ``Example`` or ``BadRow`` items, in file order.

    With ``fmt=None`` the format is detected on each row until one parses, then fixed: a row of another
    format is rejected rather than silently mixed in. ``offset`` skips rows (good or bad), ``limit`` stops
    after that many items. File-level problems (missing file, unknown suffix, missing extra, a JSON file
    that is neither an array nor JSON Lines) raise here, before the first row is read.
    """
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if offset < 0 or (limit is not None and limit < 0):
        raise ConfigError("offset and limit must not be negative")
    kind = _input_kind(path, file_format)
    rows: Iterator[_Raw]
    if kind == "hf":
        rows = _object_rows(_open_hub(str(path).removeprefix("hf://")))
    elif kind == "hf-disk":
        rows = _object_rows(_open_disk(Path(path)))
    else:
        p = Path(path)
        if not p.is_file():
            raise _file_error(path, "no such file")
        if kind == "parquet":
            rows = _parquet_rows(_open_parquet(p), offset)
            offset = 0
        elif kind == "jsonl":
            rows = _jsonl_rows(p)
        else:
            first = _first_byte(p)
            if first == ord("{"):
                _check_first_line(p)
                rows = _jsonl_rows(p)
            elif first is None or first == ord("["):
                rows = _array_rows(p)
            else:
                raise _file_error(path, "the top-level JSON value is not an array of rows")
    return _items(rows, fmt, offset, limit)


def _check_first_line(path: Path) -> None:
    """A ``.json`` file starting with ``{`` is read as JSON Lines only if its first line is a whole row."""
    with path.open("rb") as f:
        line = f.readline().removeprefix(_BOM)
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        raise _file_error(
            path,
            "not a JSON array and not JSON Lines: the file starts with an object that does not end on its "
            "first line (a single JSON object is not a dataset)",
        ) from None


def _items(rows: Iterator[_Raw], fmt: str | None, offset: int, limit: int | None) -> Iterator[Item]:
    if limit == 0:
        return
    index = 0
    skipped = 0
    for row in rows:
        if skipped < offset:
            skipped += 1
            continue
        item = _item(row, fmt, index)
        if fmt is None and isinstance(item, Example):
            fmt = item.fmt
        yield item
        index += 1
        if limit is not None and index >= limit:
            return


def _item(row: _Raw, fmt: str | None, index: int) -> Item:
    if row.error is not None:
        return BadRow(row.line, row.error, _decode(row.text or b""))
    obj = row.obj
    if row.text is not None:
        try:
            obj = orjson.loads(row.text)
        except orjson.JSONDecodeError:
            return BadRow(row.line, f"not valid JSON: {_json_error(row.text)}", _decode(row.text))
    try:
        return parse_example(obj, fmt, index=index, line=row.line)
    except DataError as e:
        if row.text is not None and row.keep_text:
            raw = _decode(row.text)
        else:
            raw = orjson.dumps(obj, default=str).decode()
        return BadRow(row.line, str(e), raw)


def _json_error(text: bytes) -> str:
    """orjson's message for the line without its newline, so positions read "line 1 column N"."""
    try:
        orjson.loads(text.rstrip(b"\r\n"))
    except orjson.JSONDecodeError as e:
        return str(e)
    return "invalid JSON"


def _decode(text: bytes) -> str:
    return text.decode("utf-8", errors="replace").rstrip("\r\n")


def _jsonl_rows(path: Path) -> Iterator[_Raw]:
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if number == 1:
                line = line.removeprefix(_BOM)
            if line.isspace() or not line:
                continue
            yield _Raw(number, line, None)


def _array_rows(path: Path) -> Iterator[_Raw]:
    with path.open("rb") as f:
        chunks = iter(lambda: f.read(_CHUNK_SIZE), b"")
        for number, (text, error) in enumerate(_scan_array(chunks), 1):
            yield _Raw(number, text, None, error, keep_text=False)


def _scan_array(chunks: Iterator[bytes]) -> Iterator[tuple[bytes, str | None]]:
    """Yields the text of each element of a top-level JSON array, holding one element in memory at a time.

    Only strings and bracket depth are tracked (regexes skip everything else in C), which is enough to
    find the commas that separate elements; validating an element is orjson's job. A broken
    end (truncated array, data after it) comes as a last element carrying its error, so the rows before
    it are still refined.
    """
    buf = b""
    for chunk in chunks:
        buf += chunk
        if _BOM.startswith(buf):
            continue
        buf = buf.removeprefix(_BOM).lstrip(_WHITESPACE)
        if buf:
            break
    buf = buf.removeprefix(_BOM).lstrip(_WHITESPACE)
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
                        yield buf[start : m.start()].strip(_WHITESPACE), None
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
            yield buf[start:].strip(_WHITESPACE), _TRUNCATED
            return
        buf = buf[start:] + chunk
        pos -= start
        start = 0


def _array_end(
    buf: bytes, start: int, pos: int, separated: bool, chunks: Iterator[bytes]
) -> Iterator[tuple[bytes, str | None]]:
    """The last element of an array closed at ``pos``, then a complaint if anything but space follows."""
    last = buf[start : pos - 1].strip(_WHITESPACE)
    if buf[pos - 1] != ord("]"):
        yield buf[start:pos].strip(_WHITESPACE), "malformed JSON array: unbalanced '}'"
        return
    if last or separated:
        yield last, None
    tail = buf[pos:].strip(_WHITESPACE)
    for chunk in chunks:
        if tail:
            break
        tail = chunk.strip(_WHITESPACE)
    if tail:
        yield tail[:200], _TRAILING


def _open_parquet(path: Path) -> Any:
    _, pq = _import_pyarrow()
    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError and others for unreadable files
        raise _file_error(path, f"not a readable Parquet file: {e}") from e


def _parquet_rows(pf: Any, offset: int) -> Iterator[_Raw]:
    """Rows of a Parquet file, 1024 at a time; whole batches before ``offset`` are never decoded."""
    line = 0
    for batch in pf.iter_batches(batch_size=_PARQUET_BATCH):
        skip = min(max(offset - line, 0), batch.num_rows)
        line += skip
        if skip == batch.num_rows:
            continue
        for row in batch.slice(skip).to_pylist():
            line += 1
            yield _Raw(line, None, row)


def _open_disk(path: Path) -> Any:
    """A folder written by ``Dataset.save_to_disk``; for a ``DatasetDict``, its train (or only) split."""
    if not ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
        raise _file_error(path, "a folder must be a dataset saved with datasets' save_to_disk")
    datasets = _import_datasets()
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if "train" in ds:
            return ds["train"]
        if len(splits) != 1:
            raise _file_error(path, f"the saved dataset has several splits and none is 'train': {splits}")
        return ds[splits[0]]
    return ds


def _open_hub(spec: str) -> Any:
    """``owner/name[:split]`` from the Hugging Face Hub, streamed so nothing is downloaded up front."""
    name, _, split = spec.partition(":")
    datasets = _import_datasets()
    return datasets.load_dataset(name, split=split or "train", streaming=True)


def _object_rows(rows: Iterable[Any]) -> Iterator[_Raw]:
    for number, row in enumerate(rows, 1):
        yield _Raw(number, None, row)


def parquet_schema(path: PathLike, *, file_format: str | None = None) -> Any:
    """The schema of a Parquet input (a pyarrow schema), or ``None`` for any other kind of input.

    Writing a Parquet output in the input's own row format with this schema keeps every column's type
    (``int32``, ``large_string``, an all-null list column ...) instead of re-inferring them from the rows.
    """
    try:
        if _input_kind(path, file_format) != "parquet" or not Path(path).is_file():
            return None
    except DataError:
        return None
    return _open_parquet(Path(path)).schema_arrow


def count_rows(path: PathLike, *, file_format: str | None = None) -> int | None:
    """A cheap row count for a progress bar, or ``None`` when only reading everything would tell.

    For JSON Lines it counts lines, so blank lines make it an upper bound. A JSON array is scanned
    (not parsed) when it is small enough to take a moment: up to ``_COUNT_ARRAY_BYTES``.
    """
    try:
        kind = _input_kind(path, file_format)
        p = Path(path)
        if kind == "jsonl" or (kind == "json" and _first_byte(p) == ord("{")):
            return _count_lines(p)
        if kind == "json" and p.stat().st_size <= _COUNT_ARRAY_BYTES:
            return sum(1 for _ in _array_rows(p))
        if kind == "parquet":
            return int(_open_parquet(p).metadata.num_rows)
        if kind == "hf-disk":
            return len(_open_disk(p))
    except (OSError, DataError, MissingExtra):
        return None
    return None


_COUNT_ARRAY_BYTES = 64 * 1024 * 1024


def _count_lines(path: Path) -> int:
    count = 0
    last = b""
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_SIZE):
            count += chunk.count(b"\n")
            last = chunk
    if last and not last.endswith(b"\n"):
        count += 1
    return count


def _fsync_dir(path: Path) -> None:
    """Makes a rename durable; some platforms cannot open folders, which is fine to ignore."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class OrderedWriter:
    """Writes output rows in input order while results complete in any order.

    ``submit(index, row)`` buffers a row until every earlier index is in (``None`` marks an index with no
    output row, e.g. a rejected one). Rows go to ``<path>.partial``; ``close()`` fsyncs it and renames it
    onto ``path`` atomically, ``abort()`` keeps the partial for inspection and never creates ``path``.
    Output is JSON Lines, a JSON array with one compact row per line, or Parquet, chosen by suffix.
    ``parquet_schema`` (a pyarrow schema, e.g. the input file's) fixes Parquet column types; otherwise
    the first rows decide them (see ``_ParquetSink``), and later rows that do not fit raise ``DataError``.
    """

    def __init__(self, path: PathLike, *, file_format: str | None = None, parquet_schema: Any = None) -> None:
        self.path = Path(path)
        self.partial_path = self.path.with_name(self.path.name + ".partial")
        self._kind = _output_kind(path, file_format)
        pyarrow = _import_pyarrow() if self._kind == "parquet" else None
        self._batch: list[dict[str, Any]] = []
        self._pending: dict[int, dict[str, Any] | None] = {}
        self._next = 0
        self._written = 0
        self._done = False
        self._last_flush = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[bytes] = self.partial_path.open("wb")
        if self._kind == "json":
            self._fh.write(b"[\n")
        self._parquet = (
            None if pyarrow is None else _ParquetSink(*pyarrow, self._fh, parquet_schema, self.path)
        )

    @property
    def written(self) -> int:
        """Rows written so far (to the partial file or a batch waiting for it)."""
        return self._written

    @property
    def buffered(self) -> int:
        """Items waiting for an earlier index."""
        return len(self._pending)

    def submit(self, index: int, row: dict[str, Any] | None) -> None:
        """Hands in the output for input item ``index`` (``None``: it produces no row)."""
        if self._done:
            raise RuntimeError(f"{self.path} is already closed")
        if index < self._next or index in self._pending:
            raise ValueError(f"index {index} was submitted twice")
        self._pending[index] = row
        while self._next in self._pending:
            ready = self._pending.pop(self._next)
            self._next += 1
            if ready is not None:
                self._write(ready)
        if time.monotonic() - self._last_flush >= _FLUSH_SECONDS:
            self.flush()

    def _write(self, row: dict[str, Any]) -> None:
        if self._kind == "jsonl":
            self._fh.write(orjson.dumps(row, default=_json_default, option=orjson.OPT_APPEND_NEWLINE))
        elif self._kind == "json":
            if self._written:
                self._fh.write(b",\n")
            self._fh.write(_dumps(row))
        else:
            self._batch.append(row)
            if len(self._batch) >= _PARQUET_BATCH:
                self._write_batch()
        self._written += 1

    def _write_batch(self, *, final: bool = False) -> None:
        assert self._parquet is not None
        rows, self._batch = self._batch, []
        self._parquet.add(rows, final=final)

    def flush(self) -> None:
        """Pushes written rows to the OS (Parquet rows reach the file a batch at a time)."""
        self._fh.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Finishes the file and moves it onto ``path``; raises if an index never arrived."""
        if self._done:
            return
        if self._pending:
            missing = self._next
            self.abort()
            raise RuntimeError(
                f"cannot finish {self.path}: index {missing} was never submitted "
                f"({len(self._pending)} later rows waiting); the partial file is kept"
            )
        try:
            if self._kind == "json":
                self._fh.write(b"\n]\n" if self._written else b"]\n")
            elif self._parquet is not None:
                self._write_batch(final=True)
                self._parquet.close()
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except BaseException:
            self.abort()
            raise
        self._fh.close()
        self._done = True
        os.replace(self.partial_path, self.path)
        _fsync_dir(self.path.parent)

    def abort(self) -> None:
        """Stops writing and keeps ``<path>.partial`` as it is; ``path`` is not created."""
        if self._done:
            return
        self._done = True
        if self._parquet is not None:
            with contextlib.suppress(Exception):
                self._parquet.close()
        self._fh.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _ParquetSink:
    """Row batches into one Parquet file, whose schema must be fixed when writing starts.

    Types are inferred from the rows, so a column that is null in every row seen so far would get the
    null type and reject the strings that come later; batches are therefore held (up to
    ``_PARQUET_HOLD``) until every column has a real type. A batch that adds columns or changes a type
    after writing started cannot be stored and raises ``DataError``.
    """

    def __init__(self, pa: Any, pq: Any, fh: IO[bytes], schema: Any, path: Path) -> None:
        self._pa = pa
        self._pq = pq
        self._fh = fh
        self._schema = schema
        self._fixed = schema is not None
        self._path = path
        self._writer: Any = None
        self._held: list[list[dict[str, Any]]] = []
        self._stored = 0

    def add(self, rows: list[dict[str, Any]], *, final: bool = False) -> None:
        if self._writer is not None:
            if rows:
                self._store(rows)
            return
        if rows:
            self._held.append(rows)
            if not self._fixed:
                self._schema = self._merge(rows)
        undecided = self._schema is None or any(_has_null(self._pa, f.type) for f in self._schema)
        if not final and not self._fixed and undecided and len(self._held) < _PARQUET_HOLD:
            return
        if self._schema is None:
            self._schema = self._pa.schema([])
        self._writer = self._pq.ParquetWriter(self._fh, self._schema)
        held, self._held = self._held, []
        for batch in held:
            self._store(batch)

    def _errors(self) -> tuple[type[Exception], ...]:
        return (self._pa.ArrowInvalid, self._pa.ArrowTypeError, self._pa.ArrowNotImplementedError)

    def _span(self, count: int) -> str:
        return f"output rows {self._stored + 1}..{self._stored + count}"

    def _merge(self, rows: list[dict[str, Any]]) -> Any:
        schema = self._pa.Table.from_pylist(rows).schema
        if self._schema is None:
            return schema
        try:
            return self._pa.unify_schemas([self._schema, schema], promote_options="permissive")
        except self._errors() as e:
            raise _file_error(self._path, f"{self._span(len(rows))} mix column types: {e}") from e

    def _store(self, rows: list[dict[str, Any]]) -> None:
        pa = self._pa
        table = pa.Table.from_pylist(rows)
        if self._fixed:
            table = self._given_schema(rows, table.schema)
        elif not table.schema.equals(self._schema):
            try:
                unified = pa.unify_schemas([self._schema, table.schema], promote_options="permissive")
                fits = unified.equals(self._schema)
                if fits:
                    table = pa.Table.from_pylist(rows, schema=self._schema)
            except self._errors() as e:
                raise _file_error(
                    self._path, f"{self._span(len(rows))} do not fit the Parquet schema: {e}"
                ) from e
            if not fits:
                raise _file_error(
                    self._path,
                    f"{self._span(len(rows))} do not fit the Parquet schema of the first rows "
                    f"(new or retyped columns: {_schema_diff(self._schema, unified)}); "
                    "write .jsonl instead or pass the input's schema",
                )
        self._writer.write_table(table)
        self._stored += len(rows)

    def _given_schema(self, rows: list[dict[str, Any]], inferred: Any) -> Any:
        """``rows`` as a table of the schema the caller gave: values are converted to its types (an
        ``int32`` column stays ``int32``), but a field it has no place for is an error, never dropped."""
        pa = self._pa
        unknown = _unknown_fields(pa, pa.struct(list(self._schema)), pa.struct(list(inferred)), "")
        if unknown:
            raise _file_error(
                self._path,
                f"{self._span(len(rows))} do not fit the given Parquet schema (fields it lacks: "
                f"{', '.join(unknown)}); write .jsonl instead",
            )
        try:
            return pa.Table.from_pylist(rows, schema=self._schema)
        except self._errors() as e:
            raise _file_error(
                self._path, f"{self._span(len(rows))} do not fit the Parquet schema: {e}"
            ) from e

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _is_list(pa: Any, dtype: Any) -> bool:
    return bool(
        pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype)
    )


def _unknown_fields(pa: Any, given: Any, inferred: Any, prefix: str) -> list[str]:
    """Struct fields of ``inferred`` (nested ones dotted) that ``given`` has no place for.

    Converting rows to a given schema silently drops such fields, so they must be found first. Other
    mismatches (a string where a number is expected) make the conversion itself fail.
    """
    if pa.types.is_struct(inferred) and pa.types.is_struct(given):
        known = {given.field(i).name: given.field(i).type for i in range(given.num_fields)}
        found: list[str] = []
        for i in range(inferred.num_fields):
            field = inferred.field(i)
            if field.name not in known:
                found.append(prefix + field.name)
            else:
                found += _unknown_fields(pa, known[field.name], field.type, f"{prefix}{field.name}.")
        return found
    if _is_list(pa, inferred) and _is_list(pa, given):
        return _unknown_fields(pa, given.value_type, inferred.value_type, f"{prefix.removesuffix('.')}[].")
    if pa.types.is_map(inferred) and pa.types.is_map(given):
        return _unknown_fields(pa, given.item_type, inferred.item_type, prefix)
    return []


def _has_null(pa: Any, dtype: Any) -> bool:
    """Whether a type is, or nests, Arrow's null type (what inference gives a column of only nulls)."""
    if pa.types.is_null(dtype):
        return True
    if pa.types.is_struct(dtype):
        return any(_has_null(pa, dtype.field(i).type) for i in range(dtype.num_fields))
    if pa.types.is_map(dtype):
        return _has_null(pa, dtype.key_type) or _has_null(pa, dtype.item_type)
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype):
        return _has_null(pa, dtype.value_type)
    return False


def _schema_diff(old: Any, new: Any) -> str:
    names = [f.name for f in new if old.get_field_index(f.name) < 0 or not old.field(f.name).equals(f)]
    return ", ".join(names) or "nested fields"


class JsonlAppender:
    """Appends one JSON object per line, flushed at once so a crash loses at most the line in flight.

    The file (and its folder) is created on the first line, so a run with nothing to record leaves none.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.count = 0
        self._fh: IO[bytes] | None = None

    def append(self, obj: Any) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("ab")
        self._fh.write(orjson.dumps(obj, default=_json_default, option=orjson.OPT_APPEND_NEWLINE))
        self._fh.flush()
        self.count += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class RejectsWriter:
    """The rejects file: ``{"line", "error", "raw"}`` per rejected row, created on the first one."""

    def __init__(self, path: PathLike) -> None:
        self._out = JsonlAppender(path)

    @property
    def path(self) -> Path:
        return self._out.path

    @property
    def count(self) -> int:
        """Rows written by this writer."""
        return self._out.count

    def write(self, row: BadRow) -> None:
        self._out.append({"line": row.line, "error": row.error, "raw": row.raw})

    def close(self) -> None:
        self._out.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
