"""The trace codec on its hot paths, per record: encoding what the runner writes for every row (the
trace line and the stored outcome) and reading a trace as the report does.

    python benchmarks/trace_codec.py

The records are the golden lines of ``tests/data`` (coevol 0.2's and the first /3 code's, about
3 KB each), repeated to 10,000; CPU time of this process, the best of 5 runs.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from coevol.domain import TraceRecord
from coevol.io import jsonrow
from coevol.multiturn import ExampleOutcome
from coevol.report.reader import TraceReadStats, read_trace

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
N = 10_000


def _lines(*names: str) -> list[bytes]:
    lines = [line for name in names for line in (DATA / name).read_bytes().splitlines() if line]
    return (lines * (N // len(lines) + 1))[:N]


def _per_record(work: Callable[[], object]) -> float:
    """Microseconds of CPU per record, the best of 5 (the collector off: the records are kept)."""
    best = float("inf")
    gc.disable()
    try:
        for _ in range(5):
            start = time.process_time()
            work()
            best = min(best, time.process_time() - start)
    finally:
        gc.enable()
    return best / N * 1e6


def main() -> None:
    traces = _lines("trace_v2.jsonl", "trace_v3_tree.jsonl")
    payloads = _lines("outcome_v2.jsonl", "outcome_v3_tree.jsonl")
    records = [TraceRecord.from_dict(jsonrow.loads(line)) for line in traces]
    outcomes = [ExampleOutcome.from_payload(jsonrow.loads(p)) for p in payloads]
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "out.jsonl.trace.jsonl"
        trace.write_bytes(b"\n".join(traces) + b"\n")
        rows: list[tuple[str, Callable[[], object]]] = [
            ("trace line (TraceRecord.to_json)", lambda: [r.to_json() for r in records]),
            ("stored outcome (to_payload_json)", lambda: [o.to_payload_json() for o in outcomes]),
            ("report reads a line (read_trace)", lambda: list(read_trace(trace, TraceReadStats()))),
        ]
        size = sum(map(len, traces)) // N
        print(f"{N:,} records of {size:,} bytes on average; CPU per record, best of 5")
        for name, work in rows:
            print(f"{_per_record(work):8.1f} us  {name}")


if __name__ == "__main__":
    main()
