"""Refine one dataset example: every chosen assistant turn in order, each with the loop.

Turn t sees the already-refined turns before it. The result carries the refined turns, the typed
trace record and the preference pairs; it is plain data the runner stores and writes.

What a failure does to the example (issue 7: never write a worse response, never lose a row):

- a call fails (``StopReason.ERROR``): the example is ``failed`` and written unchanged;
- the prompt outgrows the model's context (``ContextLengthError``) after at least one accepted
  edit in the example: the example is ``refined``; the turns refined so far keep their last
  accepted response, the turn that hit the limit and every later turn stay as they were;
- the same before any accepted edit: the example is ``rejected`` (written unchanged and listed
  in the rejects file by the runner).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from pydantic import BeforeValidator, PlainSerializer, TypeAdapter, ValidationError

from coevol.conversation import ConversationSettings, refinable_turns, window_sample
from coevol.domain import (
    SCHEMA,
    Example,
    Failure,
    Generate,
    RoleRoute,
    Status,
    StopReason,
    TraceRecord,
    Turn,
    TurnTrace,
    Usage,
    check_schema,
    describe_invalid,
)
from coevol.errors import TraceSchemaError
from coevol.io.formats import with_input
from coevol.loop import LoopSettings, Refinement, refine
from coevol.prompts.templates import PromptSet
from coevol.tree.search import tree_refine

__all__ = ["ExampleOutcome", "fingerprint", "refine_example"]


def _turns_in(value: Any) -> Any:
    """A stored turn is ``[role, content, input]``."""
    if not isinstance(value, list) or not all(isinstance(t, list | tuple) and len(t) == 3 for t in value):
        raise ValueError("turns must be a list of [role, content, input]")
    return [{"role": r, "content": c, "input": i} for r, c, i in value]


def _turns_out(turns: list[Turn]) -> list[list[str]]:
    return [[t.role, t.content, t.input] for t in turns]


@dataclass(slots=True)
class ExampleOutcome:
    """What became of one example: the typed trace ``record``, the ``turns`` to write (originals
    where unchanged, every turn original unless the status is refined) and the preference pairs.

    ``status``, ``failure``, ``accepted_edits`` and ``usage`` are read from ``record``, so there
    is one source of truth, and the store's replay is exactly the trace's schema. The fields'
    annotations are the stored payload's schema (``to_payload`` / ``from_payload``).
    """

    record: TraceRecord
    turns: Annotated[list[Turn], BeforeValidator(_turns_in), PlainSerializer(_turns_out)]
    pairs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> Status:
        return self.record.status

    @property
    def failure(self) -> Failure | None:
        return self.record.failure

    @property
    def accepted_edits(self) -> int:
        return self.record.accepted_edits

    @property
    def usage(self) -> dict[str, Usage]:
        return self.record.usage

    def to_payload(self) -> dict[str, Any]:
        """What the store keeps to replay this outcome without any model call."""
        payload: dict[str, Any] = _OUTCOME.dump_python(self, mode="json", by_alias=True)
        return payload

    def to_payload_json(self) -> bytes:
        """``to_payload`` encoded, the same bytes ``jsonrow.dumps`` writes, in a third of the time."""
        return _OUTCOME.dump_json(self, by_alias=True)

    @classmethod
    def from_payload(cls, payload: Any) -> ExampleOutcome:
        """The stored outcome; one of another schema raises ``TraceSchemaError`` (never guessed)."""
        if not isinstance(payload, dict) or not isinstance(payload.get("record"), dict):
            raise TraceSchemaError(f"stored outcome is not of the {SCHEMA!r} schema")
        check_schema(payload["record"])
        try:
            outcome = _OUTCOME.validate_python(payload)
        except ValidationError as exc:
            raise TraceSchemaError(f"malformed stored outcome: {describe_invalid(exc)}") from None
        outcome.record.schema = SCHEMA  # as ``TraceRecord.from_dict`` reads it
        return outcome


_OUTCOME: TypeAdapter[ExampleOutcome] = TypeAdapter(ExampleOutcome)


def fingerprint(parts: Sequence[Any]) -> str:
    """A stable hash of everything that changes a result (prompts, routes, settings)."""
    return hashlib.sha256(orjson.dumps(list(parts), option=orjson.OPT_SORT_KEYS)).hexdigest()


def _prompt_messages(turns: Sequence[Turn], t: int) -> list[dict[str, str]]:
    """The conversation before turn ``t`` as chat messages (TRL's conversational prompt).

    An alpaca input is folded into its user message as ``--output-format`` does (after a newline,
    placeholders such as ``<noinput>`` dropped), so the pairs match the converted SFT data.
    """
    return [{"role": turn.role, "content": with_input(turn)} for turn in turns[:t]]


def _pairs(turns: Sequence[Turn], t: int, result: Refinement) -> list[dict[str, Any]]:
    """One preference record per accepted edit of turn ``t`` (TRL's conversational DPO shape)."""
    return [
        {
            "prompt": _prompt_messages(turns, t),
            "chosen": [{"role": "assistant", "content": it.edited}],
            "rejected": [{"role": "assistant", "content": it.previous}],
            "judge": [o.to_dict() for o in it.judge.orders],
        }
        for it in result.iterations
        if it.accepted and it.edited is not None and it.judge is not None
    ]


def _tree_pairs(turns: Sequence[Turn], t: int, result: Refinement) -> list[dict[str, Any]]:
    """The tree's pair for turn ``t`` when a node passed: chosen = found, rejected = original."""
    tree = result.tree
    if tree is None or result.stop_reason is not StopReason.TREE_PASS or tree.result is None:
        return []
    found = tree.nodes[tree.result]
    return [
        {
            "prompt": _prompt_messages(turns, t),
            "chosen": [{"role": "assistant", "content": result.response}],
            "rejected": [{"role": "assistant", "content": turns[t].content}],
            "tree": {"node": found.id, "depth": found.depth, "value": found.value},
        }
    ]


def _status(failure: Refinement | None, accepted: int) -> Status:
    if failure is None:
        return Status.REFINED if accepted else Status.KEPT
    if failure.stop_reason is StopReason.CONTEXT_LENGTH:
        return Status.REFINED if accepted else Status.REJECTED
    return Status.FAILED


async def refine_example(
    example: Example,
    generate: Generate,
    prompts: PromptSet,
    settings: LoopSettings,
    conversation: ConversationSettings,
    *,
    roles: Mapping[str, RoleRoute] | None = None,
) -> ExampleOutcome:
    """Refine the chosen assistant turns of ``example`` in order; a failure stops the example.

    ``roles`` (which model and endpoint served each role) is recorded in the trace as given.
    """
    turns = [Turn(t.role, t.content, t.input) for t in example.turns]
    traces: list[TurnTrace] = []
    pairs: list[dict[str, Any]] = []
    usage: dict[str, Usage] = {}
    accepted = 0
    stopped: Refinement | None = None  # the refinement that ended the example early
    for t in refinable_turns(turns, conversation):
        sample = window_sample(prompts, turns, t, conversation.window_rounds)
        if settings.tree is not None:
            result = await tree_refine(sample, generate, prompts, settings)
        else:
            result = await refine(sample, generate, prompts, settings)
        for role, u in result.usage().items():
            usage.setdefault(role, Usage()).add(u)
        traces.append(result.turn_trace(t, sample))
        if result.failed:
            stopped = result
            break
        if settings.tree is not None:
            pairs += _tree_pairs(turns, t, result)
        elif settings.mode == "full":
            pairs += _pairs(turns, t, result)
        accepted += result.accepted_edits
        turns[t] = Turn(turns[t].role, result.response, turns[t].input)
        if result.failure is not None:  # the context limit: keep what was accepted, go no further
            stopped = result
            break

    status = _status(stopped, accepted)
    if status is not Status.REFINED and stopped is not None:  # failed or rejected: the row as it was
        turns = [Turn(t.role, t.content, t.input) for t in example.turns]
        pairs, accepted = [], 0
        for trace in traces:
            trace.final = trace.original
    record = TraceRecord(
        index=example.index,
        line=example.line,
        status=status,
        accepted_edits=accepted,
        turns=traces,
        usage=usage,
        failure=None if status is Status.REFINED or stopped is None else stopped.failure,
        roles=dict(roles or {}),
        id=example.raw.get("id"),
    )
    return ExampleOutcome(record, turns, pairs)
