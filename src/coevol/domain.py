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
  ``advisor``, the ``editor``, the ``judge`` (``COEVOL_ROLES``), and the tree search's ``critic``
  and ``refiner`` (``TREE_ROLES``). Config keys and trace keys are the role's value.
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
``coevol show``, the run summary, the report, the Ray merge and the store's replay. It is declared
once, by the records' field annotations below (validated by pydantic). ``SCHEMA`` names the
version written, ``READABLE_SCHEMAS`` the versions read; a line of another version is refused with
``TraceSchemaError``, never guessed at.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    Strict,
    TypeAdapter,
    ValidationError,
    WrapSerializer,
)

from coevol import errors
from coevol.errors import CoevolError, TraceSchemaError

__all__ = [
    "COEVOL_ROLES",
    "MAX_ROUNDS",
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
    "DigitProbs",
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
    "TokenLogprob",
    "TraceRecord",
    "TreeNodeTrace",
    "TreeTrace",
    "Turn",
    "TurnTrace",
    "Usage",
    "check_schema",
    "describe_invalid",
]

SCHEMA = "coevol.trace/3"
"""The trace format version written. Version 1 (coevol 0.1) had no ``schema`` field; version 3 adds
the tree strategy's record (``TurnTrace.tree``) and its stop reasons, and the ``--judge prob``
fields (``JudgeOrderTrace.probs``, ``JudgeTrace.margin``)."""

READABLE_SCHEMAS = ("coevol.trace/2", SCHEMA)
"""The versions a reader accepts: a version 2 line (coevol 0.2) reads as a turn without a tree."""

# the trace's field types -----------------------------------------------------------------------
# The trace and the stored outcome are declared once, below: the dataclasses are the in-memory
# records the loop fills in, and their field annotations are the validated JSON schema. pydantic
# reads the annotations (``TypeAdapter``), so a hand-edited or hostile line is refused as a whole
# (``TraceSchemaError``) rather than failing later wherever the field is used. Scalars are strict
# (a count is an integer, never "4" or true); a field with a default may be left out of a line.
# A new optional field: add it with a default and, to leave lines without it byte-identical,
# ``IfSet[...]`` (left out of the JSON while it is None).
MAX_ROUNDS = 1000
"""The most accepted edits one turn can record (``--max-rounds`` stops there too)."""

Text = Annotated[str, Strict()]
Int = Annotated[int, Strict()]
Count = Annotated[int, Strict(), Field(ge=0)]
Score = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Flag = Annotated[bool, Strict()]
_T = TypeVar("_T")
IfSet = Annotated[_T | None, Field(exclude_if=lambda value: value is None)]
"""A field written only when it has a value (``None`` leaves the key out), so a field added to the
schema keeps the bytes of the lines that do not use it."""


def _sorted_by_role(value: dict[str, Any], handler: SerializerFunctionWrapHandler) -> Any:
    """Usage sorted by role, so a trace does not depend on which of two concurrent calls finished
    first."""
    return handler(dict(sorted(value.items())))


def _scores_in(value: Any) -> Any:
    if value is None or isinstance(value, tuple):
        return value
    if isinstance(value, dict) and value.keys() >= {"previous", "edited"}:
        return (value["previous"], value["edited"])
    raise ValueError("scores must be an object with 'previous' and 'edited'")


def _scores_out(value: tuple[float, float] | None) -> dict[str, float] | None:
    return None if value is None else {"previous": value[0], "edited": value[1]}


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(cls: type[Any]) -> TypeAdapter[Any]:
    """The codec of a record type, built once (pydantic reads the dataclass's annotations)."""
    found = _ADAPTERS.get(cls)
    if found is None:
        found = _ADAPTERS[cls] = TypeAdapter(cls)
    return found


class _Encodes:
    """A record that writes itself as the trace does (``to_dict``); no state of its own."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """This record as its part of a trace line holds it (plain JSON values)."""
        result: dict[str, Any] = _adapter(type(self)).dump_python(self, mode="json", by_alias=True)
        return result


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
class Usage(_Encodes):
    """Token counts; summed per role for the progress display and the trace."""

    prompt_tokens: Count = 0
    completion_tokens: Count = 0
    calls: Count = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.calls += other.calls


@dataclass(frozen=True, slots=True)
class Choice:
    """One of several choices of a completion asked with ``n`` > 1."""

    text: str
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token with its log-probability and the most likely alternatives at that step
    (``top``: ``(token, logprob)`` pairs as the server listed them)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Completion:
    """A model's answer. ``cached`` is true when it was replayed from the store, not sent.

    ``text`` and ``finish_reason`` are the first choice; ``more`` holds the others when the request
    asked for ``n`` > 1 and the server gave them (a server may give fewer than asked).
    ``logprobs`` is the answer's tokens when the request asked for them and the server returned
    them; ``None`` otherwise (a server that ignores the field gives ``None``, never an empty guess).
    """

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    cached: bool = False
    more: tuple[Choice, ...] = ()
    logprobs: tuple[TokenLogprob, ...] | None = None

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

    role: Text
    content: Text
    input: Text = ""
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


class Status(StrEnum):
    """What became of a row (see the glossary)."""

    REFINED = "refined"
    KEPT = "kept"
    FAILED = "failed"
    REJECTED = "rejected"


class StopReason(StrEnum):
    """Why the loop stopped for one assistant turn."""

    TURNED_DOWN = "rejected"  # the edit did not score higher than the previous response (Eq. 4)
    REJECTED = "rejected"  # 0.2's name: an alias of TURNED_DOWN, kept so code written against 0.2 runs
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


# outcomes --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Answer(_Encodes):
    """One model answer as the trace keeps it: the text and why generation stopped."""

    text: Text
    finish_reason: Text | None = None

    @property
    def truncated(self) -> bool:
        """The server cut the answer off at ``max_tokens`` (OpenAI and llama.cpp say "length")."""
        return self.finish_reason == "length"


@dataclass(frozen=True, slots=True)
class Failure(_Encodes):
    """A failure kept with its type: ``type`` is the name of a ``coevol.errors`` class."""

    type: Text
    message: Text

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


@dataclass(frozen=True, slots=True)
class DebateTrace(_Encodes):
    """G_dbt: the four arguments in the paper's order (Eq. 5-8)."""

    positive_stage1: Answer
    critical_stage1: Answer
    positive_stage2: Answer
    critical_stage2: Answer


@dataclass(frozen=True, slots=True)
class DigitProbs(_Encodes):
    """``--judge prob``, one order: the judge's confidence read at its position digit.

    ``token`` is the first generated token of the verdict line whose text, stripped, is "1" or "2"
    (``None``: there was none, e.g. ``<equal>``); ``p1``/``p2`` are the probabilities of "1" and "2"
    at that token (0 when absent from its alternatives), ``top`` its raw ``(token, logprob)``
    alternatives as the server sent them, ``line`` the verdict line the judge wrote.
    """

    token: Text | None
    p1: Score
    p2: Score
    top: tuple[tuple[Text, Score], ...] = ()
    line: Text = ""

    @property
    def position1(self) -> float:
        """P(position 1) = p1 / (p1 + p2); 0.5 when no digit was generated (no preference read)."""
        total = self.p1 + self.p2
        return 0.5 if self.token is None or total <= 0 else self.p1 / total


@dataclass(slots=True)
class JudgeOrderTrace(_Encodes):
    """One order: every attempt's answer and the parsed result.

    ``scores`` are (previous, edited) for this order whatever the presentation, so readers never
    have to undo the swap (written as ``{"previous": .., "edited": ..}``); ``verdict`` is the
    parsed text as the judge wrote it (position terms).
    """

    order: Annotated[str, Strict(), Field(pattern=r"^(forward|reverse)$")]
    attempts: list[Answer] = field(default_factory=list)
    verdict: Text | None = None
    scores: Annotated[
        tuple[Score, Score] | None, BeforeValidator(_scores_in), PlainSerializer(_scores_out)
    ] = None
    error: Text | None = None
    probs: IfSet[DigitProbs] = None  # --judge prob only: what was read at the position digit


@dataclass(slots=True)
class JudgeTrace(_Encodes):
    """Both orders and the Eq. 4 averages; no averages when a verdict stayed unparseable.

    ``--judge prob``: ``score_edited`` is the mean over both orders of the probability that the
    edit is preferred (``score_previous`` its complement) and ``margin`` is set; the edit is
    accepted when that mean is strictly above 0.5 + ``margin``.
    """

    orders: list[JudgeOrderTrace]
    score_previous: Score | None = None
    score_edited: Score | None = None
    skipped_reverse: Flag = False
    margin: IfSet[Score] = None

    @property
    def decided(self) -> bool:
        """Every order asked gave a usable verdict, so Eq. 4 has its averages."""
        return self.score_previous is not None and self.score_edited is not None

    @property
    def accept(self) -> bool:
        """Eq. 4: the edit wins only when its average is strictly higher (prob: above 0.5 + margin)."""
        if self.score_previous is None or self.score_edited is None:
            return False
        if self.margin is not None:
            return self.score_edited > 0.5 + self.margin
        return self.score_edited > self.score_previous

    @property
    def prob_mean(self) -> float | None:
        """``--judge prob``: the mean probability that the edit is preferred; None otherwise."""
        return self.score_edited if self.margin is not None else None


UsageByRole = Annotated[dict[Text, Usage], WrapSerializer(_sorted_by_role)]


@dataclass(slots=True)
class IterationTrace(_Encodes):
    """One iteration: ``previous`` is the response it started from; ``edit`` the editor's raw answer,
    ``edited`` the response it proposes (header stripped)."""

    iteration: Count
    previous: Text
    debate: DebateTrace | None = None
    suggestions: Answer | None = None
    edit: Answer | None = None
    edited: Text | None = None
    judge: JudgeTrace | None = None
    accepted: Flag = False
    usage: UsageByRole = field(default_factory=dict)


@dataclass(slots=True)
class TurnTrace(_Encodes):
    """One refined assistant turn, readable on its own: what the agents saw, before, after, how."""

    turn: Count
    instruction: Text  # for a conversation: the visible history and the current user turn
    input: Text
    original: Text
    final: Text  # the response written out for this turn (the original when the row is not refined)
    accepted_edits: Annotated[int, Strict(), Field(ge=0, le=MAX_ROUNDS, alias="accepted_rounds")]
    stop_reason: StopReason
    iterations: list[IterationTrace] = field(default_factory=list)
    failure: Failure | None = None  # the call that stopped the loop (an error or the context limit)
    tree: IfSet[TreeTrace] = None  # the tree strategy's search (schema 3); None for the CoEvol loop

    def all_iterations(self) -> Iterator[IterationTrace]:
        """The loop's iterations, then those of each tree node a CoEvol expansion made (node order):
        every debate, advice and edit of the turn, for readers that count them (Fig. 3)."""
        yield from self.iterations
        if self.tree is not None:
            yield from (n.iteration for n in self.tree.nodes if n.iteration is not None)

    def judgments(self) -> Iterator[JudgeTrace]:
        """Every both-orders judgment of the turn: the loop's, and a tree's pairwise values (each
        judged child against the original), for the judge audit."""
        for it in self.all_iterations():
            if it.judge is not None:
                yield it.judge
        if self.tree is not None:
            yield from (n.judge for n in self.tree.nodes if n.judge is not None)


@dataclass(frozen=True, slots=True)
class CritiqueTrace(_Encodes):
    """One sampled critique of a tree node: the answer, its label (None: no label), which draw it
    belongs to (0, then re-draws after a tie), its choice index in an ``n`` request (0 for a
    request of its own) and the request's seed."""

    answer: Answer
    label: Flag | None
    draw: Count
    choice: Count
    seed: Int | None


@dataclass(slots=True)
class TreeNodeTrace(_Encodes):
    """One node of a tree search; node 0 is the original response (the root).

    ``refine`` holds each refiner try's raw answer (its reflection, then the output between the
    markers) with ``seeds`` its requests' seeds; ``iteration`` the CoEvol expansion's debate,
    suggestions and edit instead. ``critiques`` and ``shown`` (the critique the refiner is given
    for this node's children) come from the critic; ``judge`` from the pairwise value. A child
    whose response equals an earlier node's is ``same_as`` it and valued there once. ``dropped``
    says why a child left the search (no usable output, a tied critic); ``kept`` marks the nodes
    a level kept for expansion.
    """

    id: Count
    parent: Count | None
    depth: Count
    response: Text | None = None
    refine: list[Answer] = field(default_factory=list)
    seeds: list[Int] = field(default_factory=list)
    iteration: IterationTrace | None = None
    critiques: list[CritiqueTrace] = field(default_factory=list)
    draws: Count = 0
    shown: Count | None = None
    judge: JudgeTrace | None = None
    value: Score | None = None
    same_as: Count | None = None
    dropped: Text | None = None
    kept: Flag = False


@dataclass(slots=True)
class TreeTrace(_Encodes):
    """A tree search over one turn: its settings, every node in creation order, the node found
    (``result``: the passing node, else the highest value, ties to the later node) and the
    ``path`` of node ids from the root to it, and the tokens each role spent."""

    settings: dict[Text, Any]
    nodes: list[TreeNodeTrace] = field(default_factory=list)
    result: Count | None = None
    path: list[Count] = field(default_factory=list)
    usage: UsageByRole = field(default_factory=dict)

    @property
    def depth_reached(self) -> int:
        """The deepest level that holds a valued node."""
        return max((n.depth for n in self.nodes if n.value is not None), default=0)


@dataclass(frozen=True, slots=True)
class RoleRoute(_Encodes):
    """Which model and endpoint served a role (the endpoint never carries a secret)."""

    model: Text
    endpoint: Text


@dataclass(slots=True)
class TraceRecord(_Encodes):
    """One line of the trace file: what became of one example and why.

    ``schema`` is the first key of the line, so tools can tell a trace line by its first bytes.
    """

    schema: Text = field(default=SCHEMA, kw_only=True)
    index: Count
    line: Count
    status: Status
    accepted_edits: Annotated[int, Strict(), Field(ge=0, alias="accepted_rounds")]
    turns: list[TurnTrace] = field(default_factory=list)
    usage: UsageByRole = field(default_factory=dict)
    failure: Failure | None = None
    roles: dict[Text, RoleRoute] = field(default_factory=dict)
    id: IfSet[Any] = None  # the row's own ``id`` field, when it has one

    def to_json(self) -> bytes:
        """The trace line, without its newline (what ``to_dict`` holds, encoded faster)."""
        return _adapter(TraceRecord).dump_json(self, by_alias=True)

    @classmethod
    def from_dict(cls, d: Any) -> TraceRecord:
        """Parse one trace line; a line of a version this coevol does not read is refused, never
        guessed at, and so is a line any of whose fields is malformed."""
        check_schema(d)
        try:
            record: TraceRecord = _adapter(TraceRecord).validate_python(d)
        except ValidationError as exc:
            raise TraceSchemaError(f"malformed trace record: {describe_invalid(exc)}") from None
        record.schema = SCHEMA  # every readable version reads as this one (a /2 line has no tree)
        return record


def check_schema(d: Any) -> None:
    """Refuse what is not a trace record of a version this coevol reads (``READABLE_SCHEMAS``)."""
    if not isinstance(d, dict):
        raise TraceSchemaError("not a trace record (expected a JSON object per line)")
    schema = d.get("schema")
    if schema not in READABLE_SCHEMAS:
        found = "no schema field (a coevol 0.1 trace)" if schema is None else f"schema {schema!r}"
        raise TraceSchemaError(
            f"this trace has {found}; this coevol reads {' and '.join(map(repr, READABLE_SCHEMAS))}. "
            "Rerun the same refine command to rewrite it (finished calls are replayed from the store)."
        )


def describe_invalid(exc: ValidationError) -> str:
    """The first problem of a refused record, by where it is (never the value: it may be huge or
    hostile)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "(the record)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"
