"""Issue 17's done-when: random SIGINT / SIGTERM / SIGKILL at random moments (the first instant of
start-up included), each followed by a rerun, end byte-identical to an uninterrupted run.

Bounded for CI: a small input, the fake server with a small latency, a few seeded tries (the seed
is printed; ``COEVOL_SIGNAL_SEED`` replays one, ``COEVOL_SIGNAL_TRIES`` runs more). The Ray twin is
in ``test_ray.py``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from coevol.testing.responders import CoEvolResponder

from .engine_support import ThreadedServer, alpaca_rows, child_env, write_jsonl

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
ALLOWED = {0, 4, 130, 143, -signal.SIGKILL}  # finished, finished with failures, stopped cleanly, killed
START = 0.2
"""Before this the interpreter itself is starting (about 0.1 s here): a signal then ends it as the
OS default does, before any line of coevol runs; from coevol's first line on, it is handled."""
NAMES = ("out.jsonl", "out.jsonl.rejects.jsonl", "pairs.jsonl")


def _files(folder: Path) -> dict[str, object]:
    found: dict[str, object] = {n: (folder / n).read_bytes() for n in NAMES if (folder / n).exists()}
    trace = folder / "out.jsonl.trace.jsonl"  # per record: a usage dict's key order may differ
    found["trace"] = [orjson.loads(x) for x in trace.read_bytes().splitlines()] if trace.exists() else None
    return found


def _command(data: Path, folder: Path, server: ThreadedServer, extra: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "coevol", "refine", str(data), "-o", str(folder / "out.jsonl"),
        "--pairs", str(folder / "pairs.jsonl"), "-q", "--base-url", server.base_url, "--model", "fake",
        "--concurrency", "4", *extra,
    ]  # fmt: skip


def signal_loop(tmp_path: Path, extra: list[str], tries: int, window: float) -> None:
    """Interrupt ``tries`` runs at random moments in the first ``window`` seconds, rerun to the
    end, and compare with a run that was never interrupted."""
    seed = int(os.environ.get("COEVOL_SIGNAL_SEED") or random.SystemRandom().randrange(1 << 30))
    tries = int(os.environ.get("COEVOL_SIGNAL_TRIES") or tries)
    print(f"signal loop seed {seed} ({tries} tries); replay with COEVOL_SIGNAL_SEED={seed}")
    rng = random.Random(seed)
    data = write_jsonl(tmp_path / "in.jsonl", [*alpaca_rows(8, seed=3), "{not json"])
    with ThreadedServer(responder=CoEvolResponder(), latency=0.02) as server:
        (tmp_path / "reference").mkdir()
        done = subprocess.run(
            _command(data, tmp_path / "reference", server, extra), capture_output=True, text=True,
            env=child_env(), timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        folder = tmp_path / "interrupted"
        folder.mkdir()
        for i in range(tries):
            sig, delay = rng.choice(SIGNALS), rng.uniform(START, window)
            proc = subprocess.Popen(
                _command(data, folder, server, extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env=child_env(),
            )  # fmt: skip
            time.sleep(delay)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=300)
            what = f"try {i} (seed {seed}): {sig.name} after {delay:.2f}s"
            assert proc.returncode in ALLOWED, f"{what}: exit {proc.returncode}\n{err}"
            assert "Traceback" not in err, f"{what}\n{err}"
            if proc.returncode in (130, 143):
                assert err.strip(), f"{what}: stopped without a word"
        rerun = subprocess.run(
            _command(data, folder, server, extra), capture_output=True, text=True, env=child_env(),
            timeout=300, check=False,
        )  # fmt: skip
        assert rerun.returncode == 0, rerun.stderr
    assert _files(folder) == _files(tmp_path / "reference"), f"seed {seed}"


def test_random_signals_then_a_rerun_end_byte_identical(tmp_path: Path) -> None:
    signal_loop(tmp_path, [], tries=6, window=2.5)
