"""Read a run's files for the report: the trace (streamed), the rejects file, the store.

This is the report's I/O boundary: OS and sqlite errors become ``coevol.errors`` here, and every
trace line goes through ``TraceRecord.from_dict``. A run that was interrupted has only its
``.partial`` trace; that is read instead, and a cut-off last line is counted, not fatal.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from coevol.domain import SCHEMA, TraceRecord, TraceSchemaError
from coevol.errors import DataError

__all__ = ["RunFiles", "SampleSelection", "StoreFacts", "count_lines", "read_store", "read_trace"]


@dataclass(frozen=True, slots=True)
class RunFiles:
    """The files of one run beside its output (the runner's naming)."""

    output: Path
    trace: Path
    rejects: Path
    store: Path

    @classmethod
    def beside(cls, output: Path) -> RunFiles:
        def side(suffix: str) -> Path:
            return output.with_name(output.name + suffix)

        trace = side(".trace.jsonl")
        if not trace.exists() and side(".trace.jsonl.partial").exists():
            trace = side(".trace.jsonl.partial")
        return cls(output, trace, side(".rejects.jsonl"), side(".coevol.db"))

    @property
    def interrupted(self) -> bool:
        return self.trace.name.endswith(".partial")


@dataclass(slots=True)
class TraceReadStats:
    """Lines that could not be used, so the report can say so instead of hiding them."""

    lines: int = 0
    unreadable: int = 0
    first_error: str | None = None


def read_trace(path: Path, stats: TraceReadStats) -> Iterator[TraceRecord]:
    """Every record of the trace, streamed. A line that is not JSON or not a record is counted
    in ``stats`` and skipped; a record of another schema version stops the read (it is refused,
    never guessed at)."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise DataError(f"cannot read the trace {path}: {exc.strerror}") from None
    with f:
        try:
            for raw in f:
                if not raw.strip():
                    continue
                stats.lines += 1
                try:
                    data = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    _bad(stats, f"line {stats.lines}: not JSON ({exc})")
                    continue
                try:
                    yield TraceRecord.from_dict(data)
                except TraceSchemaError as exc:
                    if isinstance(data, dict) and data.get("schema") != SCHEMA:
                        raise DataError(f"{path}: {exc}") from None
                    _bad(stats, f"line {stats.lines}: {exc}")
        except OSError as exc:
            raise DataError(f"cannot read the trace {path}: {exc.strerror}") from None


def _bad(stats: TraceReadStats, message: str) -> None:
    stats.unreadable += 1
    if stats.first_error is None:
        stats.first_error = message


def count_lines(path: Path) -> int:
    """Non-empty lines of a JSON-lines file (the rejects file); 0 when it does not exist."""
    n = 0
    try:
        with path.open("rb") as f:
            for raw in f:
                n += bool(raw.strip())
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    return n


@dataclass(frozen=True, slots=True)
class StoreFacts:
    """What the store says about the run: distinct calls answered, and the time they span."""

    calls: int
    wall_time_s: float | None


def read_store(path: Path) -> tuple[StoreFacts | None, str | None]:
    """The store's facts, read-only; (None, why) when there is no readable store."""
    if not path.exists():
        return None, None
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            n, first, last = conn.execute("SELECT COUNT(*), MIN(created), MAX(created) FROM calls").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return None, f"the store {path.name} could not be read ({exc}); cache hits and wall time are unknown"
    try:
        wall = None if first is None else max(0.0, float(last) - float(first))
        return StoreFacts(int(n), wall), None
    except (TypeError, ValueError):
        return StoreFacts(int(n), None), None


@dataclass(slots=True)
class SampleSelection:
    """What the page embeds: every unusual record up to ``limit``, then a uniform random sample
    (reservoir, fixed seed) of the others to fill the rest. Memory is bounded by ``limit``."""

    limit: int
    unusual: list[TraceRecord] = field(default_factory=list)
    others: list[TraceRecord] = field(default_factory=list)
    unusual_seen: int = 0
    others_seen: int = 0
    _rng: random.Random = field(default_factory=lambda: random.Random(0))

    def offer(self, record: TraceRecord, unusual: bool) -> None:
        if unusual:
            self.unusual_seen += 1
            if len(self.unusual) < self.limit:
                self.unusual.append(record)
            return
        self.others_seen += 1
        if len(self.others) < self.limit:
            self.others.append(record)
            return
        j = self._rng.randrange(self.others_seen)
        if j < self.limit:
            self.others[j] = record

    def chosen(self) -> list[TraceRecord]:
        """The embedded records in input order: unusual first in the budget, then the sample."""
        room = max(0, self.limit - len(self.unusual))
        others = self.others if room >= len(self.others) else random.Random(1).sample(self.others, room)
        picked = self.unusual + others
        return sorted(picked, key=lambda r: r.index)

    def describe(self, total: int) -> str:
        shown = len(self.chosen())
        if shown >= total:
            return f"All {total} rows of the trace are shown."
        unusual = min(len(self.unusual), self.limit)
        head = f"{shown} of {total} rows are shown: "
        if self.unusual_seen > unusual:
            head += f"the first {unusual} of {self.unusual_seen} failed or unusual rows"
        else:
            head += f"all {self.unusual_seen} failed or unusual rows"
        return head + f" and a random sample of {shown - unusual} of the {self.others_seen} others (seed 0)."
