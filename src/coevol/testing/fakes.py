"""In-process fakes: test code that calls ``coevolve`` or a ``Dispatcher`` without any socket.

Four pieces, each a plain object a test builds in one line:

- ``ScriptedGenerate`` implements ``coevol.llm.types.Generate`` from a script: a list of answers in
  call order, a mapping ``role -> list``, or a function ``(role, messages, attempt) -> answer``. An
  answer is a text, a ``Reply`` (finish reason, token counts), a ``Completion``, or an exception
  instance to raise (``RateLimitError(...)``, ``ContextLengthError(...)``).
- ``Recorder`` wraps any ``Generate`` and keeps every call (role, messages, attempt, answer or
  error) with logical start and end ticks, so tests assert order and overlap without a clock.
- ``ResponderGenerate`` turns a body responder (``CoEvolResponder``, or anything the fake server
  accepts) into a ``Generate``, with the server's fault policies applied in-process.
- ``ScriptedBackend`` and ``ResponderBackend`` implement ``coevol.llm.types.Backend``, so a
  ``Dispatcher`` or a whole run (``build_engine(config, backends={base_url: backend})``) works
  without HTTP; they record every ``ChatRequest`` with the loop time it arrived.

For example, Algorithm 1 on the deterministic responder, then what the judge was asked::

    responder = CoEvolResponder(accept_up_to(1))
    calls = Recorder(responder.as_generate())
    result = await coevolve(Sample("Name a prime.", "", "9"), calls, load_prompts(), LoopSettings())
    assert result.response == "9" + EDIT_MARK and calls.roles().count("judge") == 4

Faults map to the errors ``OpenAIHTTPBackend`` raises for the same fault over HTTP (a test pins
this): a 429 is a ``RateLimitError`` with its ``retry_after``, a disconnect an
``APIConnectionError``, HTML a ``ServerError``; ``EMPTY``, ``TRUNCATED`` and ``HUGE`` are answers;
``HANG`` and ``STALL`` sleep ``hang_seconds`` first, ``DRIP`` one ``interval`` per byte of a short
answer; ``ENDLESS`` sleeps ``hang_seconds`` and is then the connection error of its closed socket.
The fakes model what a server sends, not the HTTP client's own checks (its timeout, any size cap).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, NamedTuple, TypeAlias

from coevol.errors import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    LLMError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from coevol.llm.logprobs import parse_chat_logprobs
from coevol.llm.openai_http import parse_retry_after
from coevol.llm.types import ChatRequest, Choice, Completion, Generate, GenParams, Message
from coevol.testing.faults import Fault, FaultKind, FaultPolicy, body_digest
from coevol.testing.server import Reply, Responder, word_count

__all__ = [
    "Answer",
    "BackendScript",
    "Call",
    "GenerateScript",
    "Recorder",
    "ResponderBackend",
    "ResponderGenerate",
    "ScriptExhausted",
    "ScriptedBackend",
    "ScriptedGenerate",
    "SentRequest",
    "fault_error",
    "to_completion",
]

_DRIP_OVERHEAD: Final = 250  # bytes of JSON around a dripped answer's text, roughly as the server sends it

Answer: TypeAlias = str | Reply | Completion | BaseException
"""What a script gives for one call: a text, a ``Reply``, a ``Completion``, or an error to raise."""

GenerateScript: TypeAlias = (
    Sequence[Answer] | Mapping[str, Sequence[Answer]] | Callable[[str, Sequence[Message], int], Answer]
)
"""Answers in call order, per role in call order, or ``(role, messages, attempt) -> answer``."""

BackendScript: TypeAlias = Callable[[ChatRequest, int], Answer]
"""``(request, calls before this one) -> answer``."""


class ScriptExhausted(AssertionError):
    """A scripted fake was called more often than its script has answers: the test is wrong."""


def to_completion(answer: Answer, messages: Sequence[Message] | Any = ()) -> Completion:
    """An answer as a ``Completion``, token counts estimated like the fake server; raises errors.

    A text finishes with "stop"; a ``Reply`` keeps its finish reason and any counts it gives.
    """
    if isinstance(answer, BaseException):
        raise answer
    if isinstance(answer, Completion):
        return answer
    reply = answer if isinstance(answer, Reply) else Reply(answer)
    prompt = reply.prompt_tokens if reply.prompt_tokens is not None else word_count(list(messages))
    completion = reply.completion_tokens
    if completion is None:
        completion = sum(len(text.split()) for text in (reply.text, *reply.more))
    more = tuple(Choice(text, reply.finish_reason) for text in reply.more)
    logprobs = None if reply.logprobs is None else parse_chat_logprobs({"content": reply.logprobs})
    return Completion(reply.text, prompt, completion, reply.finish_reason, more=more, logprobs=logprobs)


class ScriptedGenerate:
    """A ``Generate`` that answers from a script (see ``GenerateScript``).

    Each call yields to the event loop once (``delay`` seconds, 0 by default) before it answers, as
    a real call would, so concurrent calls (the two debaters, the two judge orders) overlap.
    """

    def __init__(self, script: GenerateScript, *, delay: float = 0.0) -> None:
        self.script = script
        self.delay = delay
        self._next: dict[str | None, int] = {}

    def _pick(self, key: str | None, answers: Sequence[Answer]) -> Answer:
        i = self._next.get(key, 0)
        if i >= len(answers):
            where = f" for role {key!r}" if key is not None else ""
            raise ScriptExhausted(f"script has {len(answers)} answers{where}; call {i + 1} asked for more")
        self._next[key] = i + 1
        return answers[i]

    def _answer(self, role: str, messages: Sequence[Message], attempt: int) -> Answer:
        script = self.script
        if callable(script):
            return script(role, messages, attempt)
        if isinstance(script, Mapping):
            if role not in script:
                raise ScriptExhausted(f"script has no answers for role {role!r}")
            return self._pick(role, script[role])
        return self._pick(None, script)

    async def __call__(
        self, role: str, messages: Sequence[Message], *, attempt: int = 0, seed: int | None = None, n: int = 1
    ) -> Completion:
        """One answer from the script (one choice, whatever ``n`` asks, as llama.cpp's server)."""
        await asyncio.sleep(self.delay)
        return to_completion(self._answer(role, messages, attempt), messages)


@dataclass(slots=True)
class Call:
    """One call a ``Recorder`` saw. ``started``/``ended`` are ticks of the recorder's own clock."""

    role: str
    messages: tuple[Message, ...]
    attempt: int
    started: int
    ended: int | None = None
    answer: Completion | None = None
    error: BaseException | None = None
    seed: int | None = None
    n: int = 1

    @property
    def text(self) -> str | None:
        """The answer's text, ``None`` when the call raised or is still running."""
        return None if self.answer is None else self.answer.text

    def overlaps(self, other: Call) -> bool:
        """Both were in flight at one moment (each started before the other ended)."""
        if self.ended is None or other.ended is None:
            return True
        return self.started < other.ended and other.started < self.ended


class Recorder:
    """Wraps a ``Generate`` and records every call in start order; itself a ``Generate``.

    Messages are copied at call time, so a list the caller mutates later does not rewrite history.
    ``in_flight`` and ``peak`` count calls running at once.
    """

    def __init__(self, inner: Generate) -> None:
        self.inner = inner
        self.calls: list[Call] = []
        self.in_flight = 0
        self.peak = 0
        self._tick = 0

    def _now(self) -> int:
        self._tick += 1
        return self._tick

    async def __call__(
        self, role: str, messages: Sequence[Message], *, attempt: int = 0, seed: int | None = None, n: int = 1
    ) -> Completion:
        call = Call(role, tuple(dict(m) for m in messages), attempt, self._now(), seed=seed, n=n)
        self.calls.append(call)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            call.answer = await self.inner(role, messages, attempt=attempt, seed=seed, n=n)
            return call.answer
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            self.in_flight -= 1
            call.ended = self._now()

    def roles(self) -> list[str]:
        """The role of every call, in start order."""
        return [c.role for c in self.calls]

    def of(self, role: str) -> list[Call]:
        """The calls made for ``role``, in start order."""
        return [c for c in self.calls if c.role == role]


def fault_error(fault: Fault, where: str = "fake://") -> LLMError | None:
    """The error ``OpenAIHTTPBackend`` raises for ``fault`` over HTTP; ``None`` for an answer fault."""
    kind = fault.kind
    msg = fault.error_message()
    if kind is FaultKind.RATE_LIMIT:
        after = fault.retry_after
        seconds = parse_retry_after(after) if isinstance(after, str) else after
        return RateLimitError(f"HTTP 429 from {where}: {msg}", retry_after=seconds)
    if kind is FaultKind.SERVER_ERROR:
        return ServerError(f"HTTP 500 from {where}: {msg}", status=500)
    if kind is FaultKind.BAD_REQUEST:
        return BadRequestError(f"HTTP 400 from {where}: {msg}", status=400)
    if kind is FaultKind.AUTH:
        return AuthenticationError(f"HTTP 401 from {where}: {msg}", status=401)
    if kind is FaultKind.CONTEXT_LENGTH:
        return ContextLengthError(f"HTTP 400 from {where}: {msg}", status=400)
    if kind is FaultKind.HOSTILE_ERROR:
        return _status_error(fault.status, f"HTTP {fault.status} from {where}: {msg}")
    if kind is FaultKind.GARBAGE:
        return ServerError(f"malformed completion from {where}: <html>502 Bad Gateway</html>", status=200)
    if kind is FaultKind.DISCONNECT:
        return APIConnectionError(f"POST {where} failed: ServerDisconnectedError: Server disconnected")
    return None


def _status_error(status: int, text: str) -> LLMError:
    if status == 429:
        return RateLimitError(text, status=status)
    if status >= 500:
        return ServerError(text, status=status)
    if status in (401, 403):
        return AuthenticationError(text, status=status)
    if status == 404:
        return NotFoundError(text, status=status)
    return BadRequestError(text, status=status)


class _FaultyResponder:
    """A body responder with a fault policy, counting repeated bodies like the fake server."""

    def __init__(self, responder: Responder, faults: FaultPolicy | None, where: str) -> None:
        self.responder = responder
        self.faults = faults
        self.where = where
        self._seen: dict[str, int] = {}

    def _fault(self, body: dict[str, Any]) -> Fault | None:
        if self.faults is None:
            return None
        key = body_digest(body)
        seen = self._seen.get(key, 0)
        self._seen[key] = seen + 1
        return self.faults(body, seen)

    def _respond(self, body: dict[str, Any]) -> Reply:
        try:
            result = self.responder(body)
        except Exception as exc:  # the server's 500 for a raising responder
            raise ServerError(
                f"HTTP 500 from {self.where}: responder raised {type(exc).__name__}: {exc}", status=500
            ) from exc
        return result if isinstance(result, Reply) else Reply(result)

    async def answer(self, body: dict[str, Any]) -> Completion:
        fault = self._fault(body)
        messages = body.get("messages", [])
        if fault is None:
            return to_completion(self._respond(body), messages)
        error = fault_error(fault, self.where)
        if error is not None:
            raise error
        kind = fault.kind
        if kind in (FaultKind.HANG, FaultKind.STALL):
            await asyncio.sleep(fault.hang_seconds)
            return to_completion(self._respond(body), messages)
        if kind is FaultKind.DRIP:
            reply = self._respond(body)
            await asyncio.sleep(fault.interval * (len(reply.text) + _DRIP_OVERHEAD))
            return to_completion(reply, messages)
        if kind is FaultKind.ENDLESS:
            await asyncio.sleep(fault.hang_seconds)
            raise APIConnectionError(f"POST {self.where} failed: the answer ended before it was complete")
        if kind is FaultKind.EMPTY:
            return to_completion(Reply("", completion_tokens=0), messages)
        if kind is FaultKind.HUGE:
            return to_completion(Reply(fault.huge_text()), messages)
        reply = self._respond(body)  # TRUNCATED
        return to_completion(Reply(fault.truncate(reply.text), reply.prompt_tokens, None, "length"), messages)


class ResponderGenerate:
    """A body responder as an in-process ``Generate``: the body is what the HTTP client would send.

    ``model`` and ``params`` fill the body's other fields, so a responder or fault policy that reads
    them sees what it would see over HTTP. A re-ask (``attempt`` > 0) sends the same body again, as
    over the wire, so ``first_attempt_faults`` lets it through.
    """

    def __init__(
        self,
        responder: Responder,
        *,
        model: str = "fake-model",
        params: GenParams | None = None,
        faults: FaultPolicy | None = None,
    ) -> None:
        self.model = model
        self.params = params or GenParams()
        self._inner = _FaultyResponder(responder, faults, "fake://")

    async def __call__(
        self, role: str, messages: Sequence[Message], *, attempt: int = 0, seed: int | None = None, n: int = 1
    ) -> Completion:
        await asyncio.sleep(0)
        params = self.params
        if seed is not None or n != 1:
            params = replace(params, seed=params.seed if seed is None else seed, n=n)
        body = {"model": self.model, "messages": [dict(m) for m in messages], **params.as_body()}
        return await self._inner.answer(body)


class SentRequest(NamedTuple):
    """A request a fake backend received, and the event loop's time when it arrived."""

    request: ChatRequest
    at: float


def _default_script(request: ChatRequest, n: int) -> Answer:
    return Completion(f"answer {n}", 10, 5, "stop")


class ScriptedBackend:
    """An in-process ``Backend``: ``script(request, n)`` answers the ``n``-th request (from 0).

    The default script answers ``"answer N"`` with 10 prompt and 5 completion tokens. Each request
    waits ``delay`` seconds (at least one yield to the loop); ``calls``, ``in_flight`` and ``peak``
    say what arrived and how much ran at once; ``closed`` tells whether ``aclose()`` was called.
    """

    def __init__(
        self, script: BackendScript | None = None, *, delay: float = 0.0, endpoint: str = "scripted://"
    ) -> None:
        self.script = script or _default_script
        self.delay = delay
        self.endpoint = endpoint
        self.calls: list[SentRequest] = []
        self.in_flight = 0
        self.peak = 0
        self.closed = False

    async def _result(self, request: ChatRequest, n: int) -> Completion:
        return to_completion(self.script(request, n), request.messages)

    async def complete(self, request: ChatRequest) -> Completion:
        n = len(self.calls)
        self.calls.append(SentRequest(request, asyncio.get_running_loop().time()))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return await self._result(request, n)
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        self.closed = True


class ResponderBackend(ScriptedBackend):
    """An in-process ``Backend`` answering with a body responder and the fake server's faults.

    The body is ``request.body()``, exactly what ``OpenAIHTTPBackend`` would POST.
    """

    def __init__(
        self,
        responder: Responder,
        *,
        faults: FaultPolicy | None = None,
        delay: float = 0.0,
        endpoint: str = "fake://",
    ) -> None:
        super().__init__(None, delay=delay, endpoint=endpoint)
        self._inner = _FaultyResponder(responder, faults, endpoint)

    async def _result(self, request: ChatRequest, n: int) -> Completion:
        return await self._inner.answer(request.body())
