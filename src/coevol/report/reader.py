"""Read a run's files for the report: the trace (streamed), the rejects file, the store.

This is the report's I/O boundary: OS and sqlite errors become ``coevol.errors`` here, and the
trace is read by the one trace reader (``coevol.io.tracefile``). A run that was interrupted has
only its ``.partial`` trace; that is read instead, and a cut-off last line is counted, not fatal.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from coevol.domain import TraceRecord
from coevol.errors import DataError, TraceError
from coevol.io import tracefile
from coevol.io.tracefile import Problem, Unreadable
from coevol.report.stats import Reservoir, active_seconds
from coevol.store.sqlite import connect_read_only

__all__ = [
    "RunFiles",
    "SampleSelection",
    "StoreFacts",
    "TraceReadStats",
    "count_lines",
    "read_store",
    "read_trace",
]


@dataclass(frozen=True, slots=True)
class RunFiles:
    """The files of one run, beside its output or in its run folder (the runner's naming)."""

    output: Path
    trace: Path
    rejects: Path
    store: Path

    @classmethod
    def beside(cls, output: Path) -> RunFiles:
        """The files beside ``output``; given the trace itself, the output it belongs to."""
        for suffix in (".trace.jsonl", ".trace.jsonl.partial"):
            if output.name.endswith(suffix) and len(output.name) > len(suffix):
                output = output.with_name(output.name[: -len(suffix)])

        def side(suffix: str) -> Path:
            return output.with_name(output.name + suffix)

        trace = side(".trace.jsonl")
        if not trace.exists() and side(".trace.jsonl.partial").exists():
            trace = side(".trace.jsonl.partial")
        return cls(output, trace, side(".rejects.jsonl"), side(".coevol.db"))

    @classmethod
    def of(cls, output: Path, run_dir: Path | None) -> RunFiles:
        """The files of the run of ``output``: in its run folder when given, else beside it."""
        if run_dir is None:
            return cls.beside(output)
        trace = run_dir / "trace.jsonl"
        if not trace.exists() and (run_dir / "trace.jsonl.partial").exists():
            trace = run_dir / "trace.jsonl.partial"
        return cls(output, trace, run_dir / "rejects.jsonl", run_dir / "coevol.db")

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
    """Every record of the trace, streamed by the one trace reader. A line that is damaged (not
    JSON, too long, a malformed record) is counted in ``stats`` and skipped; a line that is not a
    record this coevol reads (another schema version, another kind of file) stops the read."""
    try:
        for item in tracefile.read_trace(path):
            stats.lines += 1
            if not isinstance(item, Unreadable):
                yield item
            elif item.problem in (Problem.VERSION, Problem.NOT_RECORD):
                raise DataError(f"{path}: {item.message}")
            else:
                stats.unreadable += 1
                if stats.first_error is None:
                    stats.first_error = item.message
    except TraceError as exc:  # the file itself: missing, not a regular file, unreadable
        raise DataError(f"cannot read the trace: {exc}") from None


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
    counted = [0]

    def times(rows: Iterator[tuple[object]]) -> Iterator[float]:
        for (created,) in rows:
            counted[0] += 1
            yield float(created)  # type: ignore[arg-type]  # a hostile value raises, caught below

    try:
        conn = connect_read_only(path)
        try:
            wall = active_seconds(times(conn.execute("SELECT created FROM calls ORDER BY created")))
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return None, f"the store {path.name} could not be read ({exc}); cache hits and wall time are unknown"
    except (TypeError, ValueError):
        return StoreFacts(counted[0], None), None
    return StoreFacts(counted[0], wall), None


@dataclass(slots=True)
class SampleSelection:
    """What the page embeds: every unusual record up to ``limit``, then a uniform random sample
    (reservoir, fixed seed) of the others to fill the rest. Memory is bounded by ``limit``."""

    limit: int
    unusual: list[TraceRecord] = field(default_factory=list)
    unusual_seen: int = 0
    _others: Reservoir[TraceRecord] = field(init=False)

    def __post_init__(self) -> None:
        self._others = Reservoir(self.limit)

    @property
    def others(self) -> list[TraceRecord]:
        return self._others.items

    @property
    def others_seen(self) -> int:
        return self._others.seen

    def offer(self, record: TraceRecord, unusual: bool) -> None:
        if unusual:
            self.unusual_seen += 1
            if len(self.unusual) < self.limit:
                self.unusual.append(record)
        else:
            self._others.offer(record)

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
