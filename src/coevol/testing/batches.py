"""A fake of OpenAI's Files and Batches endpoints, served by ``FakeOpenAIServer`` beside chat.

It follows the documented shapes: ``POST /v1/files`` (multipart, ``purpose=batch``) returns a file
object; ``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window``) returns a batch
object that moves ``validating`` -> ``in_progress`` (``request_counts`` growing) -> ``finalizing``
-> ``completed`` and then names an ``output_file_id`` (answered lines) and an ``error_file_id``
(lines that failed); ``GET /v1/files/{id}/content`` returns either as JSONL. Output lines come back
in another order than the input, as they do from a provider.

Time is the test's: by default each ``GET /v1/batches/{id}`` advances that batch by one tick, so a
batch completes after a known number of polls whatever the wall clock says; pass a ``ManualClock``
to move every batch at once. Answers come from the server's own responder, so a run through the
Batch API and one through ``/v1/chat/completions`` get the same answers from the same responder.

Faults: ``line_faults`` makes chosen lines fail (an HTTP status in the error file);
``batch_faults`` makes a whole batch ``failed`` (with ``errors.data``) or stall until its
completion window passes and it ``expired`` (the unfinished lines then carry ``batch_expired``).
Input files are validated as a provider does (JSON lines, unique ``custom_id``, the batch's
``url``, at most ``max_lines`` lines and ``max_bytes`` bytes): a bad file fails the batch.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson
from aiohttp import BodyPartReader, web

if TYPE_CHECKING:
    from coevol.testing.server import FakeOpenAIServer

__all__ = [
    "BatchFault",
    "BatchTimeline",
    "FakeBatches",
    "LineFault",
    "ManualClock",
    "SubmittedBatch",
]

MAX_LINES: Final = 50_000
MAX_BYTES: Final = 200 * 1024 * 1024
_JSON: Final = "application/json"
_UNDONE: Final = {
    "batch_expired": "This request could not be executed before the completion window expired.",
    "batch_cancelled": "This request was not executed because the batch was cancelled.",
}

LineFault = Callable[[str, dict[str, Any], int], int | None]
"""``(custom_id, body, times this body was seen before) -> HTTP status of a failed line, or None``."""

BatchFault = Callable[[int], Literal["failed", "expire"] | None]
"""``batch ordinal (0, 1, ...) -> "failed"`` (fails whole), ``"expire"`` (stalls, then expires) or None."""


class ManualClock:
    """A clock the test moves: ``clock.advance(seconds)``. Every batch reads it."""

    def __init__(self, start: float | None = None) -> None:
        self.now = float(int(time.time())) if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True, slots=True)
class BatchTimeline:
    """How long each phase lasts, in ticks of the clock (a poll, by default)."""

    validating: float = 1.0
    in_progress: float = 2.0
    finalizing: float = 1.0
    window: float = 24 * 3600.0  # the "24h" completion window; an expiring batch ends here


@dataclass(slots=True)
class SubmittedBatch:
    """One batch as the fake received it, for tests: its lines and where it is."""

    id: str
    ordinal: int
    input_file_id: str
    endpoint: str
    completion_window: str
    created: float
    lines: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] | None = None  # validation or provider errors: the batch fails
    fault: str | None = None
    ticks: float = 0.0  # time as the default per-poll clock counts it
    polls: int = 0
    status: str = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    stamps: dict[str, int] = field(default_factory=dict)
    cancelled: bool = False

    @property
    def custom_ids(self) -> list[str]:
        return [str(line.get("custom_id")) for line in self.lines]


def _error(status: int, message: str, code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON)


def _shuffled(lines: list[bytes], ids: list[str]) -> list[bytes]:
    """A fixed order unlike the input's (a provider finishes lines in any order)."""
    order = sorted(range(len(lines)), key=lambda i: hashlib.sha256(ids[i].encode()).digest())
    return [lines[i] for i in order]


class FakeBatches:
    """The Files and Batches endpoints of one ``FakeOpenAIServer`` (its ``batches`` attribute)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] | None = None,
        timeline: BatchTimeline | None = None,
        line_faults: LineFault | None = None,
        batch_faults: BatchFault | None = None,
        max_lines: int = MAX_LINES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.clock = clock
        self.timeline = timeline or BatchTimeline()
        self.line_faults = line_faults
        self.batch_faults = batch_faults
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        # what a batch failed by ``batch_faults`` reports in ``errors.data``
        self.failure: dict[str, Any] = {"code": "server_error", "message": "the batch could not be run"}
        self.files: dict[str, tuple[str, str, bytes]] = {}  # id -> (purpose, filename, content)
        self.batches: dict[str, SubmittedBatch] = {}
        self.submitted: list[SubmittedBatch] = []  # in creation order
        self._seen: dict[bytes, int] = {}
        self._ids = 0
        self._server: FakeOpenAIServer | None = None
        self._epoch = float(int(time.time()))  # the per-poll clock's zero: timestamps look current

    def install(self, app: web.Application, server: FakeOpenAIServer) -> None:
        self._server = server
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}", self._file)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list)
        app.router.add_get("/v1/batches/{id}", self._retrieve)
        app.router.add_post("/v1/batches/{id}/cancel", self._cancel)

    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-fake-{self._ids}"

    def _now(self, batch: SubmittedBatch | None = None) -> float:
        if self.clock is not None:
            return self.clock()
        return batch.created + batch.ticks if batch is not None else self._epoch

    def _refused(self, request: web.Request) -> web.Response | None:
        server = self._server
        assert server is not None
        key = server._api_key
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            return _error(401, "invalid API key", "invalid_api_key")
        return None

    # files ----------------------------------------------------------------------------------------
    async def _upload(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        if not request.content_type.startswith("multipart/"):
            return _error(400, "expected a multipart/form-data upload")
        purpose, filename, content = None, "upload.jsonl", b""
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "purpose":
                purpose = (await part.read()).decode("utf-8", "replace")
            elif part.name == "file":
                filename = part.filename or filename
                content = bytes(await part.read())
        if purpose not in ("batch", "fine-tune", "assistants", "user_data", "evals", "vision"):
            return _error(400, f"invalid purpose {purpose!r}")
        file_id = self._next_id("file")
        self.files[file_id] = (purpose, filename, content)
        return web.json_response(self._file_object(file_id), dumps=lambda o: orjson.dumps(o).decode())

    def _file_object(self, file_id: str) -> dict[str, Any]:
        purpose, filename, content = self.files[file_id]
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(self._now()),
            "filename": filename,
            "purpose": purpose,
        }

    async def _file(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        file_id = request.match_info["id"]
        if file_id not in self.files:
            return _error(404, f"No such File object: {file_id}")
        return web.Response(body=orjson.dumps(self._file_object(file_id)), content_type=_JSON)

    async def _content(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        file_id = request.match_info["id"]
        if file_id not in self.files:
            return _error(404, f"No such File object: {file_id}")
        return web.Response(body=self.files[file_id][2], content_type="application/octet-stream")

    # batches --------------------------------------------------------------------------------------
    async def _create(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return _error(400, "request body is not a JSON object")
        file_id, endpoint, window = (
            body.get("input_file_id"),
            body.get("endpoint"),
            body.get("completion_window"),
        )
        if endpoint not in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"):
            return _error(400, f"invalid endpoint {endpoint!r}", "invalid_value")
        if window != "24h":
            return _error(
                400, f"invalid completion_window {window!r}: only '24h' is supported", "invalid_value"
            )
        if not isinstance(file_id, str) or file_id not in self.files:
            return _error(404, f"No such File object: {file_id}")
        if self.files[file_id][0] != "batch":
            return _error(400, f"file {file_id} was not uploaded with purpose 'batch'")
        batch = SubmittedBatch(self._next_id("batch"), len(self.submitted), file_id, endpoint, window, 0.0)
        batch.created = self._now() if self.clock is not None else self._epoch + batch.ordinal
        batch.stamps["created_at"] = int(batch.created)
        self._validate(batch, self.files[file_id][2])
        batch.counts["total"] = len(batch.lines) if batch.errors is None else 0
        if batch.errors is None and self.batch_faults is not None:
            batch.fault = self.batch_faults(batch.ordinal)
        self.batches[batch.id] = batch
        self.submitted.append(batch)
        return web.Response(body=orjson.dumps(self._object(batch)), content_type=_JSON)

    def _validate(self, batch: SubmittedBatch, content: bytes) -> None:
        """Parse the input file as a provider does; problems go to ``batch.errors`` (it will fail)."""
        errors: list[dict[str, Any]] = []
        if len(content) > self.max_bytes:
            errors.append({"code": "file_too_large", "message": f"file exceeds {self.max_bytes} bytes"})
        raw_lines = [line for line in content.split(b"\n") if line.strip()]
        if len(raw_lines) > self.max_lines:
            errors.append(
                {"code": "too_many_requests", "message": f"{len(raw_lines)} requests, max {self.max_lines}"}
            )
        seen: set[str] = set()
        for number, raw in enumerate(raw_lines, 1):
            problem = self._line_problem(raw, batch.endpoint, seen)
            if isinstance(problem, str):
                errors.append({"code": "invalid_request", "message": problem, "line": number})
            else:
                batch.lines.append(problem)
        if not raw_lines:
            errors.append({"code": "empty_file", "message": "the input file has no requests"})
        batch.errors = errors or None

    @staticmethod
    def _line_problem(raw: bytes, endpoint: str, seen: set[str]) -> dict[str, Any] | str:
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return "not valid JSON"
        if not isinstance(line, dict):
            return "a line must be a JSON object"
        cid = line.get("custom_id")
        if not isinstance(cid, str) or not cid:
            return "custom_id is missing"
        if cid in seen:
            return f"duplicate custom_id {cid!r}"
        seen.add(cid)
        if line.get("method") != "POST":
            return "method must be POST"
        if line.get("url") != endpoint:
            return f"url {line.get('url')!r} does not match the batch's endpoint {endpoint!r}"
        body = line.get("body")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return "body must be an object with a model"
        return line

    async def _list(self, request: web.Request) -> web.Response:
        """The most recent batches first, at most ``limit`` (no paging: the fake holds few)."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            limit = max(1, min(100, int(request.query.get("limit", "20"))))
        except ValueError:
            return _error(400, "limit must be an integer")
        recent = [self._object(b) for b in reversed(self.submitted)][:limit]
        body = {"object": "list", "data": recent, "has_more": len(self.submitted) > limit}
        return web.Response(body=orjson.dumps(body), content_type=_JSON)

    async def _retrieve(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, f"No such Batch object: {request.match_info['id']}")
        batch.polls += 1
        batch.ticks += 1
        self._advance(batch)
        return web.Response(body=orjson.dumps(self._object(batch)), content_type=_JSON)

    async def _cancel(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, f"No such Batch object: {request.match_info['id']}")
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return _error(409, f"cannot cancel a batch that is {batch.status}")
        batch.cancelled = True
        batch.status = "cancelling"
        batch.stamps["cancelling_at"] = int(self._now(batch))
        return web.Response(body=orjson.dumps(self._object(batch)), content_type=_JSON)

    # the state machine ----------------------------------------------------------------------------
    def _advance(self, batch: SubmittedBatch) -> None:
        """Move ``batch`` to where the clock says it is; finishing writes its files once."""
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return
        now = self._now(batch)
        t = now - batch.created
        tl = self.timeline
        if batch.cancelled:
            self._finish(batch, "cancelled", batch.counts["completed"], "batch_cancelled")
            return
        if t < tl.validating:
            return
        if batch.errors is not None or batch.fault == "failed":
            if batch.errors is None:
                batch.errors = [dict(self.failure)]
            batch.status = "failed"
            batch.stamps["failed_at"] = int(now)
            return
        batch.stamps.setdefault("in_progress_at", int(batch.created + tl.validating))
        total = len(batch.lines)
        share = min(1.0, (t - tl.validating) / tl.in_progress) if tl.in_progress > 0 else 1.0
        if batch.fault == "expire":
            share = min(share, 0.5)  # stalls half way, until the window closes
            if t >= tl.window:
                self._finish(batch, "expired", math.floor(total * share), "batch_expired")
                return
        if share < 1.0:
            batch.status = "in_progress"
            batch.counts["completed"] = math.floor(total * share)
            return
        if t < tl.validating + tl.in_progress + tl.finalizing:
            batch.status = "finalizing"
            batch.counts["completed"] = total
            batch.stamps.setdefault("finalizing_at", int(now))
            return
        self._finish(batch, "completed", total, "")

    def _finish(self, batch: SubmittedBatch, status: str, done: int, undone_code: str) -> None:
        """Answer the first ``done`` lines (input order); the rest carry ``undone_code``."""
        outputs: list[bytes] = []
        out_ids: list[str] = []
        errors: list[bytes] = []
        err_ids: list[str] = []
        for i, line in enumerate(batch.lines):
            cid = line["custom_id"]
            if i >= done:
                message = _UNDONE[undone_code]
                errors.append(self._line(cid, None, {"code": undone_code, "message": message}))
                err_ids.append(cid)
                continue
            status_code, answer = self._answer(cid, line["body"])
            (outputs if status_code == 200 else errors).append(
                self._line(
                    cid, {"status_code": status_code, "request_id": f"req-{cid}", "body": answer}, None
                )
            )
            (out_ids if status_code == 200 else err_ids).append(cid)
        batch.counts = {"total": len(batch.lines), "completed": len(outputs), "failed": len(errors)}
        if outputs:
            batch.output_file_id = self._store_file(_shuffled(outputs, out_ids), "batch_output")
        if errors:
            batch.error_file_id = self._store_file(_shuffled(errors, err_ids), "batch_output")
        batch.status = status
        batch.stamps[f"{status}_at"] = int(self._now(batch))

    def _answer(self, cid: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A line's status and body: the responder's completion, or the fault's error."""
        server = self._server
        assert server is not None
        digest = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        seen = self._seen.get(digest, 0)
        self._seen[digest] = seen + 1
        status = self.line_faults(cid, body, seen) if self.line_faults is not None else None
        if status is not None:
            return status, {"error": {"message": f"injected fault: HTTP {status}", "type": "server_error"}}
        reply = server._reply(body)
        if isinstance(reply, web.Response):  # the responder raised
            return 500, {"error": {"message": "the responder failed", "type": "server_error"}}
        return 200, orjson.loads(server._payload(body, reply))

    def _line(self, cid: str, response: dict[str, Any] | None, error: dict[str, Any] | None) -> bytes:
        return orjson.dumps(
            {"id": self._next_id("batch_req"), "custom_id": cid, "response": response, "error": error}
        )

    def _store_file(self, lines: list[bytes], purpose: str) -> str:
        file_id = self._next_id("file")
        self.files[file_id] = (purpose, f"{file_id}.jsonl", b"".join(line + b"\n" for line in lines))
        return file_id

    def _object(self, batch: SubmittedBatch) -> dict[str, Any]:
        stamps = batch.stamps
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "errors": None
            if batch.errors is None or batch.status != "failed"
            else {"object": "list", "data": batch.errors},
            "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window,
            "status": batch.status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": stamps.get("created_at"),
            "in_progress_at": stamps.get("in_progress_at"),
            "expires_at": int(batch.created + self.timeline.window),
            "finalizing_at": stamps.get("finalizing_at"),
            "completed_at": stamps.get("completed_at"),
            "failed_at": stamps.get("failed_at"),
            "expired_at": stamps.get("expired_at"),
            "cancelling_at": stamps.get("cancelling_at"),
            "cancelled_at": stamps.get("cancelled_at"),
            "request_counts": dict(batch.counts),
            "metadata": None,
        }
