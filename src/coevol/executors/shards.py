"""A run split into shards, and the merge of the shards' files into the one output a local run writes.

A shard is an ``offset``/``limit`` slice of the input, run by ``arefine_file`` into its own output
under the work directory, with its own store beside it (SQLite is never shared between hosts) and a
completion marker once its files are committed. The plan (how many rows per shard) is written to
the work directory on the first run and reused by every rerun, so a shard always names the same
rows and resumes from its own store.

The merge concatenates the shards' files in input order: the output (JSON Lines, a JSON array or
Parquet), the trace (each record's ``index`` shifted from its shard's numbering to the run's), the
rejects and the pairs, then writes the LLaMA-Factory entry; the whole set is committed at once,
exactly as a local run commits its files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from coevol.engine.runner import RunPaths
from coevol.errors import OutputError
from coevol.io.formats import dataset_info_entry
from coevol.io.readers import count_rows, parquet_schema, read_examples
from coevol.io.writers import AtomicFile, RowWriter, commit, output_kind, write_whole

__all__ = ["Shard", "ShardPlan", "done_marker", "merge_shards", "plan_shards", "shard_sizes"]

PLAN_SCHEMA = "coevol.shards/1"
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


def _count(input: Path, input_format: str | None, offset: int, limit: int | None) -> int:
    total = count_rows(input)
    if total is None:  # only reading tells: read once (no model call is made)
        total = offset + sum(1 for _ in read_examples(input, fmt=input_format, offset=offset))
    total = max(0, total - offset)
    return min(total, limit) if limit is not None else total


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
    """The shards of this run: the work directory's plan when there is one, else a new one (written)."""
    plan_file = work_dir / "plan.json"
    what = {"input": str(input), "output": str(output), "offset": offset, "limit": limit}
    if plan_file.exists():
        try:
            saved = orjson.loads(plan_file.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise OutputError(
                f"{plan_file}: unreadable shard plan ({exc}); remove it to plan again"
            ) from None
        if not isinstance(saved, dict) or saved.get("schema") != PLAN_SCHEMA or saved.get("run") != what:
            raise OutputError(
                f"{work_dir} holds the shards of another run (input, output, --offset or --limit "
                "differ); name another --work-dir, or remove it"
            )
        rows, size = int(saved["rows"]), int(saved["shard_rows"])
    else:
        rows = _count(input, input_format, offset, limit)
        size = shard_rows or max(1, math.ceil(rows / max(1, 4 * workers)))
        write_whole(
            plan_file, orjson.dumps({"schema": PLAN_SCHEMA, "run": what, "rows": rows, "shard_rows": size})
        )
    suffix = "".join(output.suffixes[-1:]) or ".jsonl"
    shards = tuple(
        Shard(
            i,
            offset + start,
            n,
            start,
            work_dir / f"shard-{i:05d}{suffix}",
            work_dir / f"shard-{i:05d}.pairs{pairs.suffix or '.jsonl'}" if pairs is not None else None,
        )
        for i, (start, n) in enumerate(shard_sizes(rows, size))
    )
    return ShardPlan(rows, size, shards)


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
            for line in _lines(s.paths.trace):
                trace.write(_reindexed(line, s.start, s.paths.trace))
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
