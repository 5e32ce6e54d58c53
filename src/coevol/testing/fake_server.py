"""A fake OpenAI-compatible server: a real HTTP peer on loopback for tests and benchmarks.

Clients are exercised over real sockets, so connection pooling, timeouts and error translation are
tested as they run in production. The server can model a GPU's limited capacity (``slots`` busy for
``latency`` seconds each), inject faults deterministically, and record every request so tests can
prove concurrency (overlapping intervals) and retries (the same body seen twice).

Run it in its own process when measuring client CPU::

    python -m coevol.testing.fake_server --port 0 --latency 0.1 --slots 64 --no-record

It prints ``READY http://127.0.0.1:PORT/v1`` once listening. ``serve_in_subprocess`` wraps that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import json
import logging
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Final, Self

import orjson
from aiohttp import web

__all__ = [
    "FakeOpenAIServer",
    "Fault",
    "FaultKind",
    "FaultPolicy",
    "RecordedRequest",
    "Reply",
    "Responder",
    "always",
    "body_digest",
    "echo_responder",
    "fetch_stats",
    "first_attempt_faults",
    "main",
    "reset_stats",
    "serve_in_subprocess",
]

_log = logging.getLogger(__name__)

_JSON: Final = "application/json"
_SHUTDOWN_GRACE: Final = 0.5  # seconds a stopping server waits for in-flight handlers (hangs included)


@dataclass(frozen=True, slots=True)
class Reply:
    """A responder's full answer; token counts left ``None`` are estimated by word count."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"


Responder = Callable[[dict[str, Any]], str | Reply]
"""Given the parsed request body, the assistant's answer. An exception becomes an HTTP 500."""


def echo_responder(body: dict[str, Any]) -> str:
    """The default responder: always ``"ok"``, whatever was asked."""
    return "ok"


class FaultKind(StrEnum):
    """What can go wrong, each mapped to one client-side error class."""

    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    HANG = "hang"
    DISCONNECT = "disconnect"
    GARBAGE = "garbage"
    BAD_REQUEST = "bad_request"
    AUTH = "auth"
    CONTEXT_LENGTH = "context_length"


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure.

    ``retry_after`` is the 429 ``Retry-After`` header: seconds, a preformatted string (an HTTP-date),
    or ``None`` to omit it. ``hang_seconds`` is how long a ``hang`` stalls before answering normally.
    Faults are answered at once and bypass the slot model (a gateway rejecting, not a GPU working).
    """

    kind: FaultKind
    retry_after: float | str | None = 1.0
    hang_seconds: float = 30.0
    message: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FaultKind(self.kind))


FaultPolicy = Callable[[dict[str, Any], int], Fault | None]
"""``(body, times_seen_before) -> Fault | None``; the count is 0 the first time a body arrives."""


def _canonical(body: Any) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def body_digest(body: Any) -> str:
    """Identity of a request body: sha256 of its canonical JSON (sorted keys)."""
    return hashlib.sha256(_canonical(body)).hexdigest()


def _as_fault(item: Fault | FaultKind | str) -> Fault:
    return item if isinstance(item, Fault) else Fault(FaultKind(item))


def first_attempt_faults(kinds: Sequence[Fault | FaultKind | str], rate: float, seed: int = 0) -> FaultPolicy:
    """Fail the first attempt of a fraction ``rate`` of distinct bodies; retries always succeed.

    Which bodies fail, and with which fault, depends only on the body and ``seed``, so a run is
    reproducible regardless of request order or concurrency.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be within [0, 1], got {rate}")
    faults = tuple(_as_fault(k) for k in kinds)
    if not faults and rate > 0:
        raise ValueError("first_attempt_faults needs at least one fault kind")
    salt = seed.to_bytes(8, "little", signed=True)

    def policy(body: dict[str, Any], seen: int) -> Fault | None:
        if seen or rate <= 0.0:
            return None
        digest = hashlib.sha256(salt + _canonical(body)).digest()
        if int.from_bytes(digest[:8], "little") >= rate * 2.0**64:
            return None
        return faults[int.from_bytes(digest[8:16], "little") % len(faults)]

    return policy


def always(fault: Fault | FaultKind | str) -> FaultPolicy:
    """Fail every request with ``fault``."""
    chosen = _as_fault(fault)

    def policy(body: dict[str, Any], seen: int) -> Fault | None:
        return chosen

    return policy


@dataclass(slots=True)
class RecordedRequest:
    """One chat request as the server saw it (monotonic times, this process's clock).

    ``start`` is arrival, ``slot_start`` when it got a slot (``None`` if it never held one: faults,
    or cancelled while waiting), ``end`` when the answer was ready (``None`` if the client left).
    """

    body: dict[str, Any]
    start: float
    has_auth: bool
    content_type: str | None = None
    fault: Fault | None = None
    slot_start: float | None = None
    end: float | None = None
    status: int | None = None


@dataclass(slots=True)
class _Counters:
    requests: int = 0
    completed: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    active: int = 0
    max_active: int = 0
    busy_slot_seconds: float = 0.0
    first_start: float | None = None
    last_end: float | None = None
    responder_errors: int = 0
    faults: Counter[str] = field(default_factory=Counter)


def _error_body(message: str, type_: str, code: str | int | None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "code": code}})


def _format_retry_after(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _word_count(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(
        len(m["content"].split())
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("content"), str)
    )


class FakeOpenAIServer:
    """An OpenAI-compatible chat server on an ephemeral loopback port; use as ``async with``.

    ``latency`` is seconds per answer (or ``body -> seconds``); with ``slots`` set, at most that many
    requests are answered at once and the rest queue, like a GPU serving a fixed batch.
    """

    def __init__(
        self,
        responder: Responder = echo_responder,
        *,
        latency: float | Callable[[dict[str, Any]], float] = 0.0,
        slots: int | None = None,
        faults: FaultPolicy | None = None,
        record: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "fake-model",
        api_key: str | None = None,
    ) -> None:
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.responder = responder
        self.latency = latency
        self.slots = slots
        self.faults = faults
        self.record = record
        self.host = host
        self.port = port
        self.model = model
        self._api_key = api_key
        self.requests: list[RecordedRequest] = []
        self._seen: dict[str, int] = {}
        self._counters = _Counters()
        self._semaphore: asyncio.Semaphore | None = None
        self._runner: web.AppRunner | None = None
        self._ids = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url if self._runner else None!r})"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``, the value to give a client as its base URL."""
        if self._runner is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> None:
        """Listen on ``host:port`` (port 0 picks a free one, stored in ``self.port``)."""
        if self._runner is not None:
            return
        self._semaphore = asyncio.Semaphore(self.slots) if self.slots else None
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/reset", self._reset)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_GRACE
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=4096)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening; in-flight handlers get a short grace period, then are cancelled."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def stats(self) -> dict[str, Any]:
        """Counters since start or the last ``reset()``; ``utilization`` is ``None`` without slots."""
        c = self._counters
        wall = (c.last_end - c.first_start) if c.first_start is not None and c.last_end is not None else 0.0
        utilization = c.busy_slot_seconds / (self.slots * wall) if self.slots and wall > 0 else None
        return {
            "requests": c.requests,
            "completed": c.completed,
            "in_flight": c.in_flight,
            "max_in_flight": c.max_in_flight,
            "active": c.active,
            "max_active": c.max_active,
            "slots": self.slots,
            "busy_slot_seconds": c.busy_slot_seconds,
            "wall_seconds": wall,
            "utilization": utilization,
            "responder_errors": c.responder_errors,
            "faults": dict(c.faults),
            "distinct_bodies": len(self._seen),
        }

    def reset(self) -> None:
        """Forget counters, recordings and seen bodies (fault policies start afresh).

        Requests already in flight finish in the old counters, so a warm-up cannot skew a benchmark.
        """
        self._counters = _Counters()
        self.requests = []
        self._seen = {}

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        c = self._counters
        now = time.monotonic()
        c.requests += 1
        c.in_flight += 1
        if c.in_flight > c.max_in_flight:
            c.max_in_flight = c.in_flight
        if c.first_start is None:
            c.first_start = now
        rec: RecordedRequest | None = None
        try:
            try:
                body = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                return self._error(400, "request body is not a JSON object", "invalid_request_error", None)
            if self.record:
                headers = request.headers
                rec = RecordedRequest(body, now, "Authorization" in headers, headers.get("Content-Type"))
                self.requests.append(rec)
            if (
                self._api_key is not None
                and request.headers.get("Authorization") != f"Bearer {self._api_key}"
            ):
                response = self._error(401, "invalid API key", "invalid_request_error", "invalid_api_key")
            else:
                fault = self._fault_for(body)
                if fault is not None:
                    if rec is not None:
                        rec.fault = fault
                    c.faults[fault.kind.value] += 1
                    response = await self._faulty(request, body, fault)
                else:
                    response = await self._answer(body, rec)
            if rec is not None:
                rec.end = time.monotonic()
                rec.status = response.status
            return response
        finally:
            c.in_flight -= 1
            c.last_end = time.monotonic()

    def _fault_for(self, body: dict[str, Any]) -> Fault | None:
        if self.faults is None:
            return None
        key = body_digest(body)
        seen = self._seen.get(key, 0)
        self._seen[key] = seen + 1
        return self.faults(body, seen)

    async def _answer(self, body: dict[str, Any], rec: RecordedRequest | None) -> web.Response:
        c = self._counters
        sem = self._semaphore
        latency = self.latency
        if sem is None and latency == 0:
            response = self._respond(body)
            c.completed += 1
            return response
        if sem is not None:
            await sem.acquire()
        try:
            began = time.monotonic()
            if rec is not None:
                rec.slot_start = began
            c.active += 1
            if c.active > c.max_active:
                c.max_active = c.active
            try:
                delay = latency(body) if callable(latency) else latency
                if delay > 0:
                    await asyncio.sleep(delay)
                response = self._respond(body)
            finally:
                c.active -= 1
                c.busy_slot_seconds += time.monotonic() - began
        finally:
            if sem is not None:
                sem.release()
        c.completed += 1
        return response

    def _respond(self, body: dict[str, Any]) -> web.Response:
        try:
            result = self.responder(body)
        except Exception as exc:  # a broken responder must fail loudly, not hang the client
            self._counters.responder_errors += 1
            _log.exception("fake server responder failed")
            return self._error(500, f"responder raised {type(exc).__name__}: {exc}", "server_error", None)
        reply = result if isinstance(result, Reply) else Reply(result)
        text = reply.text
        prompt_tokens = reply.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = _word_count(body.get("messages"))
        completion_tokens = reply.completion_tokens
        if completion_tokens is None:
            completion_tokens = len(text.split())
        self._ids += 1
        payload = {
            "id": f"chatcmpl-fake-{self._ids}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return web.Response(body=orjson.dumps(payload), content_type=_JSON)

    async def _faulty(self, request: web.Request, body: dict[str, Any], fault: Fault) -> web.Response:
        kind = fault.kind
        msg = fault.message
        if kind is FaultKind.RATE_LIMIT:
            response = self._error(
                429, msg or "rate limit reached", "rate_limit_error", "rate_limit_exceeded"
            )
            if fault.retry_after is not None:
                response.headers["Retry-After"] = _format_retry_after(fault.retry_after)
            return response
        if kind is FaultKind.SERVER_ERROR:
            return self._error(500, msg or "internal server error", "server_error", None)
        if kind is FaultKind.BAD_REQUEST:
            return self._error(400, msg or "invalid request", "invalid_request_error", None)
        if kind is FaultKind.AUTH:
            return self._error(401, msg or "invalid API key", "invalid_request_error", "invalid_api_key")
        if kind is FaultKind.CONTEXT_LENGTH:
            text = msg or "This model's maximum context length is 2048 tokens; the request is longer."
            return self._error(400, text, "invalid_request_error", "context_length_exceeded")
        if kind is FaultKind.GARBAGE:
            return web.Response(body=b"<html>502 Bad Gateway</html>", content_type="text/html")
        if kind is FaultKind.DISCONNECT:
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)  # never reaches the closed socket
        # HANG: stall without holding a slot; the client normally gives up first.
        await asyncio.sleep(fault.hang_seconds)
        return self._respond(body)

    @staticmethod
    def _error(status: int, message: str, type_: str, code: str | None) -> web.Response:
        return web.Response(status=status, body=_error_body(message, type_, code), content_type=_JSON)

    async def _models(self, request: web.Request) -> web.Response:
        payload = {
            "object": "list",
            "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "coevol-fake"}],
        }
        return web.Response(body=orjson.dumps(payload), content_type=_JSON)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.stats()), content_type=_JSON)

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(body=b'{"ok":true}', content_type=_JSON)


# ---------------------------------------------------------------------------------------------------
# Separate-process mode


def _load_responder(path: str) -> Responder:
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m coevol.testing.fake_server",
        description="Fake OpenAI-compatible server for tests and benchmarks.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed in the READY line)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds each answer holds a slot")
    p.add_argument("--slots", type=int, default=None, help="concurrent answers (default unlimited)")
    p.add_argument("--responder", default=None, help="import path module:attr of a Responder")
    p.add_argument("--model", default="fake-model")
    p.add_argument("--fault-rate", type=float, default=0.0, help="fraction of distinct bodies to fail once")
    p.add_argument(
        "--fault-kinds", default="rate_limit,server_error", help="comma-separated FaultKind values"
    )
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds on rate_limit faults")
    p.add_argument("--hang-seconds", type=float, default=30.0)
    p.add_argument("--no-record", action="store_true", help="do not keep request bodies (benchmarks)")
    return p


def _server_from_args(args: argparse.Namespace) -> FakeOpenAIServer:
    policy: FaultPolicy | None = None
    if args.fault_rate > 0:
        try:
            kinds = [FaultKind(k.strip()) for k in args.fault_kinds.split(",") if k.strip()]
        except ValueError as exc:
            raise SystemExit(f"--fault-kinds: {exc}; choose from {', '.join(FaultKind)}") from None
        faults = [Fault(k, retry_after=args.retry_after, hang_seconds=args.hang_seconds) for k in kinds]
        policy = first_attempt_faults(faults, args.fault_rate, seed=args.fault_seed)
    return FakeOpenAIServer(
        _load_responder(args.responder) if args.responder else echo_responder,
        latency=args.latency,
        slots=args.slots,
        faults=policy,
        record=not args.no_record,
        host=args.host,
        port=args.port,
        model=args.model,
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
        [sys.executable, "-m", "coevol.testing.fake_server", *cli_args],
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


if __name__ == "__main__":
    # Run the imported module, not this ``__main__`` copy, so a responder returning
    # ``coevol.testing.fake_server.Reply`` passes the server's isinstance check.
    from coevol.testing.fake_server import main as _main

    _main()
