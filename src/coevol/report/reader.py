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

from coevol.domain import READABLE_SCHEMAS, Answer, IterationTrace, TraceRecord, TurnTrace, Usage
from coevol.errors import DataError, TraceSchemaError
from coevol.report.stats import active_seconds
from coevol.store.sqlite import connect_read_only

__all__ = [
    "MAX_ROUNDS",
    "RunFiles",
    "SampleSelection",
    "StoreFacts",
    "check_record",
    "count_lines",
    "read_store",
    "read_trace",
]

MAX_ROUNDS = 1000
"""More accepted edits than this in one unit is not a real run (and would size Fig. 2a's axis)."""


@dataclass(frozen=True, slots=True)
class RunFiles:
    """The files of one run beside its output (the runner's naming)."""

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
        f = path.open("rb", buffering=1 << 20)
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
                    record = TraceRecord.from_dict(data)
                    check_record(record)
                    yield record
                except TraceSchemaError as exc:
                    if isinstance(data, dict) and data.get("schema") not in READABLE_SCHEMAS:
                        raise DataError(f"{path}: {exc}") from None
                    _bad(stats, f"line {stats.lines}: {exc}")
        except OSError as exc:
            raise DataError(f"cannot read the trace {path}: {exc.strerror}") from None


def _fail(what: str) -> None:
    raise TraceSchemaError(f"malformed trace record: {what}")


def _int(value: object, what: str, top: int | None = None) -> None:
    if not isinstance(value, int) or value < 0 or (top is not None and value > top):
        _fail(f"{what} is {value!r}, not a count" + ("" if top is None else f" up to {top}"))


def _str(value: object, what: str, optional: bool = False) -> None:
    if not (isinstance(value, str) or (optional and value is None)):
        _fail(f"{what} is a {type(value).__name__}, not text")


def _answer(a: Answer | None, what: str) -> None:
    if a is not None:
        _str(a.text, what)
        _str(a.finish_reason, f"{what} finish_reason", optional=True)


def _usage(usage: dict[str, Usage], what: str) -> None:
    for role, u in usage.items():
        for name in ("prompt_tokens", "completion_tokens", "calls"):
            _int(getattr(u, name), f"{what} usage {role}.{name}")


def _iteration(it: IterationTrace) -> None:
    _str(it.previous, "iteration previous")
    _str(it.edited, "iteration edited", optional=True)
    for name in ("suggestions", "edit"):
        _answer(getattr(it, name), f"iteration {name}")
    if it.debate is not None:
        for name in ("positive_stage1", "critical_stage1", "positive_stage2", "critical_stage2"):
            _answer(getattr(it.debate, name), f"debate {name}")
    if it.judge is not None:
        for o in it.judge.orders:
            _str(o.order, "judge order")
            _str(o.verdict, "judge verdict", optional=True)
            _str(o.error, "judge error", optional=True)
            for a in o.attempts:
                _answer(a, "judge attempt")
    _usage(it.usage, "iteration")


def _turn(t: TurnTrace) -> None:
    for name in ("instruction", "input", "original", "final"):
        _str(getattr(t, name), f"turn {name}")
    _int(t.accepted_edits, "turn accepted_rounds", MAX_ROUNDS)
    for it in t.iterations:
        _iteration(it)


def check_record(record: TraceRecord) -> None:
    """Refuse a record whose fields have the wrong types (``from_dict`` checks the shape, not the
    types): a hostile or corrupted line is counted as unreadable instead of failing the report."""
    _int(record.index, "index")
    _int(record.line, "line")
    _int(record.accepted_edits, "accepted_rounds", MAX_ROUNDS)
    _usage(record.usage, "record")
    for role, route in record.roles.items():
        _str(route.model, f"role {role} model")
    for t in record.turns:
        _turn(t)


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
