"""Shared helpers for the engine tests: a fake server on its own thread, the CLI as a child process.

The server runs on a background event loop so that a CLI child process (which the tests kill) and
the test itself can both talk to it, and the test can read what it received while a run goes on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from coevol.api import arefine_file
from coevol.config import load_config
from coevol.engine.dispatch import RunStats
from coevol.engine.runner import RunSummary
from coevol.testing import ThreadedServer as SharedThreadedServer
from coevol.testing import mentioning
from coevol.testing.responders import identify_role

WORDS = [
    "river",
    "stone",
    "light",
    "paper",
    "music",
    "garden",
    "winter",
    "market",
    "engine",
    "signal",
    "forest",
    "window",
    "planet",
    "letter",
    "bridge",
    "silver",
    "orange",
    "number",
    "camera",
    "dinner",
    "pocket",
]


def alpaca_rows(n: int, *, seed: int = 0, prefix: str = "Task") -> list[dict[str, str]]:
    """Distinct synthetic Alpaca rows (varied enough that the judge policy accepts 0-3 edits)."""
    rows = []
    for i in range(n):
        words = [WORDS[(i * 7 + j * (seed + 3)) % len(WORDS)] for j in range(8)]
        rows.append(
            {
                "instruction": f"{prefix} {i}: describe the {' '.join(words[:4])}.",
                "input": "" if i % 3 else f"Context {i}: {' '.join(words[4:])}",
                "output": f"The {words[0]} and the {words[1]} are {words[2]}; answer number {i}.",
            }
        )
    return rows


def write_jsonl(path: Path, rows: Sequence[dict[str, Any] | str]) -> Path:
    """Rows as JSON Lines; a ``str`` item is written verbatim (for broken rows)."""
    with path.open("wb") as f:
        for row in rows:
            f.write((row.encode() if isinstance(row, str) else orjson.dumps(row)) + b"\n")
    return path


class ThreadedServer(SharedThreadedServer):
    """``coevol.testing.ThreadedServer`` that also counts requests per CoEvol role."""

    def roles_since(self, start: int) -> Counter[str]:
        """Requests per CoEvol role received after the first ``start`` ones."""
        return Counter(identify_role(r.body["messages"]) for r in self.requests[start:])


def cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "coevol.cli.main", *map(str, args)]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COEVOL") and k != "OPENAI_API_KEY"}
    env.update(extra)
    return env


def run_cli(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli(*args), capture_output=True, text=True, timeout=timeout, env=env or child_env(), check=False
    )


def start_cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or child_env(),
    )


def kill_when(
    proc: subprocess.Popen[str], server: SharedThreadedServer, requests: int, sig: int = signal.SIGKILL
) -> bool:
    """Send ``sig`` once the server has seen ``requests`` requests; False if the run ended first."""
    while server.count() < requests:
        if proc.poll() is not None:
            return False
        time.sleep(0.001)
    proc.send_signal(sig)
    return True


async def refine_file(
    base_url: str, input: Path, output: Path, *, retry_failed: bool = False, **overrides: Any
) -> tuple[RunSummary, RunStats]:
    """What ``coevol refine`` does, in-process (no CLI start-up cost): one run through ``arefine_file``."""
    config = load_config(None, {"base_url": base_url, "model": "fake", **overrides})
    output.parent.mkdir(parents=True, exist_ok=True)  # coevol refuses a missing output folder
    run = await arefine_file(input, output, config, retry_failed=retry_failed)
    return run.summary, run.stats


marked = mentioning
"""A fault for every request (every attempt) whose messages mention a marker (shipped fake)."""
