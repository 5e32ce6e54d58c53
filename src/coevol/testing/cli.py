"""``python -m coevol.testing``: the fake server in its own process, and helpers to drive it.

A benchmark measures the client's CPU, so the server must not share its process::

    python -m coevol.testing --port 0 --latency 0.1 --slots 64 --no-record \
        --responder coevol

It prints ``READY http://127.0.0.1:PORT/v1`` once listening and runs until SIGTERM or SIGINT.
``serve_in_subprocess`` wraps that; ``fetch_stats`` and ``reset_stats`` reach its counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

from coevol.testing.faults import Fault, FaultKind, FaultPolicy, first_attempt_faults
from coevol.testing.server import FakeOpenAIServer, Responder

__all__ = ["fetch_stats", "main", "reset_stats", "serve_in_subprocess"]


_NAMED: dict[str, str] = {
    "coevol": "coevol.testing.responders:responder",
    "echo": "coevol.testing.server:echo_responder",
}


def _load_responder(path: str) -> Responder:
    path = _NAMED.get(path, path)
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"--responder must look like module:attr, got {path!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise SystemExit(f"--responder {path!r} is not callable")
    responder: Responder = obj
    return responder


def _retry_after(value: str) -> float | str:
    """Seconds when the value is a number; any other text is sent verbatim (an HTTP-date, junk)."""
    try:
        return float(value)
    except ValueError:
        return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m coevol.testing",
        description="Fake OpenAI-compatible server for tests and benchmarks.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed in the READY line)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds each answer holds a slot")
    p.add_argument("--slots", type=int, default=None, help="concurrent answers (default unlimited)")
    p.add_argument(
        "--responder",
        default="coevol",
        help="who answers: 'coevol' (default: a deterministic CoEvol, every agent answers in its role "
        "and the judge accepts 0-3 edits per instruction), 'echo' (always 'ok'), or the import path "
        "module:attr of a Responder",
    )
    p.add_argument("--model", default="fake-model")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (a test key)")
    p.add_argument("--fault-rate", type=float, default=0.0, help="fraction of distinct bodies to fail once")
    p.add_argument(
        "--fault-kinds", default="rate_limit,server_error", help="comma-separated FaultKind values"
    )
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument(
        "--retry-after",
        type=_retry_after,
        default=1.0,
        help="Retry-After of rate_limit faults: seconds, or any text sent verbatim",
    )
    p.add_argument(
        "--hang-seconds", type=float, default=30.0, help="how long hang, stall and endless faults go silent"
    )
    p.add_argument("--huge-bytes", type=int, default=10_000_000, help="answer size of huge faults")
    p.add_argument("--no-record", action="store_true", help="do not keep request bodies (benchmarks)")
    p.add_argument(
        "--reports",
        choices=("llama.cpp", "vllm"),
        default=None,
        help="say the capacity as that server does (/props and /slots, or /metrics)",
    )
    return p


def _policy(args: argparse.Namespace) -> FaultPolicy | None:
    if args.fault_rate <= 0:
        return None
    try:
        kinds = [FaultKind(k.strip()) for k in args.fault_kinds.split(",") if k.strip()]
    except ValueError as exc:
        raise SystemExit(f"--fault-kinds: {exc}; choose from {', '.join(FaultKind)}") from None
    faults = [
        Fault(k, retry_after=args.retry_after, hang_seconds=args.hang_seconds, size=args.huge_bytes)
        for k in kinds
    ]
    return first_attempt_faults(faults, args.fault_rate, seed=args.fault_seed)


def _server_from_args(args: argparse.Namespace) -> FakeOpenAIServer:
    return FakeOpenAIServer(
        _load_responder(args.responder),
        latency=args.latency,
        slots=args.slots,
        faults=_policy(args),
        record=not args.no_record,
        host=args.host,
        port=args.port,
        model=args.model,
        api_key=args.api_key,
        reports=args.reports,
    )


async def _serve(server: FakeOpenAIServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(sig, stop.set)
    async with server:
        print(f"READY {server.base_url}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the server until SIGTERM/SIGINT."""
    args = _parser().parse_args(argv)
    asyncio.run(_serve(_server_from_args(args)))


@contextlib.contextmanager
def serve_in_subprocess(*cli_args: str, startup_timeout: float = 30.0) -> Iterator[str]:
    """Run the server in a child process (so its CPU is not the caller's); yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "coevol.testing", *cli_args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield _wait_ready(proc, startup_timeout)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_ready(proc: subprocess.Popen[str], timeout: float) -> str:
    """The URL from the child's READY line; a thread reads so a silent child cannot block us forever."""
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        # Keeps draining after READY so a chatty responder cannot fill the pipe and stall the server.
        ready = False
        for line in stdout:
            if not ready:
                lines.put(line)
                ready = line.startswith("READY ")
        if not ready:
            lines.put("")

    threading.Thread(target=read, daemon=True, name="fake-server-ready").start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"fake server did not become ready within {timeout:g}s") from None
        if not line:
            raise RuntimeError(f"fake server exited before READY (exit code {proc.wait()})")
        if line.startswith("READY "):
            return line.split(None, 1)[1].strip()


def _root(base_url: str) -> str:
    parts = urllib.parse.urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


def fetch_stats(base_url: str, timeout: float = 10.0) -> dict[str, Any]:
    """The server's ``stats()`` over HTTP, for a server in another process."""
    with urllib.request.urlopen(f"{_root(base_url)}/stats", timeout=timeout) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


def reset_stats(base_url: str, timeout: float = 10.0) -> None:
    """Clear a remote server's counters and recordings (e.g. after a warm-up)."""
    req = urllib.request.Request(f"{_root(base_url)}/reset", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        resp.read()
