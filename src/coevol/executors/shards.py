"""A run split into shards, and the merge of the shards' files into the one output a local run writes.

A shard is an ``offset``/``limit`` slice of the input, run by ``arefine_file`` into its own output
under the work directory, with its own store beside it (SQLite is never shared between hosts) and a
completion marker once its files are committed. The plan (which run, how many rows per shard) is
written to the work directory on the first run and reused by every rerun, so a shard always names
the same positions and resumes from its own store; a work directory holding another run's plan is
refused. Each shard carries the digest of the rows it was planned from (read again on every run),
and its marker counts only for those exact rows: an edited, cut or extended input redoes the shards
whose rows changed (their unchanged rows replay from the shard's store). Before the merge, every
shard's files are parsed and counted (``verify_shard``), so a truncated or tampered shard is redone,
never merged.

The merge concatenates the shards' files in input order: the output (JSON Lines, a JSON array or
Parquet), the trace (each record's ``index`` shifted from its shard's numbering to the run's), the
rejects and the pairs, then writes the LLaMA-Factory entry; the whole set is committed at once,
exactly as a local run commits its files.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from coevol.domain import Example
from coevol.engine.runner import RunPaths
from coevol.errors import OutputError
from coevol.io import jsonrow
from coevol.io.formats import dataset_info_entry
from coevol.io.readers import parquet_schema, read_examples
from coevol.io.tracefile import trace_lines
from coevol.io.writers import AtomicFile, RowWriter, commit, output_kind, write_whole

__all__ = [
    "Shard",
    "ShardPlan",
    "done_marker",
    "merge_shards",
    "plan_shards",
    "row_digests",
    "shard_sizes",
    "verify_shard",
]

PLAN_SCHEMA = "coevol.shards/2"
_OLD_PLAN_SCHEMA = "coevol.shards/1"  # 0.2's plan: its shards are reused, their markers never match
_INDEX = re.compile(rb'^(\{"schema":"[^"]*","index":)(\d+)')


@dataclass(frozen=True, slots=True)
class Shard:
    """Rows ``offset .. offset+limit`` of the input, run into ``output`` (position = ``number``)."""

    number: int
    offset: int  # in the input file (the run's own --offset included)
    limit: int
    start: int  # the first row's position in the run (for the trace's index)
    output: Path
    pairs: Path | None
    digest: str = ""  # of the rows it was planned from: its marker counts only for these

    @property
    def paths(self) -> RunPaths:
        return RunPaths.beside(Path(), self.output, self.pairs)


@dataclass(frozen=True, slots=True)
class ShardPlan:
    rows: int
    shard_rows: int
    shards: tuple[Shard, ...]


def shard_sizes(rows: int, shard_rows: int) -> list[tuple[int, int]]:
    """``(start, size)`` of each shard of ``rows`` rows. Pure."""
    if shard_rows < 1:
        raise ValueError("shard_rows must be at least 1")
    return [(s, min(shard_rows, rows - s)) for s in range(0, rows, shard_rows)]


def done_marker(shard: Shard) -> Path:
    return shard.output.with_name(shard.output.name + ".done")


def row_digests(
    input: Path, input_format: str | None, offset: int, limit: int | None, shard_rows: int | None
) -> tuple[int, list[str]]:
    """The run's row count and, per ``shard_rows`` rows, the digest of their content (line numbers,
    parsed rows, rejected rows' text): one streaming read, no model call. With ``shard_rows`` None,
    the count only."""
    rows = 0
    digests: list[str] = []
    h = hashlib.sha256()
    for item in read_examples(input, fmt=input_format, offset=offset, limit=limit):
        if shard_rows is not None:
            if isinstance(item, Example):
                h.update(b"E%d\0%s\0" % (item.line, item.fmt.encode()) + jsonrow.canonical(item.raw))
            else:
                h.update(b"B%d\0%s\0%s" % (item.line, item.error.encode(), item.raw.encode()))
            h.update(b"\n")
        rows += 1
        if shard_rows is not None and rows % shard_rows == 0:
            digests.append(h.hexdigest())
            h = hashlib.sha256()
    if shard_rows is not None and rows % shard_rows:
        digests.append(h.hexdigest())
    return rows, digests


def _identity(
    input: Path, output: Path, pairs: Path | None, offset: int, limit: int | None
) -> dict[str, Any]:
    """What makes a run this run: absolute names, so two projects' ``out.jsonl`` never match."""
    return {
        "input": os.path.abspath(input),
        "output": os.path.abspath(output),
        "pairs": os.path.abspath(pairs) if pairs is not None else None,
        "offset": offset,
        "limit": limit,
    }


def _saved_size(plan_file: Path, what: dict[str, Any], old: dict[str, Any], work_dir: Path) -> int | None:
    """The shard size of the work directory's plan for this run; None when there is none."""
    if not plan_file.exists():
        return None
    try:
        saved = orjson.loads(plan_file.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise OutputError(f"{plan_file}: unreadable shard plan ({exc}); remove it to plan again") from None
    ours = isinstance(saved, dict) and (
        (saved.get("schema") == PLAN_SCHEMA and saved.get("run") == what)
        or (saved.get("schema") == _OLD_PLAN_SCHEMA and saved.get("run") == old)
    )
    if not ours:
        raise OutputError(
            f"{work_dir} holds the shards of another run (input, output, --pairs, --offset or --limit "
            "differ); name another --work-dir, or remove it"
        )
    size = saved.get("shard_rows")
    if not isinstance(size, int) or size < 1:
        raise OutputError(f"{plan_file}: unreadable shard plan (no shard size); remove it to plan again")
    return size


def plan_shards(
    input: Path,
    output: Path,
    work_dir: Path,
    *,
    pairs: Path | None,
    input_format: str | None,
    offset: int,
    limit: int | None,
    shard_rows: int | None,
    workers: int,
) -> ShardPlan:
    """The shards of this run: the work directory's shard size when it has this run's plan, else a
    new plan (written); the rows and their digests are read from the input as it is now."""
    plan_file = work_dir / "plan.json"
    what = _identity(input, output, pairs, offset, limit)
    old = {"input": str(input), "output": str(output), "offset": offset, "limit": limit}
    size = _saved_size(plan_file, what, old, work_dir)
    if size is None:
        rows, _ = row_digests(input, input_format, offset, limit, None)
        size = shard_rows or max(1, math.ceil(rows / max(1, 4 * workers)))
    rows, digests = row_digests(input, input_format, offset, limit, size)
    write_whole(plan_file, orjson.dumps({"schema": PLAN_SCHEMA, "run": what, "shard_rows": size}))
    suffix = "".join(output.suffixes[-1:]) or ".jsonl"
    shards = tuple(
        Shard(
            i,
            offset + start,
            n,
            start,
            work_dir / f"shard-{i:05d}{suffix}",
            work_dir / f"shard-{i:05d}.pairs{pairs.suffix or '.jsonl'}" if pairs is not None else None,
            digests[i],
        )
        for i, (start, n) in enumerate(shard_sizes(rows, size))
    )
    return ShardPlan(rows, size, shards)


# --- checking a shard ----------------------------------------------------------------------------


def _json_lines(path: Path) -> int:
    """Rows of a JSON Lines file coevol wrote: every line must parse (a cut-off last line does not)."""
    count = 0
    with path.open("rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                raise ValueError(f"{path.name}: its last line is cut off")
            orjson.loads(line)
            count += 1
    return count


def _row_count(path: Path) -> int:
    kind = output_kind(path)
    if kind == "jsonl":
        return _json_lines(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    rows = orjson.loads(path.read_bytes())
    if not isinstance(rows, list):
        raise ValueError(f"{path.name}: not a JSON array")
    return len(rows)


def _trace_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as fh:
        for line in fh:
            if _INDEX.match(line) is None or not line.endswith(b"\n"):
                raise ValueError(f"{path.name}: line {count + 1} is not a coevol trace record")
            orjson.loads(line)
            count += 1
    return count


def verify_shard(shard: Shard) -> str | None:
    """Why the shard's files cannot be merged (cut off, unparseable, rows missing), or None.

    Every row of the shard is in its output (kept, refined or failed) or only in its rejects file (a
    row that did not parse); the trace has one record per output row.
    """
    paths = shard.paths
    try:
        rows = _row_count(shard.output)
        traced = _trace_lines(paths.trace)
        rejected = _json_lines(paths.rejects) if paths.rejects.exists() else 0
        if shard.pairs is not None and shard.pairs.exists():
            _row_count(shard.pairs)
    except FileNotFoundError as exc:
        return f"{Path(exc.filename or '?').name} is missing"
    except Exception as exc:  # orjson, pyarrow and OS errors alike mean "redo it"
        return f"{type(exc).__name__}: {exc}"
    if traced != rows:
        return f"its trace has {traced} records for {rows} output rows"
    if not rows <= shard.limit <= rows + rejected:
        return f"it holds {rows} rows and {rejected} rejected for {shard.limit} planned"
    return None


# --- the merge ---------------------------------------------------------------------------------


def _lines(path: Path) -> Iterator[bytes]:
    if not path.exists():
        return
    with path.open("rb") as fh:
        yield from fh


def _json_rows(path: Path) -> Iterator[bytes]:
    """The rows of a JSON array as coevol writes it: ``[``, rows joined by ``,\\n``, ``]``."""
    data = path.read_bytes()
    body = data[2:-3] if data.startswith(b"[\n") and data.endswith(b"\n]\n") else b""
    if body:
        yield from body.split(b",\n")


def _reindexed(line: bytes, start: int, where: Path) -> bytes:
    match = _INDEX.match(line)
    if match is None:
        raise OutputError(f"{where}: not a coevol trace record; rerun to rewrite the shard")
    return match.group(1) + str(int(match.group(2)) + start).encode() + line[match.end() :]


def _merge_trace(trace: AtomicFile, shard: Shard) -> None:
    """The shard's trace lines, read by the one trace reader, re-indexed byte for byte."""
    if not shard.paths.trace.exists():
        return
    for number, line in trace_lines(shard.paths.trace):
        if line is None:
            raise OutputError(f"{shard.paths.trace} line {number}: too long; rerun to rewrite the shard")
        trace.write(_reindexed(line, shard.start, shard.paths.trace) + b"\n")


def _merge_rows(final: Path, parts: Sequence[Path], parquet_input: Path | None) -> AtomicFile | RowWriter:
    """The shards' rows into one file of ``final``'s kind, byte for byte as one writer would."""
    kind = output_kind(final)
    if kind == "parquet":
        import pyarrow.parquet as pq

        writer = RowWriter(final, parquet_schema=parquet_schema(parquet_input) if parquet_input else None)
        for part in parts:
            for row in pq.read_table(part).to_pylist():
                writer.write(row)
        return writer
    out = AtomicFile(final)
    if kind == "jsonl":
        for part in parts:
            for line in _lines(part):
                out.write(line)
        return out
    rows = [row for part in parts for row in _json_rows(part)]
    out.write(b"[\n" + b",\n".join(rows) + (b"\n]\n" if rows else b"]\n"))
    return out


def _entry(shards: Sequence[Shard], output: Path) -> dict[str, Any] | None:
    """The LLaMA-Factory entry for the merged output, from the shards' own entries."""
    fmt: str | None = None
    present: set[str] = set()
    for shard in shards:
        info = shard.paths.dataset_info
        if not info.exists():
            continue
        (entry,) = orjson.loads(info.read_bytes()).values()
        columns = entry.get("columns", {})
        present.update(columns.values())
        if entry.get("formatting") == "alpaca":
            fmt = "alpaca"
        elif fmt is None:
            fmt = "sharegpt" if columns.get("messages") == "conversations" else "messages"
    if fmt is None:
        return None
    return dataset_info_entry(output.stem, output.name, fmt, present=present)


def merge_shards(shards: Sequence[Shard], paths: RunPaths, *, parquet_input: Path | None) -> Path | None:
    """Write the run's output, trace, rejects, pairs and entry from the shards; commit them as a set."""
    files: list[AtomicFile | RowWriter] = []
    try:
        files.append(_merge_rows(paths.output, [s.output for s in shards], parquet_input))
        trace = AtomicFile(paths.trace)
        files.append(trace)
        for s in shards:
            _merge_trace(trace, s)
        remove: list[Path] = []
        rejects = [line for s in shards for line in _lines(s.paths.rejects)]
        if rejects:
            files.append(AtomicFile(paths.rejects))
            files[-1].write(b"".join(rejects))
        else:
            remove.append(paths.rejects)
        if paths.pairs is not None:
            files.append(_merge_rows(paths.pairs, [s.pairs for s in shards if s.pairs is not None], None))
        entry = _entry(shards, paths.output)
        if entry is not None:
            info = AtomicFile(paths.dataset_info)
            info.write(orjson.dumps(entry, option=orjson.OPT_INDENT_2) + b"\n")
            files.append(info)
        else:
            remove.append(paths.dataset_info)
        commit(files, remove=remove, journal=paths.journal)
    except BaseException:
        for f in files:
            f.abort()
        raise
    return paths.dataset_info if entry is not None else None
