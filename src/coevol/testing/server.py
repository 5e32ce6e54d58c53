"""A fake OpenAI-compatible server: a real HTTP peer on loopback for tests and benchmarks.

Clients are exercised over real sockets, so connection pooling, timeouts and error translation are
tested as they run in production. The server can model a GPU's limited capacity (``slots`` busy for
``latency`` seconds each), inject faults deterministically (``coevol.testing.faults``), and record
every request, headers included, so tests can prove concurrency (overlapping intervals), retries
(the same body seen twice) and which ``Authorization`` header each server received.

``ThreadedServer`` runs one on a background thread, for tests whose client is a child process or
blocking code. ``python -m coevol.testing`` runs one in its own process (``coevol.testing.cli``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal, Self

import orjson
from aiohttp import web

from coevol.testing.batches import FakeBatches
from coevol.testing.faults import Fault, FaultKind, FaultPolicy, body_digest

__all__ = [
    "FakeOpenAIServer",
    "RecordedRequest",
    "Reply",
    "Responder",
    "ThreadedServer",
    "echo_responder",
    "token_logprobs",
    "word_count",
]

_log = logging.getLogger(__name__)

_JSON: Final = "application/json"
_SHUTDOWN_GRACE: Final = 0.5  # seconds a stopping server waits for in-flight handlers (hangs included)


@dataclass(frozen=True, slots=True)
class Reply:
    """A responder's full answer; token counts left ``None`` are estimated by word count.

    ``logprobs`` is ``choices[0].logprobs.content`` to send when the request asks for logprobs;
    ``None`` lets the server make it up (``token_logprobs``: every token certain).
    """

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"
    more: tuple[str, ...] = ()
    """Further choices, for a request with ``n`` > 1 (a responder decides whether to honour ``n``)."""
    logprobs: list[dict[str, Any]] | None = None


Responder = Callable[[dict[str, Any]], str | Reply]
"""Given the parsed request body, the assistant's answer. An exception becomes an HTTP 500."""


def echo_responder(body: dict[str, Any]) -> str:
    """The default responder: always ``"ok"``, whatever was asked."""
    return "ok"


_TOKEN_RE = re.compile(r"\s*(?:\d|[^\s\d]+)|\s+")


def token_logprobs(text: str) -> list[dict[str, Any]]:
    """``text`` as OpenAI chat logprobs, every token certain: digits are tokens of their own (as
    Qwen and Llama 3 split them), other runs of non-space characters keep their leading space."""
    return [
        {"token": t, "logprob": 0.0, "top_logprobs": [{"token": t, "logprob": 0.0}]}
        for t in _TOKEN_RE.findall(text)
    ]


def word_count(messages: Any) -> int:
    """The fake's token estimate for a message list: whitespace-separated words of every content."""
    if not isinstance(messages, list):
        return 0
    return sum(
        len(m["content"].split())
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("content"), str)
    )


@dataclass(slots=True)
class RecordedRequest:
    """One chat request as the server saw it (monotonic times, this process's clock).

    ``start`` is arrival, ``slot_start`` when it got a slot (``None`` if it never held one: faults,
    or cancelled while waiting), ``end`` when the answer was ready (``None`` if the client left).
    ``headers`` are the request's headers as sent (kept out of ``repr``: they may hold a test key).
    """

    body: dict[str, Any]
    start: float
    has_auth: bool
    content_type: str | None = None
    fault: Fault | None = None
    slot_start: float | None = None
    end: float | None = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def authorization(self) -> str | None:
        """The raw ``Authorization`` header, ``None`` when the client sent none."""
        return self.headers.get("Authorization")


@dataclass(slots=True)
class _Counters:
    requests: int = 0
    completed: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    active: int = 0
    max_active: int = 0
    busy_slot_seconds: float = 0.0
    queued: int = 0  # waiting for a slot now
    max_queued: int = 0
    queued_seconds: float = 0.0  # total time requests waited for a slot
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


def _error(status: int, message: str, type_: str, code: str | None) -> web.Response:
    return web.Response(status=status, body=_error_body(message, type_, code), content_type=_JSON)


# Faults answered with a fixed error: (status, type, code).
_ERROR_FAULTS: Final = {
    FaultKind.SERVER_ERROR: (500, "server_error", None),
    FaultKind.BAD_REQUEST: (400, "invalid_request_error", None),
    FaultKind.AUTH: (401, "invalid_request_error", "invalid_api_key"),
    FaultKind.CONTEXT_LENGTH: (400, "invalid_request_error", "context_length_exceeded"),
}


class FakeOpenAIServer:
    """An OpenAI-compatible chat server on an ephemeral loopback port; use as ``async with``.

    ``latency`` is seconds per answer (or ``body -> seconds``); with ``slots`` set, at most that many
    requests are answered at once and the rest queue, like a GPU serving a fixed batch. Faults are
    answered at once and bypass the slot model (a gateway rejecting, not a GPU working). With
    ``api_key`` set, a request without ``Authorization: Bearer <api_key>`` gets a 401.

    ``reports`` makes it say its capacity the way real servers do: ``"llama.cpp"`` answers
    ``GET /props`` (``total_slots``) and ``GET /slots``; ``"vllm"`` answers ``GET /metrics`` with
    ``vllm:num_requests_running`` and ``vllm:num_requests_waiting``. Without it those paths are 404,
    as on most servers.

    The Files and Batches endpoints are served by ``batches`` (``coevol.testing.batches``; a default
    one when not given), whose answers come from the same ``responder``; ``batch_api=False`` leaves
    them out (404), like a plain vLLM server.
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
        reports: Literal["llama.cpp", "vllm"] | None = None,
        batches: FakeBatches | None = None,
        batch_api: bool = True,
        logprobs: bool = True,
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
        self.reports = reports
        self._api_key = api_key
        self.batches = batches or FakeBatches()
        self.batch_api = batch_api
        self.logprobs = logprobs  # False: ignore the request's ``logprobs``, as some gateways do
        self.requests: list[RecordedRequest] = []
        self._seen: dict[str, int] = {}
        self._counters = _Counters()
        self._semaphore: asyncio.Semaphore | None = None
        self._runner: web.AppRunner | None = None
        self._ids = 0
        self._fault_handlers: dict[
            FaultKind, Callable[[web.Request, dict[str, Any], Fault], Awaitable[web.StreamResponse]]
        ] = {
            FaultKind.RATE_LIMIT: self._rate_limited,
            FaultKind.HOSTILE_ERROR: self._hostile_error,
            FaultKind.GARBAGE: self._garbage,
            FaultKind.DISCONNECT: self._disconnect,
            FaultKind.HANG: self._hang,
            FaultKind.STALL: self._stall,
            FaultKind.DRIP: self._drip,
            FaultKind.ENDLESS: self._endless,
            FaultKind.EMPTY: self._empty,
            FaultKind.TRUNCATED: self._truncated,
            FaultKind.HUGE: self._huge,
        }

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
        if self.reports == "llama.cpp":
            app.router.add_get("/props", self._props)
            app.router.add_get("/slots", self._slots)
        elif self.reports == "vllm":
            app.router.add_get("/metrics", self._metrics)
        if self.batch_api:
            self.batches.install(app, self)
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
        waited = c.completed
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
            "max_queued": c.max_queued,
            "queued_seconds": c.queued_seconds,
            "mean_queue_wait": c.queued_seconds / waited if waited else 0.0,
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
                return _error(400, "request body is not a JSON object", "invalid_request_error", None)
            if self.record:
                headers = request.headers
                rec = RecordedRequest(
                    body, now, "Authorization" in headers, headers.get("Content-Type"), headers=dict(headers)
                )
                self.requests.append(rec)
            response = await self._dispatch(request, body, rec)
            if rec is not None:
                rec.end = time.monotonic()
                rec.status = response.status
            return response
        finally:
            c.in_flight -= 1
            c.last_end = time.monotonic()

    async def _dispatch(
        self, request: web.Request, body: dict[str, Any], rec: RecordedRequest | None
    ) -> web.StreamResponse:
        if self._api_key is not None and request.headers.get("Authorization") != f"Bearer {self._api_key}":
            return _error(401, "invalid API key", "invalid_request_error", "invalid_api_key")
        fault = self._fault_for(body)
        if fault is None:
            return await self._answer(body, rec)
        if rec is not None:
            rec.fault = fault
        self._counters.faults[fault.kind.value] += 1
        handler = self._fault_handlers.get(fault.kind)
        if handler is not None:
            return await handler(request, body, fault)
        status, type_, code = _ERROR_FAULTS[fault.kind]
        return _error(status, fault.error_message(), type_, code)

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
            await self._wait_for_slot(sem, c)
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

    @staticmethod
    async def _wait_for_slot(sem: asyncio.Semaphore, c: _Counters) -> None:
        """Queue for a slot like a GPU server's scheduler does; the wait is counted."""
        if not sem.locked():
            await sem.acquire()
            return
        arrived = time.monotonic()
        c.queued += 1
        c.max_queued = max(c.max_queued, c.queued)
        try:
            await sem.acquire()
        finally:
            c.queued -= 1
            c.queued_seconds += time.monotonic() - arrived

    def _reply(self, body: dict[str, Any]) -> Reply | web.Response:
        """The responder's answer, or the 500 a raising responder earns."""
        try:
            result = self.responder(body)
        except Exception as exc:  # a broken responder must fail loudly, not hang the client
            self._counters.responder_errors += 1
            _log.exception("fake server responder failed")
            return _error(500, f"responder raised {type(exc).__name__}: {exc}", "server_error", None)
        return result if isinstance(result, Reply) else Reply(result)

    def _respond(self, body: dict[str, Any]) -> web.Response:
        reply = self._reply(body)
        return reply if isinstance(reply, web.Response) else self._completion(body, reply)

    def _payload(self, body: dict[str, Any], reply: Reply) -> bytes:
        text = reply.text
        prompt_tokens = reply.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = word_count(body.get("messages"))
        completion_tokens = reply.completion_tokens
        if completion_tokens is None:
            completion_tokens = sum(len(t.split()) for t in (text, *reply.more))
        self._ids += 1
        choices: list[dict[str, Any]] = [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": reply.finish_reason}
            for i, t in enumerate((text, *reply.more))
        ]
        if self.logprobs and body.get("logprobs") is True:
            content = reply.logprobs if reply.logprobs is not None else token_logprobs(text)
            choices[0]["logprobs"] = {"content": content, "refusal": None}
        payload = {
            "id": f"chatcmpl-fake-{self._ids}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return orjson.dumps(payload)

    def _completion(self, body: dict[str, Any], reply: Reply) -> web.Response:
        return web.Response(body=self._payload(body, reply), content_type=_JSON)

    # --- fault handlers: each answers one FaultKind ------------------------------------------------

    async def _rate_limited(self, request: web.Request, body: dict[str, Any], fault: Fault) -> web.Response:
        response = _error(429, fault.error_message(), "rate_limit_error", "rate_limit_exceeded")
        if fault.retry_after is not None:
            response.headers["Retry-After"] = _format_retry_after(fault.retry_after)
        return response

    async def _hostile_error(self, request: web.Request, body: dict[str, Any], fault: Fault) -> web.Response:
        type_ = "server_error" if fault.status >= 500 else "invalid_request_error"
        return _error(fault.status, fault.error_message(), type_, None)

    async def _garbage(self, request: web.Request, body: dict[str, Any], fault: Fault) -> web.Response:
        return web.Response(body=b"<html>502 Bad Gateway</html>", content_type="text/html")

    async def _disconnect(self, request: web.Request, body: dict[str, Any], fault: Fault) -> web.Response:
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)  # never reaches the closed socket

    async def _hang(self, request: web.Request, body: dict[str, Any], fault: Fault) -> web.Response:
        # Stall without holding a slot; the client normally gives up first.
        await asyncio.sleep(fault.hang_seconds)
        return self._respond(body)

    async def _stall(self, request: web.Request, body: dict[str, Any], fault: Fault) -> web.StreamResponse:
        reply = self._reply(body)
        if isinstance(reply, web.Response):
            return reply
        payload = self._payload(body, reply)
        response = web.StreamResponse(status=200, headers={"Content-Type": _JSON})
        response.content_length = len(payload)
        await response.prepare(request)  # status line and headers go out now ...
        await asyncio.sleep(fault.hang_seconds)  # ... the body only after the stall
        await response.write(payload)
        await response.write_eof()
        return response

    async def _drip(self, request: web.Request, body: dict[str, Any], fault: Fault) -> web.StreamResponse:
        reply = self._reply(body)
        if isinstance(reply, web.Response):
            return reply
        payload = self._payload(body, reply)
        response = web.StreamResponse(status=200, headers={"Content-Type": _JSON})
        response.content_length = len(payload)
        await response.prepare(request)
        for i in range(len(payload)):  # progress, one byte at a time: never idle, never done in time
            await asyncio.sleep(fault.interval)
            await response.write(payload[i : i + 1])
        await response.write_eof()
        return response

    async def _endless(self, request: web.Request, body: dict[str, Any], fault: Fault) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": _JSON})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"choices": [{"message": {"content": "')  # a first chunk ...
        await asyncio.sleep(fault.hang_seconds)  # ... and never the terminating one
        if request.transport is not None:
            request.transport.close()
        return response

    async def _empty(self, request: web.Request, body: dict[str, Any], fault: Fault) -> web.Response:
        return self._completion(body, Reply("", completion_tokens=0))

    async def _truncated(self, request: web.Request, body: dict[str, Any], fault: Fault) -> web.Response:
        reply = self._reply(body)
        if isinstance(reply, web.Response):
            return reply
        cut = Reply(fault.truncate(reply.text), reply.prompt_tokens, None, finish_reason="length")
        return self._completion(body, cut)

    async def _huge(self, request: web.Request, body: dict[str, Any], fault: Fault) -> web.Response:
        return self._completion(body, Reply(fault.huge_text()))

    # --- other routes ------------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        payload = {
            "object": "list",
            "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "coevol-fake"}],
        }
        return web.Response(body=orjson.dumps(payload), content_type=_JSON)

    async def _props(self, request: web.Request) -> web.Response:
        """llama.cpp server's ``/props``: how many requests it runs at once."""
        payload = {"total_slots": self.slots or 1, "model_path": self.model}
        return web.Response(body=orjson.dumps(payload), content_type=_JSON)

    async def _slots(self, request: web.Request) -> web.Response:
        """llama.cpp server's ``/slots``: one entry per slot, busy or idle."""
        active = self._counters.active
        slots = [{"id": i, "is_processing": i < active} for i in range(self.slots or 1)]
        return web.Response(body=orjson.dumps(slots), content_type=_JSON)

    async def _metrics(self, request: web.Request) -> web.Response:
        """vLLM's Prometheus ``/metrics``: requests running on the GPU and waiting for it."""
        c = self._counters
        label = f'{{model_name="{self.model}"}}'
        text = (
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{label} {float(c.active)}\n"
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{label} {float(c.queued)}\n"
        )
        return web.Response(text=text, content_type="text/plain")

    async def _stats(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.stats()), content_type=_JSON)

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(body=b'{"ok":true}', content_type=_JSON)


class ThreadedServer:
    """A ``FakeOpenAIServer`` on a daemon thread with its own event loop; use as ``with``.

    For tests whose client cannot share the server's loop: a CLI child process, blocking code, or a
    test that reads what the server received while a run is still going on.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.server = FakeOpenAIServer(**kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fake-server")

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(10)
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far."""
        return list(self.server.requests)

    def count(self) -> int:
        return len(self.server.requests)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Block until ``predicate()`` holds; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not reached")
            time.sleep(0.002)
