"""Servers that queue instead of answering 429: slot utilization and queue wait, with and without
backpressure.

    python benchmarks/queueing.py            # about a minute on 2 CPUs

vLLM and llama.cpp's server never answer 429: a request beyond their slots waits in their queue.
Each server here is ``python -m coevol.testing`` in its own process with SLOTS slots x LATENCY
seconds per answer; a request past the slots queues there (its wait is counted by the server).
The client is the dispatcher in this process sending CHAINS chains of STEPS calls (each call asked
once the one before it is answered, like a sample's calls) with up to 64 in flight per server.

- "none": the in-flight limit moves only on 429s (coevol 0.2): every request the client may send
  is sent, and the surplus waits in the server's queue.
- "latency": the gradient rule of ``coevol.engine.limits.Backpressure`` (the default).
- "capacity": the server reports its slots (``/props``, as llama.cpp's server does) and the limit
  is capped at them before anything is sent.

Utilization is the server's busy slot-seconds over slots x the time from its first request to its
last answer; queue wait is the server's mean wait for a slot per answer.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from coevol.engine.capacity import learn_capacity
from coevol.engine.dispatch import Dispatcher, Route
from coevol.engine.endpoints import EndpointGroup
from coevol.engine.limits import Backpressure
from coevol.llm.openai_http import OpenAIHTTPBackend
from coevol.llm.types import GenParams
from coevol.testing import fetch_stats, reset_stats

CONCURRENCY = 64


@dataclass(frozen=True)
class Case:
    slots: int
    latency: float
    chains: int
    steps: int


CASES = [
    Case(slots=8, latency=0.1, chains=64, steps=8),  # a small GPU batch
    Case(slots=1, latency=0.05, chains=32, steps=4),  # llama-cpp-python's server: one at a time
]


class Server:
    def __init__(self, case: Case, *, reports: bool) -> None:
        args = ["--latency", str(case.latency), "--slots", str(case.slots), "--no-record"]
        if reports:
            args += ["--reports", "llama.cpp"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coevol.testing", *args], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError("fake server did not start")
        self.url = line.split()[1]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def chain(d: Dispatcher, c: int, steps: int) -> None:
    for i in range(steps):
        await d("judge", [{"role": "user", "content": f"chain {c} step {i}"}])


async def run(case: Case, scenario: str) -> dict[str, Any]:
    server = Server(case, reports=scenario == "capacity")
    try:
        backend = OpenAIHTTPBackend(server.url, max_connections=CONCURRENCY)
        bp = None if scenario == "none" else Backpressure()
        group = EndpointGroup([backend], limits=[CONCURRENCY], backpressure=bp)
        if scenario == "capacity":
            await learn_capacity(group)
        d = Dispatcher({"judge": Route(group, "fake-model", GenParams(max_tokens=8))})
        reset_stats(server.url)
        start = time.perf_counter()
        await asyncio.gather(*(chain(d, c, case.steps) for c in range(case.chains)))
        wall = time.perf_counter() - start
        await group.aclose()
        stats = fetch_stats(server.url)
    finally:
        server.stop()
    calls = case.chains * case.steps
    return {
        "wall": wall,
        "calls_s": calls / wall,
        "utilization": stats["utilization"],
        "queue_wait": stats["mean_queue_wait"],
        "max_queued": stats["max_queued"],
        "peak": d.peak,
        "limit": int(group.servers[0].limit.limit),
    }


def main() -> None:
    print(
        "| server | limit | wall s | calls/s | slots busy | mean queue wait s | most queued "
        "| peak in flight | final limit |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for case in CASES:
        name = f"{case.slots} slot{'s' if case.slots > 1 else ''} x {case.latency * 1000:.0f} ms"
        for scenario in ("none", "latency", "capacity"):
            r = asyncio.run(run(case, scenario))
            print(
                f"| {name} | {scenario} | {r['wall']:.1f} | {r['calls_s']:.0f} | {r['utilization']:.1%} "
                f"| {r['queue_wait']:.3f} | {r['max_queued']} | {r['peak']} | {r['limit']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
