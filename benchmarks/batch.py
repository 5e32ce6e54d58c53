"""``--batch`` on the shipped examples against the fake Files/Batches server: batches, lines, wall time.

    PYTHONPATH=src python benchmarks/batch.py [--poll 0.05]

Each example is refined online and with ``--batch`` against the same deterministic responder; the
script checks the outputs are byte-identical and prints one Markdown table row per example. The
fake answers a batch after four polls (validating, in progress twice, finalizing), so the wall
time measures coevol's stage-by-stage scheduling, not a provider's queue (minutes to hours).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

from coevol.cli.main import main
from coevol.testing import ThreadedServer
from coevol.testing.responders import CoEvolResponder

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(args: list[str]) -> float:
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(args)
    if code != 0:
        raise SystemExit(f"coevol {' '.join(args)} exited {code}")
    return time.perf_counter() - started


def measure(example: Path, poll: float) -> str:
    with tempfile.TemporaryDirectory() as tmp, ThreadedServer(responder=CoEvolResponder()) as server:
        common = ["--base-url", server.base_url, "--model", "fake-model", "-q"]
        online_out, batch_out = Path(tmp) / f"online{example.suffix}", Path(tmp) / f"batch{example.suffix}"
        online_s = _run(["refine", str(example), "-o", str(online_out), *common])
        calls = server.count()
        batch_s = _run(
            ["refine", str(example), "-o", str(batch_out), *common, "--batch", "--batch-poll", str(poll)]
        )
        if server.count() != calls:
            raise SystemExit("a --batch call reached /v1/chat/completions")
        if online_out.read_bytes() != batch_out.read_bytes():
            raise SystemExit(f"{example.name}: --batch output differs from the online output")
        submitted = server.server.batches.submitted
        polls = sum(b.polls for b in submitted)
        lines = sum(len(b.lines) for b in submitted)
        return (
            f"| {example.name} | {calls} | {len(submitted)} | {lines} | {polls} | "
            f"{online_s:.2f} s | {batch_s:.2f} s | identical |"
        )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poll", type=float, default=0.05, help="--batch-poll seconds (default 0.05)")
    ns = parser.parse_args()
    print(f"poll every {ns.poll} s; the fake finishes a batch on its 4th poll")
    print("| example | calls | batches | lines | polls | online | --batch | output |")
    print("|---|---|---|---|---|---|---|---|")
    for example in (EXAMPLES / "weak_answers.json", EXAMPLES / "conversations.jsonl"):
        print(measure(example, ns.poll))


if __name__ == "__main__":
    cli()
