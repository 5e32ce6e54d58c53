"""Atomic output files: every file a run writes goes to ``<path>.partial`` and is renamed into place
only when the run is complete, as one set.

``AtomicFile`` is the one partial-then-rename writer (created with ``O_EXCL | O_NOFOLLOW``, so a
planted link is never written through); ``RowWriter`` puts rows on it as JSON Lines, a JSON array
or Parquet. Rows arrive in order: putting results back in input order is the runner's job.

``commit`` moves a set of finished files into place. Before the first rename it writes a small
journal (``<output>.commit.json``, itself atomic) naming the set's generation and files; after the
last one it removes it. A crash between two renames leaves the journal, and ``recover`` (run by the
next run, under its lock, before anything else) finishes the renames, so the set on disk is never a
mix of two runs.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from coevol.errors import ConfigError
from coevol.io import jsonrow
from coevol.io.guard import fsync_dir, open_exclusive, os_error
from coevol.io.parquet import PARQUET_BATCH, ParquetSink, import_pyarrow

__all__ = [
    "OUTPUT_KINDS",
    "AtomicFile",
    "RowWriter",
    "commit",
    "output_kind",
    "partial_path",
    "recover",
    "write_whole",
]

OUTPUT_KINDS: tuple[str, ...] = ("jsonl", "json", "parquet")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}
_FLUSH_SECONDS = 1.0
_BUFFER = 1 << 16


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def output_kind(path: Path, file_format: str | None = None) -> str:
    """How rows are laid out in an output file, from ``file_format`` or the suffix."""
    kind = file_format if file_format is not None else _SUFFIXES.get(path.suffix.lower())
    if kind == "ndjson":
        kind = "jsonl"
    if kind is None or kind not in OUTPUT_KINDS:
        raise ConfigError(f"cannot write {os.fspath(path)!r}: output must be .jsonl, .json or .parquet")
    return kind


def write_whole(path: Path, data: bytes, partial: Path | None = None) -> None:
    """Write ``path`` whole or not at all: ``partial`` (default ``path.partial``) is written,
    synced and renamed into place; neither is ever written through a link."""
    partial = partial if partial is not None else partial_path(path)
    fd = open_exclusive(partial)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise os_error(path, exc) from None
    fsync_dir(path.parent if str(path.parent) else Path("."))


class AtomicFile:
    """Bytes to ``<path>.partial``; ``finish()`` makes them durable, ``commit`` renames them into place.

    ``abort()`` keeps the partial file for inspection and never touches ``path``. OS errors (disk
    full, permissions) come out as one-line ``OutputError``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = partial_path(path)
        self._fh: IO[bytes] = os.fdopen(open_exclusive(self.partial), "wb", buffering=_BUFFER)
        self.finished = False
        self.closed = False

    @property
    def fileobj(self) -> IO[bytes]:
        return self._fh

    def write(self, data: bytes) -> None:
        try:
            self._fh.write(data)
        except OSError as exc:
            raise os_error(self.partial, exc) from None

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as exc:
            raise os_error(self.partial, exc) from None

    def finish(self) -> None:
        """Flush and fsync the partial file and close it; it is then ready for ``commit``."""
        if self.finished:
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        except OSError as exc:
            self.abort()
            raise os_error(self.partial, exc) from None
        self.finished = self.closed = True

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(
                OSError
            ):  # a full disk may refuse the buffered tail: it is partial anyway
                self._fh.close()


class RowWriter:
    """Rows, in the order given, as JSON Lines, a JSON array (one compact row per line) or Parquet.

    ``parquet_schema`` (a pyarrow schema, e.g. the input file's) fixes Parquet column types;
    otherwise the first rows decide them. ``keep_empty=False``: a writer that got no row leaves no
    file (``commit`` removes the final path instead), as for the rejects file.
    """

    def __init__(
        self,
        path: Path,
        *,
        file_format: str | None = None,
        parquet_schema: Any = None,
        keep_empty: bool = True,
    ) -> None:
        self.path = Path(path)
        self.keep_empty = keep_empty
        self._kind = output_kind(self.path, file_format)
        pyarrow = import_pyarrow() if self._kind == "parquet" else None
        self.file = AtomicFile(self.path)
        self.written = 0
        self._batch: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        if self._kind == "json":
            self.file.write(b"[\n")
        self._parquet = (
            None if pyarrow is None else ParquetSink(*pyarrow, self.file.fileobj, parquet_schema, self.path)
        )

    def write_encoded(self, line: bytes) -> None:
        """A row already encoded as one line of compact JSON (a JSON Lines file only): the trace,
        whose records encode themselves faster than a dict goes through ``jsonrow.dumps``."""
        if self._kind != "jsonl":
            raise ValueError(f"write_encoded writes JSON Lines, not {self._kind}")
        self.file.write(line + b"\n")
        self._counted()

    def write(self, row: Any) -> None:
        if self._kind == "jsonl":
            self.file.write(jsonrow.dumps(row) + b"\n")
        elif self._kind == "json":
            self.file.write((b",\n" if self.written else b"") + jsonrow.dumps(row))
        else:
            self._batch.append(row)
            if len(self._batch) >= PARQUET_BATCH:
                self._write_batch()
        self._counted()

    def _counted(self) -> None:
        """One more row; flush now and then so a reader of the partial file sees recent rows."""
        self.written += 1
        if time.monotonic() - self._last_flush >= _FLUSH_SECONDS:
            self.file.flush()
            self._last_flush = time.monotonic()

    def _write_batch(self, *, final: bool = False) -> None:
        assert self._parquet is not None
        rows, self._batch = self._batch, []
        try:
            self._parquet.add(rows, final=final)
        except OSError as exc:
            raise os_error(self.file.partial, exc) from None

    def finish(self) -> None:
        """Write the file's end and make it durable (``commit`` moves it into place)."""
        if self.file.finished:
            return
        try:
            if self._kind == "json":
                self.file.write(b"\n]\n" if self.written else b"]\n")
            elif self._parquet is not None:
                self._write_batch(final=True)
                self._parquet.close()
        except BaseException:
            self.abort()
            raise
        self.file.finish()

    def abort(self) -> None:
        if self._parquet is not None:
            with contextlib.suppress(Exception):
                self._parquet.close()
        self.file.abort()

    def close(self) -> None:
        """``finish`` and ``commit`` this one file (for a writer used on its own)."""
        self.finish()
        commit([self])

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


Committable = AtomicFile | RowWriter


def _atomic(writer: Committable) -> AtomicFile:
    return writer.file if isinstance(writer, RowWriter) else writer


def commit(
    writers: Sequence[Committable], *, remove: Sequence[Path] = (), journal: Path | None = None
) -> None:
    """Move every finished writer's partial file onto its path, and delete ``remove``, as one set.

    With a ``journal``, a crash part-way leaves it naming the set, for ``recover``.
    """
    for writer in writers:
        writer.finish()
    renames: list[Path] = []
    removals = list(remove)
    for writer in writers:
        if isinstance(writer, RowWriter) and not writer.keep_empty and writer.written == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(writer.file.partial)
            removals.append(writer.path)
        else:
            renames.append(_atomic(writer).path)
    if journal is not None:
        _write_journal(journal, renames, removals)
    _apply(renames, removals)
    if journal is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(journal)
        fsync_dir(journal.parent)


def _write_journal(journal: Path, renames: list[Path], removals: list[Path]) -> None:
    record = {
        "generation": uuid.uuid4().hex,
        "created": time.time(),
        "rename": [p.name for p in renames],
        "remove": [p.name for p in removals],
    }
    file = AtomicFile(journal)
    file.write(orjson.dumps(record) + b"\n")
    file.finish()
    _apply([journal], [])


def _apply(renames: Sequence[Path], removals: Sequence[Path]) -> None:
    folders = set()
    for path in renames:
        try:
            os.replace(partial_path(path), path)
        except OSError as exc:
            raise os_error(path, exc, "rename into") from None
        folders.add(path.parent)
    for path in removals:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        folders.add(path.parent)
    for folder in folders:
        fsync_dir(folder)


def _is_file(path: Path) -> bool:
    """A regular file at that very name (a link there is not ours)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def recover(journal: Path, allowed: Sequence[Path]) -> bool:
    """Finish the renames a crashed ``commit`` left (only of ``allowed`` names); True if it had to.

    The journal is written only once every partial file of its set is durable, so completing its
    renames gives the whole new set. Names outside ``allowed`` are ignored: the journal is a file
    on disk and never gets to rename anything else.
    """
    try:
        record = orjson.loads(journal.read_bytes())
    except FileNotFoundError:
        return False
    except (OSError, orjson.JSONDecodeError):
        record = {}
    by_name = {p.name: p for p in allowed if p.parent == journal.parent}
    names = record.get("rename") if isinstance(record, dict) else None
    gone = record.get("remove") if isinstance(record, dict) else None
    renames = [by_name[n] for n in names or [] if isinstance(n, str) and n in by_name]
    removals = [by_name[n] for n in gone or [] if isinstance(n, str) and n in by_name]
    _apply([p for p in renames if _is_file(partial_path(p))], removals)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(journal)
    fsync_dir(journal.parent)
    return True
