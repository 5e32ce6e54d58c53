"""``coevol show``: the trace of a sample as a person reads it.

For each sample: the instruction (with the visible conversation history) and input, the original
and the final response and a word diff between them, then every iteration -- both debate stages,
the suggestions, the edit, both judge orders with the last attempt's raw answer and its parsed
verdict, the decision -- and why the loop stopped. Texts the server cut off at ``max_tokens`` are
marked in their panel's title.

Everything read from the file came from a dataset or a model: it goes through
``coevol.textsafe.inert`` and is printed as plain ``rich.text.Text``, never parsed as markup, so
escape sequences and console markup in it show as inert text. The file is read by the one trace
reader (``coevol.io.tracefile``); a file that is missing, a folder, not a regular file, not a
trace or of another schema is refused with one line (``TraceError``, a ``CoevolError``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.text import Text

from coevol.domain import (
    Answer,
    IterationTrace,
    JudgeOrderTrace,
    JudgeTrace,
    StopReason,
    TraceRecord,
    TurnTrace,
)
from coevol.errors import TraceError
from coevol.io import tracefile
from coevol.io.tracefile import Problem, Unreadable
from coevol.textdiff import word_diff
from coevol.textsafe import inert, inert_line
from coevol.tree.view import tree_lines

__all__ = ["read_trace", "render_record", "show_trace"]

CUT_OFF = " (cut off: max_tokens reached)"

STOP_REASONS: dict[StopReason, str] = {
    StopReason.TURNED_DOWN: "the edit did not score higher than the previous response (Eq. 4)",
    StopReason.MAX_ROUNDS: "the most accepted edits (K) reached",
    StopReason.JUDGE_UNPARSEABLE: "no usable judge verdict after every re-ask",
    StopReason.EDIT_UNUSABLE: "the editor's answer was empty or cut off, never judged",
    StopReason.UNCHANGED: "the edit equals the previous response, never judged",
    StopReason.CONTEXT_LENGTH: "the prompt outgrew the model's context; the last accepted response stays",
    StopReason.ERROR: "a call failed; the row is written unchanged",
    StopReason.SINGLE_PASS: "one pass of an ablation mode, no judge",
    StopReason.ROOT_PASSES: "the critic already passes the original; nothing refined",
    StopReason.TREE_PASS: "a node's value passed the gate; it is written",
    StopReason.TREE_NO_PASS: "no node passed the gate; the original stays",
    StopReason.ROOT_UNDECIDED: "the critic's votes on the original stayed tied; the original stays",
}


def _t(text: object, style: str = "") -> Text:
    """Data as inert plain text (never markup)."""
    return Text(inert(text if isinstance(text, str) else str(text)), style=style)


def _title(*parts: object) -> Text:
    return Text(inert_line("".join(p if isinstance(p, str) else str(p) for p in parts)))


def _panel(title: Text, body: str | None, style: str = "") -> Panel:
    return Panel(
        _t(body if body is not None else "(none)"), title=title, title_align="left", border_style=style
    )


def _answer_panel(title: str, answer: Answer | None, style: str) -> Panel:
    cut = CUT_OFF if answer is not None and answer.truncated else ""
    return _panel(_title(title, cut), None if answer is None else answer.text, style)


def _diff(original: str, final: str) -> Text:
    """The word diff original -> final; ``[-deleted-]`` and ``{+inserted+}`` read on a pipe too."""
    out = Text()
    for op in word_diff(original, final):
        if op.kind == "equal":
            out.append(inert(op.text))
        elif op.kind == "delete":
            out.append("[-" + inert(op.text) + "-]", style="red strike")
        else:
            out.append("{+" + inert(op.text) + "+}", style="green underline")
    return out


def _probs_text(order: JudgeOrderTrace) -> str:
    """``--judge prob``: what was read at the position digit (shown above the raw answer)."""
    p = order.probs
    assert p is not None
    if p.token is None:
        return "no position digit on the verdict line: P(position 1) = 0.5"
    alts = ", ".join(f"{t!r} {lp:.2f}" for t, lp in p.top) or "none"
    return (
        f"p('1')={p.p1:.3f} p('2')={p.p2:.3f} at token {p.token!r}: P(position 1)={p.position1:.3f}\n"
        f"top_logprobs: {alts}"
    )


def _order_panel(order: JudgeOrderTrace) -> Panel:
    which = "previous first" if order.order == "forward" else "edited first"
    last = order.attempts[-1] if order.attempts else None
    body = None if last is None else last.text
    if order.probs is not None and order.scores is not None:
        result = f"{order.verdict} -> P(edited preferred)={order.scores[1]:.3f}"
        body = f"{_probs_text(order)}\n---\n{body or ''}"
    elif order.scores is not None:
        result = f"{order.verdict} -> s(previous)={order.scores[0]:g} s(edited)={order.scores[1]:g}"
    else:
        result = f"unparseable after {len(order.attempts)} attempt(s): {order.error}"
    attempt = f", attempt {len(order.attempts)}" if len(order.attempts) > 1 else ""
    cut = CUT_OFF if last is not None and last.truncated else ""
    return _panel(_title(f"judge ({which}{attempt}): ", result, cut), body, "magenta")


def _decision(judge: JudgeTrace, accepted: bool) -> Text:
    if not judge.decided:
        return Text("no usable verdict: kept the previous response", style="bold yellow")
    verdict = "ACCEPTED" if accepted else "kept the previous response"
    skipped = " (reverse order skipped: it could not change the outcome)" if judge.skipped_reverse else ""
    if judge.prob_mean is not None and judge.margin is not None:
        return Text(
            f"mean P(edited preferred) over both orders {judge.prob_mean:.3f}, needs more than "
            f"{0.5 + judge.margin:.3f} -> {verdict}{skipped}",
            style="bold green" if accepted else "bold yellow",
        )
    return Text(
        f"average: previous {judge.score_previous:g} vs edited {judge.score_edited:g} -> {verdict}{skipped}",
        style="bold green" if accepted else "bold yellow",
    )


def _unjudged(it: IterationTrace, stop: StopReason) -> Text | None:
    """Why the last iteration's edit was never judged, when the guard before the judge stopped it."""
    if it.judge is not None or it.accepted or it.edit is None:
        return None
    if stop is StopReason.UNCHANGED:
        why = "the edit equals the previous response"
    elif stop is StopReason.EDIT_UNUSABLE:
        why = "the edit was cut off at max_tokens" if it.edit.truncated else "the edit was empty"
    else:
        return None
    return Text(f"{why}: not judged, the previous response stays", style="bold yellow")


def _iteration(it: IterationTrace, stop: StopReason) -> Iterator[Any]:
    yield Text(f"iteration {it.iteration}", style="bold")
    if it.debate is not None:
        yield _answer_panel("positive debater, stage 1", it.debate.positive_stage1, "green")
        yield _answer_panel("critical debater, stage 1", it.debate.critical_stage1, "red")
        yield _answer_panel("positive debater, stage 2", it.debate.positive_stage2, "green")
        yield _answer_panel("critical debater, stage 2", it.debate.critical_stage2, "red")
    if it.suggestions is not None:
        yield _answer_panel("advisor: suggestions", it.suggestions, "yellow")
    if it.edit is not None:
        cut = CUT_OFF if it.edit.truncated else ""
        yield _panel(_title("editor: edited response", cut), it.edited, "blue")
    if it.judge is not None:
        for order in it.judge.orders:
            yield _order_panel(order)
        yield _decision(it.judge, it.accepted)
    unjudged = _unjudged(it, stop)
    if unjudged is not None:
        yield unjudged


def _turn(turn: TurnTrace) -> Iterator[Any]:
    yield Text(f"assistant turn {turn.turn}", style="bold cyan")
    title = "instruction, with the conversation the agents saw" if turn.turn > 1 else "instruction"
    yield _panel(_title(title), turn.instruction)
    if turn.input:
        yield _panel(_title("input"), turn.input)
    yield _panel(_title("original response"), turn.original, "white")
    same = turn.final == turn.original
    yield _panel(_title("final response", " (unchanged)" if same else ""), turn.final, "bold green")
    if not same:
        yield Panel(_diff(turn.original, turn.final), title=_title("changes (word diff)"), title_align="left")
    for it in turn.iterations:
        yield from _iteration(it, turn.stop_reason)
    if turn.tree is not None:
        yield _t("\n".join(tree_lines(turn.tree)))
    yield _stopped(turn)


def _stopped(turn: TurnTrace) -> Text:
    why = STOP_REASONS.get(turn.stop_reason, str(turn.stop_reason))
    text = Text(f"stopped: {turn.stop_reason.value} ({why}); {turn.accepted_edits} accepted edit(s)")
    if turn.failure is not None:
        text.append(inert_line(f"\n  {turn.failure.type}: {turn.failure.message}"), style="red")
    text.stylize("bold cyan")
    return text


def render_record(record: TraceRecord) -> Iterable[Any]:
    """Renderables for one trace record, in reading order."""
    head = f"row {record.index} (line {record.line})"
    if record.id is not None:
        head += f" id={inert_line(str(record.id))}"
    yield Text(f"{head}: {record.status.value}, {record.accepted_edits} accepted edit(s)", style="bold")
    if record.failure is not None:
        yield Text(inert_line(f"failure: {record.failure.type}: {record.failure.message}"), style="red")
    for role, route in record.roles.items():
        yield Text(inert_line(f"{role}: {route.model} @ {route.endpoint}"), style="dim")
    for turn in record.turns:
        yield Group(*_turn(turn))


def _where(path: Path) -> str:
    return inert_line(str(path))


_HINTS = {
    Problem.NOT_JSON: "is not JSON: not a trace file (the trace is OUT.trace.jsonl)",
    Problem.NOT_RECORD: (
        "is not a trace record: not a trace file (the trace is OUT.trace.jsonl, not the output)"
    ),
}


def read_trace(path: Path) -> Iterator[TraceRecord]:
    """The records of a trace file, one per non-blank line; anything else raises ``TraceError``."""
    for item in tracefile.read_trace(path):
        if isinstance(item, Unreadable):
            hint = _HINTS.get(item.problem)
            raise TraceError(
                f"{_where(path)} line {item.number} {hint}" if hint else f"{_where(path)} {item.message}"
            )
        yield item


def show_trace(
    path: Path, *, indices: Sequence[int] | None = None, limit: int = 5, console: Console | None = None
) -> int:
    """Print up to ``limit`` records (those with the given indices, when any); returns how many.

    An index that is not in the file is reported once all the others are printed.
    """
    console = console or Console()
    wanted = None if indices is None else set(indices)
    shown = 0
    found: set[int] = set()
    for record in read_trace(path):
        if wanted is not None and record.index not in wanted:
            continue
        found.add(record.index)
        for renderable in render_record(record):
            console.print(renderable)
        shown += 1
        if shown >= limit:
            break
    missing = sorted((wanted or set()) - found)
    if missing and shown < limit:
        raise TraceError(f"no row with index {', '.join(map(str, missing))} in {_where(path)}")
    return shown
