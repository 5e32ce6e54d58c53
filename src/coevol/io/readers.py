"""Reading datasets row by row with flat memory: format detection and the readers.

Inputs (JSONL, JSON arrays, Parquet, ``datasets`` folders, Hub ids) are read row by row and turned
into ``Example`` or ``BadRow`` items, so a bad row is reported instead of stopping the run. JSON rows
are parsed exactly (``coevol.io.jsonrow``): big numbers, key order and unicode come back as written,
and a duplicate key or a row nested too deep is a bad row.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from coevol.domain import BadRow, Example
from coevol.errors import ConfigError, DataError, MissingExtra
from coevol.io import jsonrow
from coevol.io.formats import FORMATS, parse_example
from coevol.io.guard import file_error
from coevol.io.hub import open_hub_rows, parse_hub
from coevol.io.jsonarray import BOM, WHITESPACE, scan_array
from coevol.io.parquet import PARQUET_BATCH, import_pyarrow

__all__ = [
    "FILE_FORMATS",
    "count_rows",
    "guess_encoding",
    "hub_id",
    "parquet_schema",
    "read_examples",
    "require_usable_row",
]

FILE_FORMATS: tuple[str, ...] = ("jsonl", "json", "parquet", "hf-disk", "hf")
"""Input kinds: JSON Lines, a JSON array, Parquet, a ``save_to_disk`` folder, a Hub id (``hf://``)."""

_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}
_CHUNK_SIZE = 1 << 20

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


def hub_id(path: PathLike) -> str | None:
    """The Hub dataset ``path`` names (``hf://datasets/OWNER/NAME@REV:SPLIT``), else ``None``."""
    spec = parse_hub(path)
    return None if spec is None else str(spec)


def _input_kind(path: PathLike, file_format: str | None) -> str:
    if file_format is not None:
        kind = "jsonl" if file_format == "ndjson" else file_format
        if kind not in FILE_FORMATS:
            raise ConfigError(
                f"unknown file format {file_format!r}; expected one of {', '.join(FILE_FORMATS)}"
            )
        return kind
    if hub_id(path) is not None:
        return "hf"
    p = Path(path)
    if p.is_dir():
        return "hf-disk"
    suffix_kind = _SUFFIXES.get(p.suffix.lower())
    if suffix_kind is None:
        raise file_error(
            path,
            f"cannot tell the file format from the suffix {p.suffix!r}; use .jsonl, .json or .parquet, "
            "a datasets folder or hf://datasets/OWNER/NAME",
        )
    return suffix_kind


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
                chunk = chunk.removeprefix(BOM)
                head = False
            stripped = chunk.lstrip(WHITESPACE)
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
        spec = parse_hub(path)
        assert spec is not None
        rows = _object_rows(open_hub_rows(spec))
    elif kind == "hf-disk":
        rows = _object_rows(_open_disk(Path(path)))
    else:
        p = Path(path)
        if not p.is_file():
            raise file_error(path, "no such file")
        if kind != "parquet":
            _check_encoding(p)
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
                raise file_error(path, "the top-level JSON value is not an array of rows")
    return _items(rows, fmt, offset, limit)


_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian, with a byte order mark)"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian, with a byte order mark)"),
    (b"\xff\xfe", "UTF-16 (little-endian, with a byte order mark)"),
    (b"\xfe\xff", "UTF-16 (big-endian, with a byte order mark)"),
)
_SNIFF = 4096


def guess_encoding(head: bytes) -> str | None:
    """The name of a text encoding that is not UTF-8, told from a file's first bytes; None when
    they read as UTF-8. Pure. UTF-16/32 by byte order mark or by where the NUL bytes of ASCII text
    fall; other bytes that are not UTF-8 as the usual single-byte code pages."""
    for bom, name in _WIDE_BOMS:
        if head.startswith(bom):
            return name
    sample = head[:_SNIFF]
    if sample.count(0) * 4 >= len(sample) > 0:
        quarters = [sample[i::4].count(0) for i in range(4)]
        halves = [sample[i::2].count(0) for i in range(2)]
        if min(quarters[1:]) * 4 >= len(sample[1::4]) * 3 and quarters[0] < len(sample[::4]) // 2:
            return "UTF-32 (little-endian)"
        if min(quarters[:3]) * 4 >= len(sample[::4]) * 3 and quarters[3] < len(sample[3::4]) // 2:
            return "UTF-32 (big-endian)"
        return "UTF-16 (little-endian)" if halves[1] > halves[0] else "UTF-16 (big-endian)"
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(sample, final=len(head) <= _SNIFF)
    except UnicodeDecodeError:
        if any(0x80 <= b <= 0x9F for b in sample):
            return "a single-byte code page such as Windows-1252, not UTF-8"
        return "a single-byte code page such as Latin-1 (ISO-8859-1), not UTF-8"
    return None


def _check_encoding(path: Path) -> None:
    """Refuse a UTF-16 or UTF-32 file at once: none of its lines could ever parse."""
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF + 1)
    except OSError:
        return  # the reader itself reports it
    name = guess_encoding(head)
    if name is not None and name.startswith("UTF-"):
        raise file_error(
            path,
            f"the file is {name}; coevol reads UTF-8. Convert it first, e.g. "
            f"iconv -f {name.split()[0].rstrip(',')} -t UTF-8 IN > OUT",
        )


def require_usable_row(
    path: PathLike,
    *,
    fmt: str | None = None,
    file_format: str | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> None:
    """Refuse, before anything is created or sent, an input in which not one row can be refined
    (an empty file, a pretty-printed JSON array named ``.jsonl``, one object holding the rows, a
    wrong encoding ...): say what was found. Reading stops at the first usable row."""
    if limit == 0 or hub_id(path) is not None:
        return
    count = 0
    first: BadRow | None = None
    for item in read_examples(path, fmt=fmt, offset=offset, limit=limit):
        if isinstance(item, Example):
            return
        count += 1
        first = first or item
    raise file_error(path, _no_usable_row(Path(path), count, first, offset))


def _no_usable_row(path: Path, count: int, first: BadRow | None, offset: int) -> str:
    if first is None:
        if offset:
            return f"no row at or after --offset {offset}: nothing to refine"
        if path.is_file() and path.stat().st_size == 0:
            return "the file is empty: nothing to refine"
        return "the file holds no rows: nothing to refine"
    found = f"no usable row: all {count} rows were rejected (the first, line {first.line}: {first.error})"
    hint = _shape_hint(path)
    return f"{found}. {hint}" if hint else found


def _shape_hint(path: Path) -> str:
    """What the file looks like when it is not a list of rows (for the no-usable-row message)."""
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF + 1)
    except OSError:
        return ""
    encoding = guess_encoding(head)
    if encoding is not None:
        return f"The file looks like {encoding}: convert it to UTF-8"
    start = head.removeprefix(BOM).lstrip(WHITESPACE)
    if start.startswith(b"[") and path.suffix.lower() in (".jsonl", ".ndjson"):
        return "It looks like a JSON array: name the file .json (or pass --input-format json)"
    if start.startswith(b"{") and re.match(rb'\{\s*"[^"]{1,100}"\s*:\s*\[', start):
        return (
            "It looks like one JSON object holding the rows under a key: give the rows themselves "
            "(e.g. jq '.KEY' FILE > rows.json)"
        )
    return ""


def _check_first_line(path: Path) -> None:
    """A ``.json`` file starting with ``{`` is read as JSON Lines only if its first line is a whole row."""
    with path.open("rb") as f:
        line = f.readline().removeprefix(BOM)
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        raise file_error(
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
    try:
        if row.text is not None:
            obj = jsonrow.loads_row(row.text)
        else:
            jsonrow.check_depth(obj)
    except jsonrow.RowJSONError as e:
        raw = _decode(row.text) if row.text is not None else _raw_text(obj)
        return BadRow(row.line, str(e), raw)
    try:
        return parse_example(obj, fmt, index=index, line=row.line)
    except DataError as e:
        raw = _decode(row.text) if row.text is not None and row.keep_text else _raw_text(obj)
        return BadRow(row.line, str(e), raw)


def _raw_text(obj: Any) -> str:
    """A parsed row on one line, for the rejects file (exact where JSON can be, else best effort)."""
    try:
        return jsonrow.dumps(obj).decode("utf-8", errors="replace")
    except (TypeError, ValueError, RecursionError):
        return f"<a {type(obj).__name__} that cannot be written as JSON>"


def _decode(text: bytes) -> str:
    return text.decode("utf-8", errors="replace").rstrip("\r\n")


def _jsonl_rows(path: Path) -> Iterator[_Raw]:
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if number == 1:
                line = line.removeprefix(BOM)
            if line.isspace() or not line:
                continue
            yield _Raw(number, line, None)


def _array_rows(path: Path) -> Iterator[_Raw]:
    with path.open("rb") as f:
        chunks = iter(lambda: f.read(_CHUNK_SIZE), b"")
        for number, (text, error) in enumerate(scan_array(chunks), 1):
            yield _Raw(number, text, None, error, keep_text=False)


def _open_parquet(path: Path) -> Any:
    _, pq = import_pyarrow()
    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError and others for unreadable files
        raise file_error(path, f"not a readable Parquet file: {e}") from e


def _parquet_rows(pf: Any, offset: int) -> Iterator[_Raw]:
    """Rows of a Parquet file, 1024 at a time; whole batches before ``offset`` are never decoded."""
    line = 0
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH):
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
        raise file_error(path, "a folder must be a dataset saved with datasets' save_to_disk")
    datasets = _import_datasets()
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if "train" in ds:
            return ds["train"]
        if len(splits) != 1:
            raise file_error(path, f"the saved dataset has several splits and none is 'train': {splits}")
        return ds[splits[0]]
    return ds


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
