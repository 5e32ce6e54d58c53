"""Time ``coevol report`` on a synthetic trace, and show that its memory does not grow with rows.

    python benchmarks/report_bench.py                 # 100,000 rows (and 10,000 for the memory check)
    python benchmarks/report_bench.py --rows 20000

Each report runs in its own process (``os.wait4`` gives its own peak RSS). Rows are Alpaca-like,
with three iterations' worth of debate, suggestions (varied verbs and objects, so the spaCy parse
is not served from its cache), edits and both judge orders, written as real ``coevol.trace/2``
records. Prints one table; nothing is written outside a temporary folder.

Measured on the shared 2-core development machine (100,000 rows, an 886 MB trace, 1,000 samples
embedded): 41 s and 250 MiB peak with every analysis (Fig. 3 parsing its default 5,000-line
sample), 33 s and 142 MiB with --no-directions; 10,000 rows take 141 MiB without directions, the
same as 100,000: memory does not grow with the rows.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from coevol.domain import (
    Answer,
    DebateTrace,
    IterationTrace,
    JudgeOrderTrace,
    JudgeTrace,
    RoleRoute,
    Status,
    StopReason,
    TraceRecord,
    TurnTrace,
)
from coevol.llm.types import Usage

VERBS = [
    "add",
    "provide",
    "include",
    "explain",
    "clarify",
    "expand",
    "remove",
    "use",
    "improve",
    "mention",
    "cite",
    "describe",
    "define",
    "give",
    "rewrite",
]
OBJECTS = [
    "example",
    "detail",
    "context",
    "step",
    "source",
    "definition",
    "summary",
    "explanation",
    "list",
    "code",
    "formula",
    "reason",
    "term",
]
WORDS = [
    "the",
    "model",
    "answer",
    "should",
    "explain",
    "why",
    "each",
    "part",
    "of",
    "a",
    "clear",
    "response",
    "matters",
    "for",
    "readers",
    "and",
    "data",
]


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _iteration(rng: random.Random, k: int, previous: str, accept: bool) -> IterationTrace:
    edited = previous + " " + _text(rng, rng.randint(5, 40))
    lines = [
        f"{i}. {rng.choice(VERBS).capitalize()} {rng.choice(('a', 'the', 'more'))} {rng.choice(OBJECTS)} "
        f"about {_text(rng, rng.randint(2, 8))}."
        for i in range(1, 4)
    ]
    fwd = "assistant 2" if accept else rng.choice(("assistant 1", "assistant 2"))
    rev = "assistant 1"
    f_scores = (0.0, 1.0) if fwd == "assistant 2" else (1.0, 0.0)
    return IterationTrace(
        iteration=k,
        previous=previous,
        debate=DebateTrace(*(Answer(_text(rng, 30), "stop") for _ in range(4))),
        suggestions=Answer("\n".join(lines), "stop"),
        edit=Answer("### Response:\n" + edited, "stop"),
        edited=edited,
        judge=JudgeTrace(
            [
                JudgeOrderTrace("forward", [Answer(f"<{fwd}>\nbecause", "stop")], fwd, f_scores),
                JudgeOrderTrace("reverse", [Answer(f"<{rev}>\nbecause", "stop")], rev, (0.0, 1.0)),
            ]
        ),
        accepted=accept and fwd == "assistant 2",
        usage={"judge": Usage(400, 20, 2)},
    )


def write_trace(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("wb") as f:
        for i in range(rows):
            original = _text(rng, rng.randint(20, 200))
            current, its = original, []
            for k in range(1, 4):
                it = _iteration(rng, k, current, accept=rng.random() < 0.5)
                its.append(it)
                if not it.accepted:
                    break
                current = it.edited or current
            accepted = sum(it.accepted for it in its)
            stop = StopReason.MAX_ROUNDS if accepted == 3 else StopReason.TURNED_DOWN
            turn = TurnTrace(0, _text(rng, 12), "", original, current, accepted, stop, its)
            record = TraceRecord(
                i,
                i + 1,
                Status.REFINED if accepted else Status.KEPT,
                accepted,
                [turn],
                usage={"judge": Usage(400 * len(its), 20 * len(its), 2 * len(its))},
                roles={"judge": RoleRoute("bench-model", "http://127.0.0.1:1/v1")},
            )
            f.write(orjson.dumps(record.to_dict()) + b"\n")


def run_report(output: Path, *extra: str) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one ``coevol report`` in a fresh process."""
    code = (
        "import sys, argparse; from coevol.cli.report import add_parser, run; "
        "p = argparse.ArgumentParser(); add_parser(p.add_subparsers(dest='c')); "
        "sys.exit(run(p.parse_args(['report', *sys.argv[1:]])))"
    )
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, str(output), *extra], stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"coevol report failed on {output}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for rows in sorted({max(1, ns.rows // 10), ns.rows}):
            out = Path(tmp) / f"out{rows}.json"
            out.write_text("[]")
            trace = out.with_name(out.name + ".trace.jsonl")
            write_trace(trace, rows)
            size = trace.stat().st_size / 2**20
            for label, extra in (("all analyses", ()), ("--no-directions", ("--no-directions",))):
                seconds, rss = run_report(out, *extra)
                results.append((rows, size, label, seconds, rss))
        print("| rows | trace MiB | report | seconds | rows/s | peak RSS MiB |")
        print("|---:|---:|---|---:|---:|---:|")
        for rows, size, label, seconds, rss in results:
            print(
                f"| {rows:,} | {size:,.0f} | {label} | {seconds:.1f} | {rows / seconds:,.0f} | {rss:,.0f} |"
            )


if __name__ == "__main__":
    main()
