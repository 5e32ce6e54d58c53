"""Test doubles for coevol and for code built on it; none of it is used by a real run.

- ``coevol.testing.faults``: the deterministic fault model (``Fault``, ``FaultKind``, policies).
- ``coevol.testing.server``: ``FakeOpenAIServer``, a real OpenAI-compatible HTTP peer on loopback
  that models slots and latency, injects faults and records every request with its headers;
  ``ThreadedServer`` runs one on a background thread.
- ``coevol.testing.batches``: ``FakeBatches``, the server's Files and Batches endpoints (status
  sequence on a clock the test controls, lines answered out of order, failed and expired lines, a
  batch that fails whole), answered by the same responder as chat.
- ``coevol.testing.cli``: ``python -m coevol.testing`` runs that server in its own process
  (``serve_in_subprocess``, ``fetch_stats``, ``reset_stats``).
- ``coevol.testing.fakes``: in-process fakes, no sockets: ``ScriptedGenerate``, ``Recorder``,
  ``ResponderGenerate`` (``Generate``), ``ScriptedBackend`` and ``ResponderBackend`` (``Backend``).
- ``coevol.testing.responders``: ``CoEvolResponder``, which answers the five agents predictably
  (over HTTP as a server responder, in-process through ``as_generate()``); ``PositionBiasedJudge``,
  a judge that always writes ``<assistant 2>`` but whose logprobs know better (``--judge prob``).
- ``coevol.testing.tree``: ``TreeResponder``, the tree strategy's critic (votes known per
  response, with or without honouring ``n``) and refiner, falling back to ``CoEvolResponder``.
"""

from coevol.testing.batches import (
    BatchFault,
    BatchTimeline,
    FakeBatches,
    LineFault,
    ManualClock,
    SubmittedBatch,
)
from coevol.testing.cli import fetch_stats, reset_stats, serve_in_subprocess
from coevol.testing.fakes import (
    Answer,
    BackendScript,
    Call,
    GenerateScript,
    Recorder,
    ResponderBackend,
    ResponderGenerate,
    ScriptedBackend,
    ScriptedGenerate,
    ScriptExhausted,
    SentRequest,
    fault_error,
    to_completion,
)
from coevol.testing.faults import (
    HOSTILE_TEXT,
    Fault,
    FaultKind,
    FaultPolicy,
    always,
    body_digest,
    canonical_body,
    first_attempt_faults,
    mentioning,
)
from coevol.testing.responders import (
    EDIT_MARK,
    CoEvolResponder,
    GarbleFirstJudge,
    PositionBiasedJudge,
    accept_up_to,
    digit_logprobs,
    hashed_policy,
    identify_role,
)
from coevol.testing.server import (
    FakeOpenAIServer,
    RecordedRequest,
    Reply,
    Responder,
    ThreadedServer,
    echo_responder,
    token_logprobs,
    word_count,
)

__all__ = [
    "EDIT_MARK",
    "HOSTILE_TEXT",
    "Answer",
    "BackendScript",
    "BatchFault",
    "BatchTimeline",
    "Call",
    "CoEvolResponder",
    "FakeBatches",
    "FakeOpenAIServer",
    "Fault",
    "FaultKind",
    "FaultPolicy",
    "GarbleFirstJudge",
    "GenerateScript",
    "LineFault",
    "ManualClock",
    "PositionBiasedJudge",
    "RecordedRequest",
    "Recorder",
    "Reply",
    "Responder",
    "ResponderBackend",
    "ResponderGenerate",
    "ScriptExhausted",
    "ScriptedBackend",
    "ScriptedGenerate",
    "SentRequest",
    "SubmittedBatch",
    "ThreadedServer",
    "accept_up_to",
    "always",
    "body_digest",
    "canonical_body",
    "digit_logprobs",
    "echo_responder",
    "fault_error",
    "fetch_stats",
    "first_attempt_faults",
    "hashed_policy",
    "identify_role",
    "mentioning",
    "reset_stats",
    "serve_in_subprocess",
    "to_completion",
    "token_logprobs",
    "word_count",
]
