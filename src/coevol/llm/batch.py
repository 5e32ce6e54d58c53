"""``--batch``: every call of a role goes through its server's Batch API, stage by stage.

The loop does not change. ``BatchBackend.complete(request)`` queues the request and waits for its
answer; the queued calls of every batch backend are sent, one batch per endpoint (split to respect
the provider's limits on lines and bytes per file), at the moment every unfinished unit of work
(a sample, a comparison) is waiting on a batched call: nothing else can make progress, so waiting
longer would only add latency, and sending earlier would split one stage into several batches.

Units say they exist with ``work_unit()`` (the row runner wraps each sample in it); a unit waits
while any of its calls (in its task or in tasks it started) is queued or in a batch. The
``BatchGate`` of the event loop counts both and flushes after a few loop iterations in which
nothing changed. A unit blocked on something else (an identical call already in a batch for another
sample) never counts as waiting: a debounce after the last change (``debounce`` seconds) is the
fallback, and the only rule when no unit is declared at all (a caller without the hook).

Durable: the input file's id and its calls are stored before the batch is created, the batch id
before it is first polled, and every answer before the batch is marked done. A run killed at any
moment and started again polls the stored batches (or finds the one created from the stored file)
instead of sending them again, and replays finished answers from the store. A line that failed or
expired raises its error to the dispatcher, whose retry queues it again, alone, for the next batch;
a batch that fails as a whole fails each of its calls with the provider's error, likewise retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol, TypeVar

from coevol.errors import LLMError, RetryableError, ServerError
from coevol.llm.batch_api import TERMINAL, BatchAPI, BatchInfo, input_line, parse_result_line
from coevol.llm.types import ChatRequest, Completion

if TYPE_CHECKING:  # the store is a layer above; only its types are named here
    from coevol.store.sqlite import OpenBatch, Store

__all__ = [
    "BatchBackend",
    "BatchGate",
    "BatchLimits",
    "BatchView",
    "Online",
    "describe_batches",
    "gate_for",
    "split_lines",
    "stage_of",
    "waiting_on_batch",
    "work_unit",
]

_SETTLE: Final = 3  # loop iterations without change before a quiet gate flushes
_UNIT: ContextVar[tuple[BatchGate, int] | None] = ContextVar("coevol_batch_unit", default=None)
_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BatchGate] = weakref.WeakKeyDictionary()
_IDS = itertools.count(1)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """A provider's limits on one input file (OpenAI: 50,000 requests, 200 MB)."""

    max_lines: int = 50_000
    max_bytes: int = 190 * 1024 * 1024  # a margin under 200 MB


class BatchGate:
    """Knows when every declared unit of work waits on a batched call; then flushes the queues."""

    def __init__(self, *, debounce: float = 2.0) -> None:
        self.debounce = debounce
        self.units = 0
        self.waves = 0  # flushes so far: the stage counter the display shows
        self._waits: dict[int, int] = {}  # unit -> calls it waits on
        self._backends: weakref.WeakSet[BatchBackend] = weakref.WeakSet()
        self._version = 0
        self._changed_at = time.monotonic()
        self._settling = False
        self._timer: asyncio.TimerHandle | None = None

    def register(self, backend: BatchBackend) -> None:
        self._backends.add(backend)

    def quiet(self) -> bool:
        """Every declared unit waits on at least one batched call."""
        return self.units > 0 and len(self._waits) >= self.units

    def _queued(self) -> bool:
        return any(b.queued for b in self._backends)

    def changed(self) -> None:
        """Something moved (a call queued or answered, a unit began or ended): look again soon."""
        self._version += 1
        self._changed_at = time.monotonic()
        if not self._queued():
            return
        loop = asyncio.get_running_loop()
        if self.quiet() and not self._settling:
            self._settling = True
            loop.call_soon(self._settle, 0, self._version)
        if self._timer is None:
            self._timer = loop.call_later(self.debounce, self._debounced)

    def _settle(self, hops: int, version: int) -> None:
        if not self.quiet() or not self._queued():
            self._settling = False
            return
        if version != self._version:
            hops, version = 0, self._version
        if hops < _SETTLE:
            asyncio.get_running_loop().call_soon(self._settle, hops + 1, version)
            return
        self._settling = False
        self.flush()

    def _debounced(self) -> None:
        self._timer = None
        if not self._queued():
            return
        idle = time.monotonic() - self._changed_at
        if idle >= self.debounce:
            self.flush()
        else:
            self._timer = asyncio.get_running_loop().call_later(self.debounce - idle, self._debounced)

    def flush(self) -> None:
        """Send what every backend has queued: one stage, one batch (or a few) per endpoint."""
        self.waves += 1
        for backend in list(self._backends):
            backend.flush(self.waves)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """The current unit (if it belongs to this gate) waits on a batched call while inside."""
        current = _UNIT.get()
        if current is None or current[0] is not self:
            yield
            return
        unit = current[1]
        self._waits[unit] = self._waits.get(unit, 0) + 1
        self.changed()
        try:
            yield
        finally:
            left = self._waits[unit] - 1
            if left:
                self._waits[unit] = left
            else:
                del self._waits[unit]
            self.changed()


def gate_for(loop: asyncio.AbstractEventLoop | None = None) -> BatchGate:
    """The event loop's gate (one per loop: every batch backend and unit of that loop share it)."""
    loop = loop or asyncio.get_running_loop()
    gate = _GATES.get(loop)
    if gate is None:
        gate = _GATES[loop] = BatchGate()
    return gate


@contextlib.contextmanager
def work_unit() -> Iterator[None]:
    """Declare one unit of work (a sample) for the code inside; costs two counter updates."""
    gate = gate_for()
    unit = next(_IDS)
    gate.units += 1
    token = _UNIT.set((gate, unit))
    try:
        yield
    finally:
        _UNIT.reset(token)
        gate.units -= 1
        gate._waits.pop(unit, None)
        gate.changed()


def waiting_on_batch() -> contextlib.AbstractContextManager[None]:
    """The current unit waits on a batched call made by another (an identical request in flight)."""
    return gate_for().waiting()


# --- pure helpers ---------------------------------------------------------------------------------

_STAGE_ORDER: Final = ("debate-1", "debate-2", "advise", "edit", "judge", "judge re-ask", "other")


def stage_of(roles: Mapping[str, int]) -> str:
    """The loop stages a batch holds, from its calls' ``role/kind`` counts: ``"debate-2"``. Pure."""
    found = set()
    for label in roles:
        role, _, kind = label.partition("/")
        if role in ("positive", "critical"):
            found.add("debate-2" if kind == "memory" else "debate-1")
        elif role == "advisor":
            found.add("advise")
        elif role == "editor":
            found.add("edit")
        elif role == "judge":
            found.add("judge re-ask" if kind == "reask" else "judge")
        else:
            found.add("other")
    return ", ".join(s for s in _STAGE_ORDER if s in found)


def split_lines(lines: list[bytes], limits: BatchLimits) -> list[list[int]]:
    """Indices of ``lines`` grouped into files within the limits, in order. Pure.

    A single line larger than ``max_bytes`` still gets a file of its own (the provider refuses it,
    and that refusal reaches its caller).
    """
    files: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, line in enumerate(lines):
        if current and (len(current) >= limits.max_lines or size + len(line) > limits.max_bytes):
            files.append(current)
            current, size = [], 0
        current.append(i)
        size += len(line)
    if current:
        files.append(current)
    return files


@dataclass(slots=True)
class BatchView:
    """One batch as the progress display shows it."""

    file_id: str
    batch_id: str | None
    stage: str
    wave: int
    lines: int
    status: str = "uploading"
    completed: int = 0
    failed: int = 0
    submitted: float = field(default_factory=time.monotonic)
    note: str = ""


def describe_batches(views: list[BatchView], now: float) -> list[str]:
    """One line per batch in flight: ``batch_1 in_progress 120/400 · stage 3: debate-2 · 2m05s``. Pure."""
    out = []
    for v in views:
        waited = int(now - v.submitted)
        clock = f"{waited // 60}m{waited % 60:02d}s" if waited >= 60 else f"{waited}s"
        state = v.status.replace("_", " ")
        if v.status == "in_progress":
            state += f" {v.completed}/{v.lines}"
        note = f" ({v.note})" if v.note else ""
        out.append(
            f"batch {v.batch_id or v.file_id} {state}{note} · stage {v.wave}: {v.stage} · waited {clock}"
        )
    return out


# --- the backend ----------------------------------------------------------------------------------


class Online(Protocol):
    """What a batch backend wraps: the role's online server or group (its name, models, check)."""

    endpoint: str

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class _Call:
    request: ChatRequest
    label: str  # "role/kind" for the stage name and the stored call's role
    future: asyncio.Future[Completion]


class BatchBackend:
    """A ``Backend`` that answers through the Batch API of the server ``online`` talks to.

    ``endpoint`` is ``online``'s, so cache keys (and the store, and resuming) are the same as an
    online run's. ``roles`` maps each role's system prompt to its name, for stage names only.
    """

    batched: ClassVar[bool] = True  # the dispatcher's switch: no in-flight limit, rate bucket or timeout

    def __init__(
        self,
        online: Online,
        api: BatchAPI,
        *,
        store: Store | None = None,
        poll: float = 30.0,
        limits: BatchLimits | None = None,
        roles: Mapping[str, str] | None = None,
        grace: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.online = online
        self.endpoint = online.endpoint
        self.api = api
        self.store = store
        self.poll = poll
        self.limits = limits or BatchLimits()
        self.roles = dict(roles or {})
        self.grace = grace  # past expires_at + grace, a batch still running is cancelled
        self.clock = clock
        self.views: dict[str, BatchView] = {}
        self.batches_sent = 0
        self.lines_sent = 0
        self._queue: dict[str, _Call] = {}
        self._calls: dict[str, _Call] = {}  # key -> the call awaiting its answer (queued or sent)
        self._recovered: dict[str, str] = {}  # key -> file id of a stored batch that will answer it
        self._tasks: set[asyncio.Task[None]] = set()
        self._gate: BatchGate | None = None

    @property
    def shown(self) -> str:
        """What the trace says served the role: what the online server or group would say."""
        shown = getattr(self.online, "shown", None)
        return shown if isinstance(shown, str) else self.endpoint

    @property
    def queued(self) -> int:
        return len(self._queue)

    def __repr__(self) -> str:
        return f"BatchBackend({self.endpoint!r})"

    # Backend ----------------------------------------------------------------------------------
    async def complete(self, request: ChatRequest) -> Completion:
        gate = self._start()
        key = request.key()
        call = self._calls.get(key)
        if call is None:
            future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
            call = self._calls[key] = _Call(request, self._label(request), future)
            if key not in self._recovered:
                self._queue[key] = call
                gate.changed()
        with gate.waiting():
            return await asyncio.shield(call.future)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for call in self._calls.values():
            if not call.future.done():
                call.future.cancel()
        await self.api.aclose()
        await self.online.aclose()

    async def list_models(self, *, within: float | None = None) -> list[str]:
        lister = getattr(self.online, "list_models", None)
        if lister is None:
            return []
        models: list[str] = await lister(within=within) if within is not None else await lister()
        return models

    async def check(self) -> None:
        """The online setup check, then whether the server serves the Batch API at all."""
        check = getattr(self.online, "check", None)
        if check is not None:
            await check()
        await self.api.probe()

    # queueing ---------------------------------------------------------------------------------
    def _start(self) -> BatchGate:
        """The gate, registered once; the first call also resumes the batches a stopped run left."""
        if self._gate is None:
            self._gate = gate_for()
            self._gate.register(self)
            if self.store is not None:
                for stored in self.store.open_batches(self.endpoint):
                    for key in stored.lines.values():
                        self._recovered[key] = stored.file_id
                    self._spawn(self._resume(stored))
        return self._gate

    def _label(self, request: ChatRequest) -> str:
        messages = request.messages
        head = messages[0]["content"] if messages else ""
        role = next((name for text, name in self.roles.items() if head.startswith(text)), "other")
        kind = "reask" if request.attempt else "memory" if len(messages) > 2 else ""
        return f"{role}/{kind}" if kind else role

    def flush(self, wave: int) -> None:
        """Send the queue as one batch per file the limits allow (called by the gate)."""
        if not self._queue:
            return
        calls = list(self._queue.items())
        self._queue.clear()
        lines = [input_line(str(i), call.request) for i, (_, call) in enumerate(calls)]
        for indices in split_lines(lines, self.limits):
            part = [(str(i), calls[i][0], calls[i][1]) for i in indices]
            self._spawn(self._run_new(part, b"".join(lines[i] for i in indices), wave))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # one batch's life -------------------------------------------------------------------------
    async def _run_new(self, part: list[tuple[str, str, _Call]], content: bytes, wave: int) -> None:
        """Upload, store, create, store the id, poll, take the answers; errors go to the callers."""
        keys = {cid: key for cid, key, _ in part}
        counts: dict[str, int] = {}
        for _, _, call in part:
            counts[call.label] = counts.get(call.label, 0) + 1
        view = BatchView("(uploading)", None, stage_of(counts), wave, len(part))
        token = f"wave{wave}-{id(view)}"
        self.views[token] = view
        try:
            file_id = await self._retrying(self.api.upload, content, f"coevol-{token}.jsonl")
            view.file_id = file_id
            if self.store is not None:
                self.store.put_batch(file_id, self.endpoint, keys.items())
            info = await self._retrying(self.api.create, file_id)
            self.batches_sent += 1
            self.lines_sent += len(part)
            await self._follow(file_id, info, keys, view)
        except Exception as exc:  # an LLMError for the callers; anything else (the store) stops the run
            self._fail(keys.values(), exc)
        finally:
            self.views.pop(token, None)

    async def _resume(self, stored: OpenBatch) -> None:
        """A batch a stopped run stored: find or create it from its file, then follow it."""
        view = BatchView(stored.file_id, stored.batch_id, "resumed", 0, len(stored.lines), status="resuming")
        self.views[stored.file_id] = view
        try:
            if stored.batch_id is not None:
                info = await self._retrying(self.api.retrieve, stored.batch_id or "")
            else:
                found = await self._retrying(self.api.find, stored.file_id)
                if found is None:
                    found = await self._retrying(self.api.create, stored.file_id)
                    self.batches_sent += 1
                info = found
            await self._follow(stored.file_id, info, stored.lines, view)
        except Exception as exc:
            self._fail(stored.lines.values(), exc)
        finally:
            self.views.pop(stored.file_id, None)
            for key in stored.lines.values():
                self._recovered.pop(key, None)

    async def _follow(self, file_id: str, info: BatchInfo, keys: Mapping[str, str], view: BatchView) -> None:
        view.batch_id = info.id
        if self.store is not None:
            self.store.set_batch_id(file_id, info.id)  # before the first poll
        cancelled = False
        while True:
            self._show(view, info)
            if info.status in TERMINAL:
                break
            if not cancelled and self._overdue(info):
                view.note = "past its completion window: cancelled, its unfinished lines go again"
                info = await self._retrying(self.api.cancel, info.id)
                cancelled = True
                continue
            await asyncio.sleep(self.poll)
            info = await self._retrying(self.api.retrieve, info.id)
        await self._collect(file_id, info, keys)

    def _overdue(self, info: BatchInfo) -> bool:
        return info.expires_at is not None and self.clock() > info.expires_at + self.grace

    def _show(self, view: BatchView, info: BatchInfo) -> None:
        view.status, view.completed, view.failed = info.status, info.completed, info.failed

    async def _collect(self, file_id: str, info: BatchInfo, keys: Mapping[str, str]) -> None:
        """Read the output and error files, store every answer, mark the batch done, answer callers."""
        if info.status == "failed":
            why = "; ".join(info.errors) or "no reason given"
            self._fail(keys.values(), ServerError(f"batch {info.id} failed: {why}"))
            if self.store is not None:
                self.store.finish_batch(file_id)
            return
        results: dict[str, Completion | LLMError] = {}
        for fid in (info.output_file_id, info.error_file_id):
            if fid is None:
                continue
            raw = await self._retrying(self.api.content, fid)
            for line in raw.splitlines():
                if line.strip():
                    cid, result = parse_result_line(line)
                    if cid in keys:
                        results[keys[cid]] = result
        if self.store is not None:
            for key, result in results.items():
                if isinstance(result, Completion):
                    call = self._calls.get(key)
                    role = call.label.partition("/")[0] if call is not None else "batch"
                    model = call.request.model if call is not None else ""
                    self.store.put_call(key, role, model, result)
            self.store.finish_batch(file_id)
        missing = ServerError(f"batch {info.id} ({info.status}) returned no result for this call")
        for key in keys.values():
            self._answer(key, results.get(key, missing))

    def _answer(self, key: str, result: Completion | Exception) -> None:
        call = self._calls.pop(key, None)
        if call is None or call.future.done():
            return
        if isinstance(result, Completion):
            call.future.set_result(result)
        else:
            call.future.set_exception(result)

    def _fail(self, keys: Iterable[str], error: Exception) -> None:
        for key in keys:
            self._queue.pop(key, None)
            self._answer(key, error)

    async def _retrying(self, step: Callable[..., Awaitable[_T]], *args: Any, tries: int = 6) -> _T:
        """One exchange with the Batch API, retried on transient errors (polls must survive blips)."""
        failures = 0
        while True:
            try:
                return await step(*args)
            except RetryableError:
                failures += 1
                if failures >= tries:
                    raise
            await asyncio.sleep(min(60.0, self.poll * failures))
