"""Many servers from one run: how busy each server's slots are kept, 1 to 4 servers, and on Ray.

    python benchmarks/endpoints.py            # about two minutes on 2 CPUs

Each simulated server is ``python -m coevol.testing`` in its own process (64 slots, 100 ms per
answer, the deterministic CoEvol responder). The client is ``arefine_file`` in this process with
``--concurrency 64 x servers``; the Ray rows run ``--executor ray`` on a local Ray instance. A
server's utilization is its busy slot-seconds over 64 x the run's wall time (start-up included,
for Ray the local instance's start too), so it says how much of what the servers offer the client
used; the next column counts only from the server's first request to its last answer. "second
server killed" stops the second of two servers after about a third of its calls: its figure
counts only the time it was alive, and the run must still write the undisturbed run's output.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from coevol.api import arefine_file
from coevol.config import load_config
from coevol.testing import fetch_stats, reset_stats

SLOTS, LATENCY = 64, 0.1


class Server:
    def __init__(self) -> None:
        args = ["--responder", "coevol.testing.responders:responder", "--latency", str(LATENCY)]
        args += ["--slots", str(SLOTS), "--no-record"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coevol.testing", *args], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError("fake server did not start")
        self.url = line.split()[1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def rows(n: int) -> list[dict[str, str]]:
    words = ["river", "stone", "light", "paper", "music", "garden", "winter", "market", "engine"]
    return [
        {
            "instruction": f"Task {i}: describe the {words[i % 9]} and the {words[(i * 5 + 1) % 9]}.",
            "input": "",
            "output": f"The {words[(i * 7 + 2) % 9]} is {words[(i * 3) % 9]}; answer {i}.",
        }
        for i in range(n)
    ]


def run_once(
    servers: list[Server], n_rows: int, folder: Path, *, executor: str, kill_after: int | None
) -> dict[str, Any]:
    data = folder / "in.jsonl"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows(n_rows)))
    for s in servers:
        reset_stats(s.url)
    urls = [s.url for s in servers]
    config = load_config(
        None,
        {"base_url": urls if len(urls) > 1 else urls[0], "model": "fake", "concurrency": SLOTS * len(urls)},
    )
    killed: dict[str, Any] = {}
    if kill_after is not None:
        victim = servers[-1]

        def kill() -> None:
            begun = time.perf_counter()
            while fetch_stats(victim.url)["completed"] < kill_after:
                time.sleep(0.05)
            killed.update(fetch_stats(victim.url), alive=time.perf_counter() - begun)
            victim.stop()

        threading.Thread(target=kill, daemon=True).start()
    out = folder / f"out-{executor}-{len(urls)}-{kill_after}.jsonl"
    started = time.perf_counter()
    if executor == "ray":
        from coevol.executors.on_ray import RayOptions, arefine_file_ray

        run = asyncio.run(arefine_file_ray(data, out, config, options=RayOptions(workers=2)))
    else:
        run = asyncio.run(arefine_file(data, out, config))
    wall = time.perf_counter() - started
    busy, serving = [], []
    for s in servers:
        st = killed if s.proc.poll() is not None and killed else fetch_stats(s.url)
        span = killed["alive"] if st is killed else wall
        busy.append(st["busy_slot_seconds"] / (SLOTS * span))
        serving.append(st["utilization"] or 0.0)
    return {
        "servers": len(urls),
        "executor": executor,
        "killed": kill_after is not None,
        "rows": run.summary.rows,
        "failed": run.summary.failed,
        "calls": run.stats.sent,
        "wall_s": wall,
        "calls_per_s": run.stats.sent / wall,
        "utilization": busy,
        "serving": serving,
        "output": out.read_bytes(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows-per-server", type=int, default=120)
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        servers = [Server() for _ in range(4)]
        try:
            for n in (1, 2, 4):
                results.append(
                    run_once(servers[:n], args.rows_per_server * n, folder, executor="local", kill_after=None)
                )
            two = args.rows_per_server * 2
            reference = results[1]["output"]
            results.append(run_once(servers[:2], two, folder, executor="ray", kill_after=None))
            results[-1]["same"] = results[-1]["output"] == reference
            calls = results[1]["calls"]
            results.append(run_once(servers[:2], two, folder, executor="local", kill_after=calls // 6))
            results[-1]["same"] = results[-1]["output"] == reference
        finally:
            for s in servers:
                s.stop()
    print("| servers | executor | rows | calls | wall s | calls/s | slots busy over the run | "
          "slots busy from first request to last answer | same output |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---|---|---|")
    for r in results:
        label = r["executor"] + (", second server killed" if r["killed"] else "")
        util = ", ".join(f"{u:.0%}" for u in r["utilization"])
        serving = ", ".join(f"{u:.0%}" for u in r["serving"])
        same = "-" if "same" not in r else "yes" if r["same"] else "NO"
        print(f"| {r['servers']} | {label} | {r['rows']} | {r['calls']} | {r['wall_s']:.1f} | "
              f"{r['calls_per_s']:.0f} | {util} | {serving} | {same} |")  # fmt: skip
    print(f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
