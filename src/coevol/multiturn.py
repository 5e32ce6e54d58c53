"""Refine one dataset example: every chosen assistant turn in order, each with the loop.

Turn t sees the already-refined turns before it. The result carries the refined turns, the
trace record and the preference pairs; it is plain data the runner stores and writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from coevol.conversation import ConversationSettings, refinable_turns, window_sample
from coevol.domain import Example, Turn
from coevol.errors import ContextLengthError
from coevol.io.formats import with_input
from coevol.llm.types import Generate, Usage
from coevol.loop import LoopSettings, Refinement, refine
from coevol.prompts.templates import PromptSet

__all__ = ["ExampleOutcome", "Status", "fingerprint", "refine_example", "sample_key"]

Status = Literal["refined", "kept", "failed", "rejected"]


@dataclass(slots=True)
class ExampleOutcome:
    """What became of one example. ``turns`` are the refined turns (originals where unchanged)."""

    status: Status
    turns: list[Turn]
    trace: dict[str, Any]
    pairs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    error_type: str | None = None
    accepted_rounds: int = 0
    usage: dict[str, Usage] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        """What the store keeps to replay this outcome without any model call."""
        return {
            "status": self.status,
            "turns": [[t.role, t.content, t.input] for t in self.turns],
            "trace": self.trace,
            "pairs": self.pairs,
            "error": self.error,
            "error_type": self.error_type,
            "accepted_rounds": self.accepted_rounds,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ExampleOutcome:
        return cls(
            status=payload["status"],
            turns=[Turn(r, c, i) for r, c, i in payload["turns"]],
            trace=payload["trace"],
            pairs=payload["pairs"],
            error=payload["error"],
            error_type=payload["error_type"],
            accepted_rounds=payload["accepted_rounds"],
        )


def fingerprint(parts: Sequence[Any]) -> str:
    """A stable hash of everything that changes a result (prompts, routes, settings)."""
    return hashlib.sha256(orjson.dumps(list(parts), option=orjson.OPT_SORT_KEYS)).hexdigest()


def sample_key(example: Example, run_fingerprint: str) -> str:
    """Resume key: the row's content under this run's settings (not its position)."""
    row = orjson.dumps(example.raw, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(row + run_fingerprint.encode()).hexdigest()


def _prompt_messages(turns: Sequence[Turn], t: int) -> list[dict[str, str]]:
    """The conversation before turn ``t`` as chat messages (TRL's conversational prompt).

    An alpaca input is folded into its user message as ``--output-format`` does (after a newline,
    placeholders such as ``<noinput>`` dropped), so the pairs match the converted SFT data.
    """
    return [{"role": turn.role, "content": with_input(turn)} for turn in turns[:t]]


async def refine_example(
    example: Example,
    generate: Generate,
    prompts: PromptSet,
    settings: LoopSettings,
    conversation: ConversationSettings,
) -> ExampleOutcome:
    """Refine the chosen assistant turns of ``example`` in order; a failure stops the example."""
    turns = [Turn(t.role, t.content, t.input) for t in example.turns]
    turn_traces: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    usage: dict[str, Usage] = {}
    accepted = 0
    failure: Refinement | None = None
    for t in refinable_turns(turns, conversation):
        sample = window_sample(prompts, turns, t, conversation.window_rounds)
        result = await refine(sample, generate, prompts, settings)
        for role, u in result.usage().items():
            usage.setdefault(role, Usage()).add(u)
        turn_traces.append(
            {
                "turn": t,
                "accepted_rounds": result.accepted_rounds,
                "stop_reason": result.stop_reason,
                "error": result.error,
                "iterations": [it.to_dict() for it in result.iterations],
            }
        )
        if result.failed:
            failure = result
            break
        if settings.mode == "full":
            for it in result.iterations:
                if it.accepted and it.edited is not None and it.judgment is not None:
                    pairs.append(
                        {
                            "prompt": _prompt_messages(turns, t),
                            "chosen": [{"role": "assistant", "content": it.edited}],
                            "rejected": [{"role": "assistant", "content": it.previous}],
                            "judge": [o.to_dict() for o in it.judgment.orders],
                        }
                    )
        accepted += result.accepted_rounds
        turns[t] = Turn(turns[t].role, result.response, turns[t].input)

    status: Status
    if failure is not None:
        rejected = failure.error_type == ContextLengthError.__name__
        status = "rejected" if rejected else "failed"
        turns = [Turn(t.role, t.content, t.input) for t in example.turns]  # keep the original row
        pairs = []
    else:
        status = "refined" if accepted else "kept"
    trace: dict[str, Any] = {
        "index": example.index,
        "line": example.line,
        "status": status,
        "accepted_rounds": accepted,
        "turns": turn_traces,
        "usage": {role: u.to_dict() for role, u in usage.items()},
    }
    if "id" in example.raw:
        trace["id"] = example.raw["id"]
    if failure is not None:
        trace["error"] = failure.error
        trace["error_type"] = failure.error_type
    return ExampleOutcome(
        status,
        turns,
        trace,
        pairs,
        failure.error if failure else None,
        failure.error_type if failure else None,
        accepted,
        usage,
    )
