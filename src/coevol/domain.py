"""The records every layer shares, and the words the code uses for them. Pure data, no I/O.

This is the bottom of the package: it imports nothing from coevol but ``errors``, so every layer
above (prompts, roles, the loop, the model clients, the engine) can share these types.

Glossary (one word per thing, everywhere in the code and the docs; the JSON keys written to
files keep their 0.2 spelling, noted below where it differs):

- **row**: one record of the user's dataset file, exactly as read (``Example.raw``).
- **example**: a row that parsed (``Example``): its turns plus the untouched row. A row that did
  not parse is a ``BadRow`` and goes to the rejects file.
- **turn**: one message of an example (``Turn``). An Alpaca row is a user turn and an assistant
  turn; a conversation has many. Only assistant turns are refined.
- **role**: one of the agents (``Role``): the debaters ``positive`` and ``critical``, the
  ``advisor``, the ``editor``, the ``judge``. Config keys and trace keys are the role's value.
- **sample**: what the agents see when refining one assistant turn (``coevol.prompts.render.Sample``):
  an instruction (with the visible history for a conversation), an optional input, a response.
- **iteration**: one pass of Algorithm 1's loop over a sample: debate, advise, edit, judge.
  At most ``max_rounds`` (K) iterations *accept* an edit.
- **edit**: the editor's proposed response in an iteration. An edit is **accepted** when the judge
  scores it strictly higher (Eq. 4) and **turned down** when it does not
  (``StopReason.TURNED_DOWN``, written ``"rejected"`` in the trace). ``accepted_edits`` counts the
  accepted edits of a turn or an example (written ``"accepted_rounds"`` in the trace).
- **debate stage**: stage 1 (fixed positions, Eq. 5-6) or stage 2 (free cross-evaluation, Eq. 7-8)
  of an iteration's debate.
- **order**: one of the judge's two presentations, ``forward`` (previous response first) or
  ``reverse``.
- **attempt**: one call for the same prompt; a judge answer that does not parse is asked again,
  each re-ask a new attempt.
- **status**: what became of a row: ``refined`` (at least one edit accepted), ``kept`` (no edit
  accepted), ``failed`` (a call failed; the row is written unchanged) or ``rejected`` (the row
  could not be refined at all and is listed in the rejects file). "Rejected" names this row
  status only; an edit the judge did not prefer is *turned down*.
- **usage**: token counts and calls, summed per role (``Usage``).

The trace (one ``TraceRecord`` per example, a JSON line each) is the schema every reader uses:
``coevol show``, the run summary, the report and the store's replay. ``SCHEMA`` names its
version; a reader given another version refuses it with ``TraceSchemaError``.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from coevol import errors
from coevol.errors import CoevolError, TraceSchemaError

__all__ = [
    "COEVOL_ROLES",
    "NO_INPUT_PLACEHOLDERS",
    "READABLE_SCHEMAS",
    "SCHEMA",
    "TREE_ROLES",
    "Answer",
    "BadRow",
    "Choice",
    "Completion",
    "CritiqueTrace",
    "DebateTrace",
    "Example",
    "Failure",
    "Generate",
    "IterationTrace",
    "JudgeOrderTrace",
    "JudgeTrace",
    "Message",
    "Role",
    "RoleRoute",
    "Status",
    "StopReason",
    "TraceRecord",
    "TreeNodeTrace",
    "TreeTrace",
    "Turn",
    "TurnTrace",
    "Usage",
]

SCHEMA = "coevol.trace/3"
"""The trace format version written. Version 1 (coevol 0.1) had no ``schema`` field; version 3 adds
the tree strategy's record (``TurnTrace.tree``) and its stop reasons."""

READABLE_SCHEMAS = ("coevol.trace/2", SCHEMA)
"""The versions a reader accepts: a version 2 line (coevol 0.2) reads as a turn without a tree."""


class Role(StrEnum):
    """Every agent a strategy calls. A new role is one line here (and one in its strategy's group
    below); config keys, the trace's usage and route keys and the names roles pass to ``generate``
    are these values."""

    POSITIVE = "positive"
    CRITICAL = "critical"
    ADVISOR = "advisor"
    EDITOR = "editor"
    JUDGE = "judge"
    CRITIC = "critic"
    REFINER = "refiner"


COEVOL_ROLES: tuple[Role, ...] = (Role.POSITIVE, Role.CRITICAL, Role.ADVISOR, Role.EDITOR, Role.JUDGE)
"""Algorithm 1's five agents, in the order an iteration first calls them."""

TREE_ROLES: tuple[Role, ...] = (Role.CRITIC, Role.REFINER)
"""The tree search's own agents (SPaR's critic and refiner)."""


# calls -----------------------------------------------------------------------------------------
Message = dict[str, str]
"""One chat message, ``{"role": "system"|"user"|"assistant", "content": "..."}``."""


@dataclass(slots=True)
class Usage:
    """Token counts; summed per role for the progress display and the trace."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.calls += other.calls

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "calls": self.calls,
        }


@dataclass(frozen=True, slots=True)
class Choice:
    """One of several choices of a completion asked with ``n`` > 1."""

    text: str
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """A model's answer. ``cached`` is true when it was replayed from the store, not sent.

    ``text`` and ``finish_reason`` are the first choice; ``more`` holds the others when the request
    asked for ``n`` > 1 and the server gave them (a server may give fewer than asked).
    """

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    cached: bool = False
    more: tuple[Choice, ...] = ()

    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens, 1)

    def choices(self) -> tuple[Choice, ...]:
        """Every choice, the first one first."""
        return (Choice(self.text, self.finish_reason), *self.more)


class Generate(Protocol):
    """What an agent role receives: ``await generate(role, messages)``.

    Which model, endpoint and parameters serve ``role`` -- and caching, retries, rate limits
    and concurrency -- are the engine's business, never the role's. ``attempt`` > 0 marks a
    deliberate re-ask of the same prompt, so a cache does not hand back the same answer. ``seed``
    (when given) replaces the role's seed for this call and ``n`` asks for several choices (the tree
    strategy's sampled critiques and distinct children); both are part of the request, so of its
    cache key.
    """

    def __call__(
        self,
        role: str,
        messages: Sequence[Message],
        *,
        attempt: int = 0,
        seed: int | None = None,
        n: int = 1,
    ) -> Awaitable[Completion]: ...


# dataset side ----------------------------------------------------------------------------------
@dataclass(slots=True)
class Turn:
    """One message. ``role`` is "system", "user", "assistant", or any other role kept verbatim."""

    role: str
    content: str
    input: str = ""
    """Alpaca only: the ``input`` field that goes with the instruction (kept apart for the prompt layer)."""


@dataclass(slots=True)
class Example:
    """A row that parsed.

    ``index`` is the 0-based position among the rows read in this run (bad rows count), so results
    that finish out of order are written back in input order; ``line`` is the 1-based line (JSONL),
    element (JSON array) or row (Parquet, datasets) number for messages.
    """

    index: int
    line: int
    fmt: str
    turns: list[Turn]
    raw: dict[str, Any]


NO_INPUT_PLACEHOLDERS = frozenset({"", "<noinput>", "<no input>", "<none>", "none", "n/a", "null"})
"""Inputs that mean "no input" in public SFT data: the prompt uses the template without input,
and an output format folds no input into the instruction."""


@dataclass(slots=True)
class BadRow:
    """A row that cannot be refined; ``raw`` is its text so the rejects file can be fixed and re-run."""

    line: int
    error: str
    raw: str


# outcomes --------------------------------------------------------------------------------------
# Readers of a trace line check each field's type, so a hand-edited or hostile line is refused as
# a whole (``TraceSchemaError``) rather than failing later wherever the field is used.
def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, found {builtins.type(value).__name__}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, found {builtins.type(value).__name__}")
    return value


def _opt_num(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"expected a number, found {builtins.type(value).__name__}")
    return float(value)


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, found {builtins.type(value).__name__}")
    return value


def _order(value: Any) -> str:
    if value not in ("forward", "reverse"):
        raise ValueError(f"order must be 'forward' or 'reverse', found {value!r}")
    return str(value)


class Status(StrEnum):
    """What became of a row (see the glossary)."""

    REFINED = "refined"
    KEPT = "kept"
    FAILED = "failed"
    REJECTED = "rejected"


class StopReason(StrEnum):
    """Why the loop stopped for one assistant turn."""

    TURNED_DOWN = "rejected"  # the edit did not score higher than the previous response (Eq. 4)
    MAX_ROUNDS = "max_rounds"  # K edits accepted
    JUDGE_UNPARSEABLE = "judge_unparseable"  # no usable verdict after every re-ask
    EDIT_UNUSABLE = "edit_unusable"  # the editor's answer was empty or cut off: never judged
    UNCHANGED = "unchanged"  # the edit equals the previous response: it cannot win, never judged
    CONTEXT_LENGTH = "context_length"  # the prompt outgrew the model's context after accepted edits
    ERROR = "error"  # a call failed
    SINGLE_PASS = "single_pass"  # an ablation mode: one pass, no judge
    ROOT_PASSES = "root_passes"  # tree: the critic already passes the original; nothing refined
    TREE_PASS = "tree_pass"  # tree: a node's value passed the gate; it is written
    TREE_NO_PASS = "tree_no_pass"  # tree: no node passed the gate; the original is kept
    ROOT_UNDECIDED = "root_undecided"  # tree: the critic's votes on the original stayed tied


@dataclass(frozen=True, slots=True)
class Answer:
    """One model answer as the trace keeps it: the text and why generation stopped."""

    text: str
    finish_reason: str | None = None

    @property
    def truncated(self) -> bool:
        """The server cut the answer off at ``max_tokens`` (OpenAI and llama.cpp say "length")."""
        return self.finish_reason == "length"

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "finish_reason": self.finish_reason}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Answer:
        return cls(_str(d["text"]), _opt_str(d.get("finish_reason")))


@dataclass(frozen=True, slots=True)
class Failure:
    """A failure kept with its type: ``type`` is the name of a ``coevol.errors`` class."""

    type: str
    message: str

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        return cls(type(exc).__name__, str(exc))

    @property
    def error_class(self) -> builtins.type[CoevolError]:
        """The class itself, so callers test ``issubclass`` rather than compare strings."""
        found = getattr(errors, self.type, None)
        if isinstance(found, type) and issubclass(found, CoevolError):
            return found
        return CoevolError

    def is_a(self, kind: builtins.type[CoevolError]) -> bool:
        return issubclass(self.error_class, kind)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Failure | None:
        return None if d is None else cls(_str(d["type"]), _str(d["message"]))


@dataclass(frozen=True, slots=True)
class DebateTrace:
    """G_dbt: the four arguments in the paper's order (Eq. 5-8)."""

    positive_stage1: Answer
    critical_stage1: Answer
    positive_stage2: Answer
    critical_stage2: Answer

    def to_dict(self) -> dict[str, Any]:
        return {
            "positive_stage1": self.positive_stage1.to_dict(),
            "critical_stage1": self.critical_stage1.to_dict(),
            "positive_stage2": self.positive_stage2.to_dict(),
            "critical_stage2": self.critical_stage2.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DebateTrace | None:
        if d is None:
            return None
        return cls(*(Answer.from_dict(d[k]) for k in _DEBATE_KEYS))


_DEBATE_KEYS = ("positive_stage1", "critical_stage1", "positive_stage2", "critical_stage2")


@dataclass(slots=True)
class JudgeOrderTrace:
    """One order: every attempt's answer and the parsed result.

    ``scores`` are (previous, edited) for this order whatever the presentation, so readers never
    have to undo the swap; ``verdict`` is the parsed text as the judge wrote it (position terms).
    """

    order: str  # "forward" | "reverse"
    attempts: list[Answer] = field(default_factory=list)
    verdict: str | None = None
    scores: tuple[float, float] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "order": self.order,
            "attempts": [a.to_dict() for a in self.attempts],
            "verdict": self.verdict,
            "scores": None if self.scores is None else {"previous": self.scores[0], "edited": self.scores[1]},
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JudgeOrderTrace:
        s = d.get("scores")
        return cls(
            _order(d["order"]),
            [Answer.from_dict(a) for a in _list(d["attempts"])],
            _opt_str(d.get("verdict")),
            None if s is None else (float(s["previous"]), float(s["edited"])),
            _opt_str(d.get("error")),
        )


@dataclass(slots=True)
class JudgeTrace:
    """Both orders and the Eq. 4 averages; no averages when a verdict stayed unparseable."""

    orders: list[JudgeOrderTrace]
    score_previous: float | None = None
    score_edited: float | None = None
    skipped_reverse: bool = False

    @property
    def decided(self) -> bool:
        """Every order asked gave a usable verdict, so Eq. 4 has its averages."""
        return self.score_previous is not None and self.score_edited is not None

    @property
    def accept(self) -> bool:
        """Eq. 4: the edit wins only when its average is strictly higher."""
        return (
            self.score_previous is not None
            and self.score_edited is not None
            and self.score_edited > self.score_previous
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "orders": [o.to_dict() for o in self.orders],
            "score_previous": self.score_previous,
            "score_edited": self.score_edited,
            "skipped_reverse": self.skipped_reverse,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> JudgeTrace | None:
        if d is None:
            return None
        return cls(
            [JudgeOrderTrace.from_dict(o) for o in _list(d["orders"])],
            _opt_num(d.get("score_previous")),
            _opt_num(d.get("score_edited")),
            bool(d.get("skipped_reverse", False)),
        )


def _usage_to_dict(usage: dict[str, Usage]) -> dict[str, Any]:
    """Sorted by role, so a trace does not depend on which of two concurrent calls finished first."""
    return {role: usage[role].to_dict() for role in sorted(usage)}


def _usage_from_dict(d: dict[str, Any] | None) -> dict[str, Usage]:
    return {role: Usage(**u) for role, u in (d or {}).items()}


@dataclass(slots=True)
class IterationTrace:
    """One iteration: ``previous`` is the response it started from; ``edit`` the editor's raw answer,
    ``edited`` the response it proposes (header stripped)."""

    iteration: int
    previous: str
    debate: DebateTrace | None = None
    suggestions: Answer | None = None
    edit: Answer | None = None
    edited: str | None = None
    judge: JudgeTrace | None = None
    accepted: bool = False
    usage: dict[str, Usage] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "previous": self.previous,
            "debate": None if self.debate is None else self.debate.to_dict(),
            "suggestions": None if self.suggestions is None else self.suggestions.to_dict(),
            "edit": None if self.edit is None else self.edit.to_dict(),
            "edited": self.edited,
            "judge": None if self.judge is None else self.judge.to_dict(),
            "accepted": self.accepted,
            "usage": _usage_to_dict(self.usage),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IterationTrace:
        return cls(
            iteration=_int(d["iteration"]),
            previous=_str(d["previous"]),
            debate=DebateTrace.from_dict(d.get("debate")),
            suggestions=None if d.get("suggestions") is None else Answer.from_dict(d["suggestions"]),
            edit=None if d.get("edit") is None else Answer.from_dict(d["edit"]),
            edited=_opt_str(d.get("edited")),
            judge=JudgeTrace.from_dict(d.get("judge")),
            accepted=bool(d["accepted"]),
            usage=_usage_from_dict(d.get("usage")),
        )


@dataclass(slots=True)
class TurnTrace:
    """One refined assistant turn, readable on its own: what the agents saw, before, after, how."""

    turn: int
    instruction: str  # for a conversation: the visible history and the current user turn
    input: str
    original: str
    final: str  # the response written out for this turn (the original when the row is not refined)
    accepted_edits: int  # edits the loop accepted for this turn
    stop_reason: StopReason
    iterations: list[IterationTrace] = field(default_factory=list)
    failure: Failure | None = None  # the call that stopped the loop (an error or the context limit)
    tree: TreeTrace | None = None  # the tree strategy's search (schema 3); None for the CoEvol loop

    def to_dict(self) -> dict[str, Any]:
        out = {
            "turn": self.turn,
            "instruction": self.instruction,
            "input": self.input,
            "original": self.original,
            "final": self.final,
            "accepted_rounds": self.accepted_edits,
            "stop_reason": self.stop_reason.value,
            "iterations": [it.to_dict() for it in self.iterations],
            "failure": None if self.failure is None else self.failure.to_dict(),
        }
        if self.tree is not None:
            out["tree"] = self.tree.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TurnTrace:
        return cls(
            turn=_int(d["turn"]),
            instruction=_str(d["instruction"]),
            input=_str(d["input"]),
            original=_str(d["original"]),
            final=_str(d["final"]),
            accepted_edits=_int(d["accepted_rounds"]),
            stop_reason=StopReason(d["stop_reason"]),
            iterations=[IterationTrace.from_dict(it) for it in _list(d["iterations"])],
            failure=Failure.from_dict(d.get("failure")),
            tree=None if d.get("tree") is None else TreeTrace.from_dict(d["tree"]),
        )


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _opt_bool(value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"expected true, false or null, found {builtins.type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class CritiqueTrace:
    """One sampled critique of a tree node: the answer, its label (None: no label), which draw it
    belongs to (0, then re-draws after a tie), its choice index in an ``n`` request (0 for a
    request of its own) and the request's seed."""

    answer: Answer
    label: bool | None
    draw: int
    choice: int
    seed: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer.to_dict(),
            "label": self.label,
            "draw": self.draw,
            "choice": self.choice,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CritiqueTrace:
        return cls(
            Answer.from_dict(d["answer"]),
            _opt_bool(d.get("label")),
            _int(d["draw"]),
            _int(d["choice"]),
            _opt_int(d.get("seed")),
        )


@dataclass(slots=True)
class TreeNodeTrace:
    """One node of a tree search; node 0 is the original response (the root).

    ``refine`` holds each refiner try's raw answer (its reflection, then the output between the
    markers) with ``seeds`` its requests' seeds; ``iteration`` the CoEvol expansion's debate,
    suggestions and edit instead. ``critiques`` and ``shown`` (the critique the refiner is given
    for this node's children) come from the critic; ``judge`` from the pairwise value. A child
    whose response equals an earlier node's is ``same_as`` it and valued there once. ``dropped``
    says why a child left the search (no usable output, a tied critic); ``kept`` marks the nodes
    a level kept for expansion.
    """

    id: int
    parent: int | None
    depth: int
    response: str | None = None
    refine: list[Answer] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    iteration: IterationTrace | None = None
    critiques: list[CritiqueTrace] = field(default_factory=list)
    draws: int = 0
    shown: int | None = None
    judge: JudgeTrace | None = None
    value: float | None = None
    same_as: int | None = None
    dropped: str | None = None
    kept: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent": self.parent,
            "depth": self.depth,
            "response": self.response,
            "refine": [a.to_dict() for a in self.refine],
            "seeds": list(self.seeds),
            "iteration": None if self.iteration is None else self.iteration.to_dict(),
            "critiques": [c.to_dict() for c in self.critiques],
            "draws": self.draws,
            "shown": self.shown,
            "judge": None if self.judge is None else self.judge.to_dict(),
            "value": self.value,
            "same_as": self.same_as,
            "dropped": self.dropped,
            "kept": self.kept,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TreeNodeTrace:
        return cls(
            id=_int(d["id"]),
            parent=_opt_int(d.get("parent")),
            depth=_int(d["depth"]),
            response=_opt_str(d.get("response")),
            refine=[Answer.from_dict(a) for a in _list(d.get("refine", []))],
            seeds=[_int(s) for s in _list(d.get("seeds", []))],
            iteration=None if d.get("iteration") is None else IterationTrace.from_dict(d["iteration"]),
            critiques=[CritiqueTrace.from_dict(c) for c in _list(d.get("critiques", []))],
            draws=_int(d.get("draws", 0)),
            shown=_opt_int(d.get("shown")),
            judge=JudgeTrace.from_dict(d.get("judge")),
            value=_opt_num(d.get("value")),
            same_as=_opt_int(d.get("same_as")),
            dropped=_opt_str(d.get("dropped")),
            kept=bool(d.get("kept", False)),
        )


@dataclass(slots=True)
class TreeTrace:
    """A tree search over one turn: its settings, every node in creation order, the node found
    (``result``: the passing node, else the highest value, ties to the later node) and the
    ``path`` of node ids from the root to it, and the tokens each role spent."""

    settings: dict[str, Any]
    nodes: list[TreeNodeTrace] = field(default_factory=list)
    result: int | None = None
    path: list[int] = field(default_factory=list)
    usage: dict[str, Usage] = field(default_factory=dict)

    @property
    def depth_reached(self) -> int:
        """The deepest level that holds a valued node."""
        return max((n.depth for n in self.nodes if n.value is not None), default=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": dict(self.settings),
            "nodes": [n.to_dict() for n in self.nodes],
            "result": self.result,
            "path": list(self.path),
            "usage": _usage_to_dict(self.usage),
        }

    @classmethod
    def from_dict(cls, d: Any) -> TreeTrace:
        if not isinstance(d, dict) or not isinstance(d.get("settings"), dict):
            raise TypeError("a tree record is an object with settings")
        return cls(
            settings=dict(d["settings"]),
            nodes=[TreeNodeTrace.from_dict(n) for n in _list(d["nodes"])],
            result=_opt_int(d.get("result")),
            path=[_int(i) for i in _list(d.get("path", []))],
            usage=_usage_from_dict(d.get("usage")),
        )


@dataclass(frozen=True, slots=True)
class RoleRoute:
    """Which model and endpoint served a role (the endpoint never carries a secret)."""

    model: str
    endpoint: str


@dataclass(slots=True)
class TraceRecord:
    """One line of the trace file: what became of one example and why."""

    index: int
    line: int
    status: Status
    accepted_edits: int
    turns: list[TurnTrace] = field(default_factory=list)
    usage: dict[str, Usage] = field(default_factory=dict)
    failure: Failure | None = None
    roles: dict[str, RoleRoute] = field(default_factory=dict)
    id: Any = None  # the row's own ``id`` field, when it has one
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": self.schema,
            "index": self.index,
            "line": self.line,
            "status": self.status.value,
            "accepted_rounds": self.accepted_edits,
            "turns": [t.to_dict() for t in self.turns],
            "usage": _usage_to_dict(self.usage),
            "failure": None if self.failure is None else self.failure.to_dict(),
            "roles": {r: {"model": v.model, "endpoint": v.endpoint} for r, v in self.roles.items()},
        }
        if self.id is not None:
            out["id"] = self.id
        return out

    @classmethod
    def from_dict(cls, d: Any) -> TraceRecord:
        """Parse one trace line; a line of another schema version is refused, never guessed at."""
        if not isinstance(d, dict):
            raise TraceSchemaError("not a trace record (expected a JSON object per line)")
        schema = d.get("schema")
        if schema not in READABLE_SCHEMAS:
            found = "no schema field (a coevol 0.1 trace)" if schema is None else f"schema {schema!r}"
            raise TraceSchemaError(
                f"this trace has {found}; this coevol reads {' and '.join(map(repr, READABLE_SCHEMAS))}. "
                "Rerun the same refine command to rewrite it (finished calls are replayed from the store)."
            )
        try:
            return cls(
                index=_int(d["index"]),
                line=_int(d["line"]),
                status=Status(d["status"]),
                accepted_edits=_int(d["accepted_rounds"]),
                turns=[TurnTrace.from_dict(t) for t in _list(d["turns"])],
                usage=_usage_from_dict(d.get("usage")),
                failure=Failure.from_dict(d.get("failure")),
                roles={
                    _str(r): RoleRoute(_str(v["model"]), _str(v["endpoint"]))
                    for r, v in (d.get("roles") or {}).items()
                },
                id=d.get("id"),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise TraceSchemaError(f"malformed trace record: {type(exc).__name__}: {exc}") from None
