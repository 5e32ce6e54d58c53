"""Where ``coevol refine``'s CPU goes against an instant server: py-spy over the CLI process.

    python benchmarks/cpu_profile.py [ROWS]     # needs py-spy (pip install py-spy); ROWS defaults to 800

Starts the simulated server (``python -m coevol.testing``) in its own process, runs
``coevol refine`` under ``py-spy record --gil`` (only samples holding the GIL: CPU, not waits), and
prints the share of samples by layer, then the top functions by own time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import server, write_rows

LAYERS = [  # (layer, substrings of the sampled frame's file), first match wins
    ("aiohttp request path (aiohttp, multidict, yarl)", ("aiohttp/", "multidict", "yarl")),
    ("asyncio event loop, tasks, futures", ("asyncio/",)),
    ("lean HTTP transport (coevol.llm.lean_http, httptools)", ("coevol/llm/lean_http", "httptools")),
    ("coevol store (SQLite)", ("coevol/store",)),
    ("coevol prompts (render, guard)", ("coevol/prompts",)),
    ("coevol HTTP backend, request hash", ("coevol/llm",)),
    ("coevol dispatcher, limits", ("coevol/engine/dispatch", "coevol/engine/limits")),
    ("coevol agents, loop", ("coevol/roles", "coevol/loop", "coevol/multiturn", "coevol/conversation")),
    ("coevol runner, trace, writers", ("coevol/engine/runner", "coevol/io", "coevol/domain")),
    ("progress display", ("rich/", "coevol/cli")),
    ("coevol, other", ("coevol/",)),
]


def layer(stack: list[str]) -> str:
    if any("importlib._bootstrap" in f or "build_engine" in f for f in stack):
        return "start-up (imports, engine build)"
    match = re.search(r"\((.*?)(:\d+)?\)", stack[-1])
    path = match.group(1) if match else stack[-1]
    return next((name for name, parts in LAYERS if any(p in path for p in parts)), "other")


def spy_path() -> str | None:
    """py-spy's executable, or ``None`` when it is not installed."""
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


def profile(rows: int = 800) -> tuple[list[str], dict[str, float]]:
    """The profile as text lines (share of CPU samples by layer, then the top functions) and the
    share of each layer."""
    spy = spy_path()
    if spy is None:
        return ["py-spy is not installed (pip install py-spy): no profile taken"], {}
    folder = Path(tempfile.mkdtemp(prefix="coevol-profile-"))
    try:
        data = write_rows(folder / "rows.jsonl", rows, seed=1, words=60)
        raw = folder / "samples.txt"
        with server() as srv:
            cmd = [
                spy, "record", "--gil", "-r", "250", "-f", "raw", "-o", str(raw), "--",
                sys.executable, "-m", "coevol.cli.main", "refine", str(data), "-o", str(folder / "out.jsonl"),
                "--base-url", srv.url, "--model", "fake", "--concurrency", "256",
            ]  # fmt: skip
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        layers: Counter[str] = Counter()
        own: Counter[str] = Counter()
        for line in raw.read_text().splitlines():
            if not line.strip():
                continue
            stack_text, count = line.rsplit(" ", 1)
            stack = stack_text.split(";")
            layers[layer(stack)] += int(count)
            own[stack[-1]] += int(count)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    total = max(sum(layers.values()), 1)
    lines = [f"py-spy --gil, `coevol refine` of {rows} rows, instant server, {total:,} CPU samples:", ""]
    lines += ["| share | layer |", "|---:|---|"]
    lines += [f"| {n / total:.1%} | {name} |" for name, n in layers.most_common()]
    lines += ["", "| share | function (own time) |", "|---:|---|"]
    lines += [f"| {n / total:.1%} | `{name}` |" for name, n in own.most_common(15)]
    return lines, {name: n / total for name, n in layers.items()}


def main() -> None:
    print("\n".join(profile(int(sys.argv[1]) if len(sys.argv) > 1 else 800)[0]))


if __name__ == "__main__":
    main()
